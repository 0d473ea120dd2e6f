"""ONNX export (``changecap export onnx``) and a pure-onnxruntime captioner (``changecap caption --backend onnx``).

The exporter knows no system: a model whose architecture declares the ``onnx`` capability provides its graphs
through the model contract (``ChangeModel.onnx_export``, a hook next to its model), and this module traces each
graph to its file and writes ``onnx_config.json`` (what the runtime needs: the architecture, its capabilities, the
runtime protocol), the vocabulary and the preprocessing beside them.

:class:`OnnxCaptioner` runs the ``step-decoder`` protocol (``changecap.models.onnx_graphs``: an encoder graph and
the caption decoder's KV-cache step graph) with onnxruntime; the images are prepared by the PyTorch predictor's own
code, so both see the same input, and it decodes greedily exactly as
``changecap.models.parts.decoding.greedy_search`` does, so its captions equal PyTorch's greedy captions.
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
from changecap.models.onnx_graphs import ENCODER_FILE, STEP_DECODER_RUNTIME, STEP_FILE
from changecap.models.registry import Capabilities

META_FILE = "onnx_config.json"
OPSET = 17


@contextlib.contextmanager
def _without_mha_fastpath() -> Iterator[None]:
    """nn.TransformerEncoderLayer's fused inference kernel (e.g. in DFM's temporal extractor) has no ONNX form:
    trace the plain modules instead (the same function)."""
    import torch

    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def export_onnx(model_dir: str | os.PathLike[str], out: str | os.PathLike[str], batch: int = 2) -> Path:
    """Export a saved model to ``out``: its graphs (``ChangeModel.onnx_export``), ``onnx_config.json``, the
    vocabulary and the preprocessing. A model whose architecture declares no ``onnx`` capability is a one-line
    ModelError."""
    import torch

    from changecap.models import PreprocessConfig, load_model

    model = load_model(model_dir, device="cpu").eval()
    if not model.capabilities.onnx:
        declared = ", ".join(model.capabilities.names()) or "none"
        raise ModelError(f"{model.architecture} models provide no ONNX graphs (its capabilities: {declared})")
    pre = PreprocessConfig.load(model.model_dir, default_image_size=model.image_size or 224)
    export = model.onnx_export(pre.image_size, batch)
    meta = {**export.meta, "source": str(model_dir)}

    def write(folder: Path) -> None:  # a fresh temporary folder, put in place whole (write_folder)
        with torch.no_grad(), _without_mha_fastpath():
            for name, graph in export.graphs.items():
                torch.onnx.export(graph.module, graph.example_inputs, str(folder / name),
                                  input_names=graph.input_names, output_names=graph.output_names,
                                  dynamic_axes=graph.dynamic_axes, opset_version=OPSET, dynamo=False)  # fmt: skip
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
        runtime = self.meta.get("runtime", STEP_DECODER_RUNTIME)  # folders exported before the field: that protocol
        if runtime != STEP_DECODER_RUNTIME:
            raise ModelError(f"{meta_path}: runtime {runtime!r} is not one this changecap runs "
                             f"({STEP_DECODER_RUNTIME})")  # fmt: skip
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = ort.InferenceSession(str(self.folder / ENCODER_FILE), opts, providers=providers)
        self.step = ort.InferenceSession(str(self.folder / STEP_FILE), opts, providers=providers)
        self.vocab = Vocabulary.load(self.folder / "vocab.json")
        self.preprocess = PreprocessConfig.load(self.folder)
        # what the exported graphs give: captions, and a change probability when the architecture declared one
        # (folders exported before the field: their probability is NaN, reported as None, when there is none)
        declared = self.meta.get("capabilities", ["captions", "change_probability"])
        self.capabilities = Capabilities(captions=True, change_probability="change_probability" in declared)
        self.architecture = str(self.meta.get("architecture", "unknown"))

    def caption_arrays(self, images: np.ndarray, max_length: int | None = None) -> list[Any]:
        """Preprocessed pairs float32 [B, 2, 3, S, S] → :class:`~changecap.inference.predictor.CaptionResult` s."""
        from changecap.data.vocab import END_ID, START_ID
        from changecap.inference.predictor import CaptionResult

        steps = max_length or int(self.meta["max_length"])
        if not 1 <= steps <= int(self.meta["max_length"]):
            limit = self.meta["max_length"]
            raise ModelError(f"max_length must be in [1, {limit}] (the exported decoder's positions), got {steps}")
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

    @staticmethod
    def _check_greedy(beam_size: int | None, sampling: Any) -> None:
        if beam_size not in (None, 1) or sampling is not None:
            raise ChangeCapError("the ONNX captioner decodes greedily: beam_size must be 1, without sampling")

    def caption_tensor(
        self, images: Any, beam_size: int | None = None, max_length: int | None = None, sampling: Any = None
    ) -> list[Any]:
        """The :class:`~changecap.inference.ChangeCaptioner` interface: preprocessed pairs (a tensor) → results."""
        self._check_greedy(beam_size, sampling)
        return self.caption_arrays(np.asarray(images.detach().cpu().numpy(), np.float32), max_length)

    def __call__(
        self, before: Any, after: Any, *, beam_size: int | None = None, max_length: int | None = None,
        batch_size: int = 16,
    ) -> Any:  # fmt: skip
        """One pair (paths, PIL images or arrays) → a CaptionResult; lists of pairs → a list."""
        from changecap.inference.predictor import prepared_chunks

        self._check_greedy(beam_size, None)
        single, chunks = prepared_chunks(before, after, self.preprocess, batch_size)
        results = []
        for pairs, _sizes in chunks:
            results += self.caption_arrays(pairs.numpy(), max_length)
        return results[0] if single else results
