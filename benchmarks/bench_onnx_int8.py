"""int8 captioning through PyTorch or through onnxruntime: which is faster, on the same model and pairs.

A model (a saved model directory, or ``paper``: the paper HiSem with random weights, saved to a temporary folder)
is exported with ``changecap export onnx``; its two graphs are quantised with onnxruntime's ``quantize_dynamic``
(int8 weights, activations quantised at run time, MatMul and Gemm nodes). Then one batch of pairs is captioned,
round-robin ``--steps`` times so that every way sees the same machine load, by:

* torch fp32 and torch int8 (``ChangeCaptioner(precision="int8")``);
* onnxruntime fp32 and onnxruntime int8 (``OnnxCaptioner`` on the exported and on the quantised graphs),
  every session on ``--threads`` intra-op threads.

Printed: pairs/s (wall) and pairs per CPU-second of the process for each way, and the share of token positions each
int8 way shares with its fp32 (random weights: a rough check only).

Usage::

    python benchmarks/bench_onnx_int8.py [paper | MODEL_DIR] [--batch 8] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def paper_model_dir(root: Path) -> Path:
    """The paper HiSem with random weights, saved with a 501-word vocabulary and CLIP preprocessing at 224 px."""
    import torch

    from changecap.data.vocab import Vocabulary
    from changecap.models import PreprocessConfig, build_model, save_model
    from changecap.models.hisem import paper_config

    torch.manual_seed(0)
    model = build_model(paper_config(vocab_size=501, pretrained=None)).eval()
    vocab = Vocabulary.build([[f"w{i}" for i in range(501 - 4)]], threshold=0)
    assert len(vocab) == 501, len(vocab)
    out = save_model(model, model.config, vocab, root / "paper")
    PreprocessConfig(image_size=224, resize_mode="clip").save(out)
    return out


def quantise_folder(folder: Path, out: Path) -> Path:
    """A copy of an exported folder with both graphs quantised by onnxruntime (dynamic, int8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from changecap.inference.onnx_export import ENCODER_FILE, STEP_FILE

    shutil.copytree(folder, out)
    for name in (ENCODER_FILE, STEP_FILE):
        (out / name).unlink()
        quantize_dynamic(folder / name, out / name, weight_type=QuantType.QInt8)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="paper")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import torch

    from changecap.inference import ChangeCaptioner
    from changecap.inference.onnx_export import OnnxCaptioner, export_onnx

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = paper_model_dir(root) if args.model == "paper" else Path(args.model)
        t0 = time.perf_counter()
        exported = export_onnx(model_dir, root / "onnx")
        int8_folder = quantise_folder(exported, root / "onnx_int8")
        print(f"exported and quantised in {time.perf_counter() - t0:.0f} s", flush=True)
        ways = {
            "torch fp32": ChangeCaptioner.from_pretrained(model_dir, device="cpu"),
            "torch int8": ChangeCaptioner.from_pretrained(model_dir, device="cpu", precision="int8"),
            "onnxruntime fp32": OnnxCaptioner(exported, threads=args.threads),
            "onnxruntime int8": OnnxCaptioner(int8_folder, threads=args.threads),
        }
        size = ways["torch fp32"].preprocess.image_size
        pairs = torch.randn(args.batch, 2, 3, size, size, generator=torch.Generator().manual_seed(1))

        def run(key: str) -> list[list[int]]:
            return [r.tokens for r in ways[key].caption_tensor(pairs)]

        tokens = {key: run(key) for key in ways}  # warm-up and the tokens to compare
        wall: dict[str, list[float]] = {k: [] for k in ways}
        cpu: dict[str, list[float]] = {k: [] for k in ways}
        load = os.getloadavg()[0]
        for _ in range(args.steps):
            for key in ways:
                w0, c0 = time.perf_counter(), time.process_time()
                run(key)
                wall[key].append(time.perf_counter() - w0)
                cpu[key].append(time.process_time() - c0)
    print(f"{args.model}, batch {args.batch}, {args.threads} thread(s), medians of {args.steps}, load average "
          f"{load:.1f} before and {os.getloadavg()[0]:.1f} after")  # fmt: skip
    print("| way | pairs/s | pairs per CPU-second | × torch fp32 (CPU time) | tokens equal to its fp32 |")
    print("|---|---|---|---|---|")
    base = statistics.median(cpu["torch fp32"])
    for key in ways:
        ref = tokens[key.replace("int8", "fp32")]
        positions = sum(len(a) for a in ref)
        same = sum(sum(x == y for x, y in zip(a, b)) for a, b in zip(ref, tokens[key]))
        agree = f"{100 * same / positions:.1f} %" if "int8" in key else "—"
        w, c = statistics.median(wall[key]), statistics.median(cpu[key])
        print(f"| {key} | {args.batch / w:.2f} | {args.batch / c:.2f} | {base / c:.2f} | {agree} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
