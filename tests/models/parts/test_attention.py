"""changecap's attention building blocks against torch's own modules."""

from __future__ import annotations

import torch

from changecap.models.parts.attention import EncoderLayer


def test_encoder_layer_is_torchs_transformer_encoder_layer() -> None:
    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoderLayer(32, 4, 64, 0.1, activation="gelu", batch_first=True).eval()
    torch.manual_seed(0)
    ours = EncoderLayer(32, 4, 64, 0.1).eval()
    # the same parameters under the same names, initialised identically from the same seed
    assert list(ref.state_dict()) == list(ours.state_dict())
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in ref.state_dict().items())
    x = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=2e-6, rtol=1e-5)
