"""The model contract (``models/contract.py``): decoding options checked against the declared capabilities, the
three caption shapes normalised into one ``Prediction``, outputs held to the declaration, and every registered
architecture declaring what its models give."""

from __future__ import annotations

import pytest
import torch

from changecap.data.vocab import Vocabulary
from changecap.errors import ModelError
from changecap.models import architecture_names, get_architecture
from changecap.models.contract import (
    Capabilities,
    ChangeModel,
    Decoding,
    RawPrediction,
    Sampling,
    normalise,
)

VOCAB = Vocabulary.build([["a", "house", "is", "built"]], threshold=0)
CAPTIONS = Capabilities(captions=True, beam_search=True)


class Fixed(ChangeModel):
    """A model whose ``infer`` returns a given RawPrediction, declaring the given capabilities."""

    def __init__(self, raw: RawPrediction, capabilities: Capabilities) -> None:
        super().__init__()
        self.raw, self._capabilities, self.seen = raw, capabilities, []
        self.vocab = VOCAB

    @property
    def architecture(self) -> str:
        return "fixed"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def image_size(self) -> int:
        return 8

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        self.seen.append(decoding)
        return self.raw


def _images(b: int = 2) -> torch.Tensor:
    return torch.zeros(b, 2, 3, 8, 8)


def test_token_lists_strings_and_none_become_one_prediction() -> None:
    house = [VOCAB.id(w) for w in ("a", "house", "is", "built")]
    ids = Fixed(RawPrediction(captions=[[2, *house, 3], [2, 3]]), CAPTIONS).predict(_images())
    text = Fixed(RawPrediction(captions=["a house is built", ""]), CAPTIONS).predict(_images())
    assert ids.texts == text.texts == ["a house is built", ""]
    assert ids.tokens == text.tokens == [[2, *house, 3], [2, 3]]
    logits = torch.tensor([[[[1.0, -1.0]]], [[[-1.0, 2.0]]]])  # [B, 1, 1, 2]
    masks = Fixed(RawPrediction(mask_logits=logits), Capabilities(change_mask=True)).predict(_images())
    assert masks.texts is None and masks.tokens is None and masks.change_probability is None
    assert masks.mask.tolist() == [[[1, 0]], [[0, 1]]] and len(masks) == 2
    bf16 = torch.tensor([0.25, 1.0], dtype=torch.bfloat16)  # as under bf16 autocast
    prob = Fixed(RawPrediction(captions=[[2, 3]] * 2, change_probability=bf16),
                 Capabilities(captions=True, change_probability=True)).predict(_images())  # fmt: skip
    assert prob.change_probability.dtype == torch.float32 and prob.change_probability.tolist() == [0.25, 1.0]


def test_options_reach_infer_and_unsupported_ones_are_one_line_errors() -> None:
    model = Fixed(RawPrediction(captions=[[2, 3]] * 2), CAPTIONS)
    model.predict(_images(), beam_size=3, max_length=7, length_penalty=0.5)
    assert model.seen[-1] == Decoding(beam_size=3, max_length=7, length_penalty=0.5)
    greedy = Fixed(RawPrediction(captions=[[2, 3]] * 2), Capabilities(captions=True))
    detector = Fixed(RawPrediction(mask_logits=torch.zeros(2, 1, 4, 4)), Capabilities(change_mask=True))
    cases = [
        (greedy, {"beam_size": 2}, "fixed has no beam search: beam_size must be 1, got 2"),
        (greedy, {"sampling": Sampling()}, "fixed has no sampling"),
        (model, {"beam_size": 0}, "beam_size must be >= 1"),
        (model, {"max_length": 0}, "max_length must be >= 1"),
        (model, {"length_penalty": -1.0}, "length_penalty must be a finite number >= 0"),
        (model, {"attention_maps": True}, "fixed gives no attention maps"),
        (detector, {"beam_size": 2}, "fixed writes no captions: beam search does not apply"),
        (detector, {"sampling": Sampling()}, "fixed writes no captions: sampling does not apply"),
    ]
    for m, options, message in cases:
        with pytest.raises(ModelError) as e:
            m.predict(_images(), **options)
        assert message in str(e.value) and "\n" not in str(e.value)
    assert detector.predict(_images(), beam_size=1, max_length=5).mask is not None  # nothing to decode: no error
    sampler = Fixed(RawPrediction(captions=["a"] * 2), Capabilities(captions=True, beam_search=True, sampling=True))
    with pytest.raises(ModelError, match="top_p must be in"):
        sampler.predict(_images(), sampling=Sampling(top_p=0.0))
    assert sampler.predict(_images(), sampling=Sampling(seed=3)).texts == ["a", "a"]


