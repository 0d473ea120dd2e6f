"""The ONNX graphs of systems built on the Transformer caption decoder, in PyTorch (no onnx needed): the step graph
is the decoder's own KV-cache step on stacked tensors, and a system's hook hands over graphs that run."""

from __future__ import annotations

import torch

from changecap.data.vocab import START_ID
from changecap.models import build_model
from changecap.models.hisem import tiny_config
from changecap.models.onnx_graphs import ENCODER_FILE, STEP_DECODER_RUNTIME, STEP_FILE, DecoderStepGraph
from changecap.models.parts.caption_decoder import CaptionDecoderConfig, TransformerCaptionDecoder


def test_the_step_graph_is_the_decoders_cached_step() -> None:
    torch.manual_seed(0)
    decoder = TransformerCaptionDecoder(CaptionDecoderConfig(dim=16, vocab_size=11, max_length=6, layers=2, heads=2))
    decoder.eval()
    memory = torch.randn(3, 5, 16)  # [B, L, D]
    cache = decoder.init_cache(memory)
    graph = DecoderStepGraph(decoder)
    keys = torch.zeros(2, 3, 2, 0, 8)  # [layers, N, H, t, Dh]
    values, valid = torch.zeros_like(keys), torch.zeros(3, 0, dtype=torch.bool)
    cross_k, cross_v = (torch.stack(t) for t in decoder.cross_keys_values(memory))
    tokens = torch.full((3,), START_ID)
    with torch.no_grad():
        for position in range(4):
            want = decoder.step(tokens, cache)  # [N, V]
            got, keys, values, valid = graph(tokens, torch.tensor([position]), keys, values, valid, cross_k, cross_v)
            assert torch.equal(got, want)
            assert torch.equal(keys, torch.stack(cache.self_keys)) and torch.equal(valid, cache.key_valid)
            tokens = want.argmax(dim=-1)


def test_a_systems_hook_hands_over_graphs_that_run() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(12, image_size=32, patch_size=8, dim=32)).eval()
    export = model.onnx_export(32, batch=2)
    assert set(export.graphs) == {ENCODER_FILE, STEP_FILE}
    assert export.meta["runtime"] == STEP_DECODER_RUNTIME and export.meta["architecture"] == "hisem"
    assert export.meta["capabilities"] == model.capabilities.names() and export.meta["max_length"] == 41
    with torch.no_grad():
        for graph in export.graphs.values():
            outputs = graph.module(*graph.example_inputs)
            assert len(outputs) == len(graph.output_names)
        images = export.graphs[ENCODER_FILE].example_inputs[0]
        prob, _, _ = export.graphs[ENCODER_FILE].module(images)
        _, want = model.caption(images, max_length=2)  # the router's probability, dense routing or not
        assert torch.allclose(prob, want, atol=1e-6)
