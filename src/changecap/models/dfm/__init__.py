"""DFM (``dfm.md``): a ViT, a frozen change-detection prior, joint feature modelling and a caption decoder, trained
with the text-guided gated contrastive loss :func:`tgcl_loss`.

Modules: ``config`` (every reconstructed choice as an option), ``temporal`` (the spatio-temporal extractor, a
Transformer substitute for RSCaMa's SSMs), ``prior``, ``jfm``, ``tgcl``, ``model``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from changecap.models.dfm.config import DFMConfig, tiny_training_config
from changecap.models.dfm.model import DFM, build_dfm
from changecap.models.dfm.tgcl import tgcl_loss
from changecap.models.registry import Architecture, Capabilities


def card_rows(model: nn.Module, config: Any) -> list[tuple[str, str]]:
    enc, p, j = config.encoder, config.prior, config.jfm
    prior = "none (disabled)" if not p.enabled else f"frozen change detector ({p.model_dir or 'recorded config'}), "
    prior += "" if not p.enabled else f"level {p.level} projected to the ViT grid"
    return [
        ("encoder", f"CLIP ViT {enc.pretrained or '(random init)'}, last {enc.trainable_layers} blocks trained"),
        ("temporal", f"spatio-temporal extractor, {config.temporal.layers} attention layers (reconstructed, a "
                     "Transformer substitute for RSCaMa's SSMs)"),
        ("prior", f"change-detection prior: {prior} (reconstructed)"),
        ("jfm", f"joint feature modelling: {j.difference} difference, BSA {j.bsa}, {j.weights} fusion weights "
                "(reconstructed)"),
        ("decoder", f"Transformer caption decoder, {config.decoder.layers} layer(s)"),
        ("text_proj", f"TGCL text projection {config.text_dim} → {config.decoder.dim} and learnable logit scale"),
    ]  # fmt: skip


ARCHITECTURE = Architecture(
    name="dfm",
    config_class=DFMConfig,
    build=build_dfm,
    objective="dfm",
    card_rows=card_rows,
    description="DFM: ViT + frozen change-detection prior, joint feature modelling, caption decoder, TGCL",
    tiny_config=tiny_training_config,
    capabilities=Capabilities(captions=True, beam_search=True, onnx=True, attention_maps=True),
)

__all__ = ["ARCHITECTURE", "DFM", "DFMConfig", "build_dfm", "tgcl_loss"]
