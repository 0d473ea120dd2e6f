"""ONNX export (``changecap export onnx``) and a pure-onnxruntime captioner (``changecap caption --backend onnx``).

Two graphs, as a thin wrapper around the PyTorch modules (nothing re-implemented):

* ``encoder.onnx`` — image pairs [B, 2, 3, S, S] → the change probability [B] (NaN for models without one) and the
  caption decoder's cross-attention keys and values of the memory, [layers, B, H, L, Dh] each (computed once per
  pair, as the PyTorch cache does);
* ``decoder_step.onnx`` — one token per row with the self-attention KV cache as inputs and outputs: ``tokens`` [N],
  ``position`` [1], ``self_keys``/``self_values`` [layers, N, H, t, Dh], ``key_valid`` [N, t], ``cross_keys``/
  ``cross_values`` → ``logits`` [N, V], the caches grown to t + 1 and ``key_valid`` [N, t + 1]. Batch, cache length
  and memory length are dynamic axes.

:class:`OnnxCaptioner` runs them with onnxruntime (the images are prepared by the PyTorch predictor's own code, so
both see the same input) and decodes greedily exactly as
``changecap.models.parts.decoding.greedy_search`` does, so its captions equal PyTorch's greedy captions. It supports
the architectures whose captions come from changecap's Transformer caption decoder (``hisem``, ``plain``, ``dfm``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from changecap.data.files import write_folder
from changecap.errors import ChangeCapError, ModelError

ENCODER_FILE, STEP_FILE, META_FILE = "encoder.onnx", "decoder_step.onnx", "onnx_config.json"
OPSET = 17


def _torch_graphs(model: Any) -> tuple[Any, Any]:
    """The two export wrappers for ``model`` (defined here so that importing this module needs no torch)."""
    import torch
    from torch import nn

    from changecap.data.vocab import NULL_ID
    from changecap.models.parts.caption_decoder import TransformerCaptionDecoder

    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, TransformerCaptionDecoder) or not (hasattr(model, "fuse") or hasattr(model, "memory")):
        arch = getattr(getattr(model, "config", None), "architecture", type(model).__name__)
        raise ModelError(f"ONNX export supports models with changecap's Transformer caption decoder (hisem, plain, "
                         f"dfm); {arch} has none")  # fmt: skip

    # trace-friendly forms of data-dependent parts (HiSem's HASD routing and MoE dispatch): same values, fixed shapes
    for module in model.modules():
        for flag in ("dense_routing", "dense_dispatch"):
            if hasattr(module, flag):
                setattr(module, flag, True)

    class EncoderGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if hasattr(self.model, "fuse"):  # HiSem / plain: backbone tokens → fusion → memory, router
                memory, router = self.model.fuse(*self.model.encode(images), None)
            else:  # DFM
                memory, router = self.model.memory(images)[0], None
            b = images.shape[0]
            prob = (router.float().softmax(dim=-1)[:, 1] if router is not None
                    else torch.full((b,), float("nan"), device=images.device))  # fmt: skip
            keys, values = zip(*(layer.cross_attn.project_kv(memory) for layer in decoder.layers), strict=True)
            return prob, torch.stack(keys), torch.stack(values)  # [B], 2 × [layers, B, H, L, Dh]

    class DecoderStepGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(
            self,
            tokens: torch.Tensor,
            position: torch.Tensor,
            self_keys: torch.Tensor,
            self_values: torch.Tensor,
            key_valid: torch.Tensor,
            cross_keys: torch.Tensor,
            cross_values: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            dec = self.decoder
            pe = dec.position_encoding.pe.index_select(0, position).transpose(0, 1)  # [1, 1, D]
            x = dec.word_embedding(tokens)[:, None, :] + pe  # [N, 1, D]
            key_valid = torch.cat([key_valid, (tokens != NULL_ID)[:, None]], dim=1)  # [N, t+1]
            mask = key_valid[:, None, None, :]  # [N, 1, 1, t+1]
            new_keys, new_values = [], []
            for i, layer in enumerate(dec.layers):
                q, k, v = layer.self_attn.project_qkv(x)  # 3 × [N, H, 1, Dh]
                keys = torch.cat([self_keys[i], k], dim=2)  # [N, H, t+1, Dh]
                values = torch.cat([self_values[i], v], dim=2)
                new_keys.append(keys)
                new_values.append(values)
                sa = layer.self_attn.attend(q, keys, values, mask)  # [N, 1, D]

                def cross(h: torch.Tensor, i: int = i, layer: Any = layer) -> torch.Tensor:
                    return layer.cross_attn.attend(layer.cross_attn.project_q(h), cross_keys[i], cross_values[i])

                x = layer._after_self_attention(x, sa, cross)  # [N, 1, D]
            logits = dec.output_proj(x[:, 0])  # [N, V]
            return logits, torch.stack(new_keys), torch.stack(new_values), key_valid

    return EncoderGraph().eval(), DecoderStepGraph().eval()


@contextlib.contextmanager
def _without_mha_fastpath() -> Iterator[None]:
    """nn.TransformerEncoderLayer's fused inference kernel (DFM's temporal extractor) has no ONNX form: trace the
    plain modules instead (the same function)."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_onnx(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], batch: int = 2) -> Path:
    """Export a saved model to ``out`` (the two graphs, ``onnx_config.json``, the vocabulary and preprocessing)."""
    import torch

    from changecap.models import PreprocessConfig, load_model

    model = load_model(model_dir, device="cpu").eval()
    pre = PreprocessConfig.load(model.model_dir, default_image_size=224)
    encoder_graph, step_graph = _torch_graphs(model)
    dec = step_graph.decoder
    cfg = dec.config
    layers, heads, dh = len(dec.layers), cfg.heads, cfg.dim // cfg.heads
    images = torch.randn(batch, 2, 3, pre.image_size, pre.image_size)
    with torch.no_grad():
        _, cross_k, cross_v = encoder_graph(images)
    step_inputs = (
        torch.tensor([2] * batch),  # <START>
        torch.tensor([0]),
        torch.zeros(layers, batch, heads, 0, dh),
        torch.zeros(layers, batch, heads, 0, dh),
        torch.zeros(batch, 0, dtype=torch.bool),
        cross_k,
        cross_v,
    )
    cache_axes = {1: "batch", 3: "length"}
    meta = {"architecture": model.config.architecture, "max_length": int(dec.max_length), "layers": layers,
            "heads": heads, "head_dim": dh, "source": str(model_dir)}  # fmt: skip

    def write(folder: Path) -> None:  # a fresh temporary folder, put in place whole (write_folder)
        with torch.no_grad(), _without_mha_fastpath():
            torch.onnx.export(encoder_graph, (images,), str(folder / ENCODER_FILE), input_names=["images"],
                              output_names=["change_probability", "cross_keys", "cross_values"],
                              dynamic_axes={"images": {0: "batch"}, "change_probability": {0: "batch"},
                                            "cross_keys": {1: "batch", 3: "memory"},
                                            "cross_values": {1: "batch", 3: "memory"}},
                              opset_version=OPSET, dynamo=False)  # fmt: skip
            torch.onnx.export(step_graph, step_inputs, str(folder / STEP_FILE),
                              input_names=["tokens", "position", "self_keys", "self_values", "key_valid", "cross_keys",
                                           "cross_values"],
                              output_names=["logits", "new_self_keys", "new_self_values", "new_key_valid"],
                              dynamic_axes={"tokens": {0: "batch"}, "self_keys": cache_axes, "self_values": cache_axes,
                                            "key_valid": {0: "batch", 1: "length"},
                                            "cross_keys": {1: "batch", 3: "memory"},
                                            "cross_values": {1: "batch", 3: "memory"}, "logits": {0: "batch"},
                                            "new_self_keys": cache_axes, "new_self_values": cache_axes,
                                            "new_key_valid": {0: "batch", 1: "length"}},
                              opset_version=OPSET, dynamo=False)  # fmt: skip
        (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        model.vocab.save(folder / "vocab.json")
        pre.save(folder)

    return write_folder(out, write)


class OnnxCaptioner:
    """Caption image pairs with an exported model folder through onnxruntime only (greedy decoding)."""

    def __init__(self, folder: str | os.PathLike[str], threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ChangeCapError("the ONNX backend needs onnxruntime: pip install 'changecap[onnx]'") from None
        from changecap.data.vocab import Vocabulary
        from changecap.models.preprocess import PreprocessConfig

        self.folder = Path(folder)
        meta_path = self.folder / META_FILE
        if not meta_path.is_file():
            raise ModelError(f"{meta_path}: missing (not a folder written by `changecap export onnx`)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), opts, providers=providers)
        self.step = ort.InferenceSession(str(self.folder / STEP_FILE), opts, providers=providers)
        self.vocab = Vocabulary.load(self.folder / "vocab.json")
        self.preprocess = PreprocessConfig.load(self.folder)
        self.predicts_masks = False

    def caption_arrays(self, images: np.ndarray, max_length: int | None = None) -> list[Any]:
        """Preprocessed pairs float32 [B, 2, 3, S, S] → :class:`~changecap.inference.predictor.CaptionResult` s."""
        from changecap.data.vocab import END_ID, START_ID
        from changecap.inference.predictor import CaptionResult

        steps = max_length or int(self.meta["max_length"])
        prob, cross_k, cross_v = self.encoder.run(None, {"images": images.astype(np.float32)})
        b = images.shape[0]
        layers, heads, dh = self.meta["layers"], self.meta["heads"], self.meta["head_dim"]
        keys = np.zeros((layers, b, heads, 0, dh), np.float32)
        values = np.zeros_like(keys)
        valid = np.zeros((b, 0), bool)
        alive = np.arange(b)
        history = np.full((b, 1), START_ID, np.int64)
        results: list[list[int] | None] = [None] * b
        token = history[:, 0]
        for pos in range(steps):  # greedy_search, step for step
            logits, keys, values, valid = self.step.run(None, {
                "tokens": token, "position": np.array([pos], np.int64), "self_keys": keys, "self_values": values,
                "key_valid": valid, "cross_keys": cross_k, "cross_values": cross_v})  # fmt: skip
            nxt = logits.argmax(axis=-1).astype(np.int64)  # [n]
            history = np.concatenate([history, nxt[:, None]], axis=1)
            done = nxt == END_ID
            if done.any():
                for row in np.flatnonzero(done):
                    results[int(alive[row])] = history[row].tolist()
                keep = np.flatnonzero(~done)
                if keep.size == 0:
                    break
                keys, values, valid = keys[:, keep], values[:, keep], valid[keep]
                cross_k, cross_v = cross_k[:, keep], cross_v[:, keep]
                alive, history, nxt = alive[keep], history[keep], nxt[keep]
            token = nxt
        for row, item in enumerate(alive.tolist()):
            if results[item] is None:
                results[item] = history[row].tolist()
        out = []
        for i, seq in enumerate(results):
            assert seq is not None
            p = None if np.isnan(prob[i]) else float(prob[i])
            out.append(CaptionResult(self.vocab.decode(seq), p, [int(t) for t in seq]))
        return out

    def caption_tensor(self, images: Any, beam_size: int = 1, max_length: int | None = None) -> list[Any]:
        """The :class:`~changecap.inference.ChangeCaptioner` interface: preprocessed pairs (a tensor) → results."""
        if beam_size != 1:
            raise ChangeCapError("the ONNX captioner decodes greedily: beam_size must be 1")
        return self.caption_arrays(np.asarray(images.detach().cpu().numpy(), np.float32), max_length)

    def __call__(self, before: Any, after: Any, *, beam_size: int = 1, batch_size: int = 16) -> Any:
        """One pair (paths, PIL images or arrays) → a CaptionResult; lists of pairs → a list."""
        from changecap.inference.predictor import prepared_chunks

        if beam_size != 1:
            raise ChangeCapError("the ONNX captioner decodes greedily: beam_size must be 1")
        single, chunks = prepared_chunks(before, after, self.preprocess, batch_size)
        results = []
        for pairs, _sizes in chunks:
            results += self.caption_arrays(pairs.numpy())
        return results[0] if single else results