def test_outputs_are_held_to_the_declaration() -> None:
    with pytest.raises(TypeError, match="returned change probability but declares"):
        Fixed(RawPrediction(captions=[[2, 3]] * 2, change_probability=torch.ones(2)), CAPTIONS).predict(_images())
    with pytest.raises(TypeError, match="did not return change mask"):
        Fixed(RawPrediction(captions=[[2, 3]] * 2), Capabilities(captions=True, change_mask=True)).predict(_images())
    with pytest.raises(TypeError, match="returned 1 captions for 2 pairs"):
        normalise(RawPrediction(captions=[[2, 3]]), CAPTIONS, 2, VOCAB, "fixed")
    with pytest.raises(ModelError, match="no vocabulary"):
        normalise(RawPrediction(captions=[[2, 3]] * 2), CAPTIONS, 2, None, "fixed")


def test_a_model_without_onnx_graphs_says_so() -> None:
    with pytest.raises(ModelError, match="fixed provides no ONNX graphs") as e:
        Fixed(RawPrediction(captions=[[2, 3]]), CAPTIONS).onnx_export(8)
    assert "captions, beam_search" in str(e.value)


def test_every_registered_architecture_declares_its_capabilities() -> None:
    for name in architecture_names():
        can = get_architecture(name).capabilities
        assert isinstance(can, Capabilities) and (can.captions or can.change_mask), name
        assert not can.beam_search or can.captions, name  # beam search is a way of writing captions
    assert Capabilities(captions=True, onnx=True).names() == ["captions", "onnx"]


def test_attention_maps_are_given_on_request_one_row_per_word_of_a_square_grid() -> None:
    house = [VOCAB.id(w) for w in ("a", "house")]
    can = Capabilities(captions=True, attention_maps=True)
    maps = [torch.full((2, 4), 0.25, dtype=torch.float64), torch.zeros(0, 4)]
    out = Fixed(RawPrediction(captions=[[2, *house, 3], [2, 3]], attention_maps=maps), can).predict(
        _images(), attention_maps=True)  # fmt: skip
    assert [m.shape for m in out.attention_maps] == [(2, 4), (0, 4)] and out.attention_maps[0].dtype == torch.float32
    cases = [
        (RawPrediction(captions=[[2, *house, 3], [2, 3]]), True, "did not return attention maps it was asked for"),
        (RawPrediction(captions=[[2, 3]] * 2, attention_maps=[torch.zeros(0, 4)] * 2), False, "not asked for"),
        (RawPrediction(captions=[[2, *house, 3], [2, 3]], attention_maps=[torch.zeros(3, 4), torch.zeros(0, 4)]),
         True, "expected [2, g*g]"),
        (RawPrediction(captions=[[2, *house, 3], [2, 3]], attention_maps=[torch.zeros(2, 5), torch.zeros(0, 5)]),
         True, "a square grid"),
    ]  # fmt: skip
    for raw, asked, message in cases:
        with pytest.raises(TypeError, match=message.replace("[", r"\[").replace("*", r"\*")):
            Fixed(raw, can).predict(_images(), attention_maps=asked)
    detector = Fixed(RawPrediction(mask_logits=torch.zeros(2, 1, 4, 4)), Capabilities(change_mask=True))
    with pytest.raises(ModelError, match="fixed writes no captions: attention maps does not apply"):
        detector.predict(_images(), attention_maps=True)
