"""``benchmarks/gpu_check.py --device cpu --tiny``: every registered system trains, saves, resumes bit-exactly and
predicts through the real code paths, the throughput and the one-process DDP run are measured, and the report is
written (the same script a GPU runs at full size, so that it cannot rot)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from changecap.models.registry import architecture_names, get_architecture

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_passes_every_check(tmp_path: Path, one_torch_thread: None, capsys) -> None:
    report_path = tmp_path / "report.json"
    rc = load_script().main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "work"), "--json", str(report_path)])
    out = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert rc == 0, out[-3000:]
    assert report["ok"] and not report.get("errors")
    assert [s["system"] for s in report["systems"]] == ["change_detection"] + [
        n for n in architecture_names() if n != "change_detection"
    ]
    for s in report["systems"]:
        assert s["ok"] and s["updates"] == report["updates"] == 4 and s["losses_finite"], s
        assert s["resume"]["bit_exact"], s
        assert s["fp32_vs_cpu"] and all(v == 100.0 for v in s["fp32_vs_cpu"].values()), s
        assert s["predicted"]["pairs"] > 0
    captioners = {s["system"] for s in report["systems"] if "tokens_equal_pct" in s["fp32_vs_cpu"]}
    with_masks = {s["system"] for s in report["systems"] if "mask_pixels_equal_pct" in s["fp32_vs_cpu"]}
    declared = {n: get_architecture(n).capabilities for n in architecture_names()}
    assert captioners == {n for n, can in declared.items() if can.captions}
    assert with_masks == {n for n, can in declared.items() if can.change_mask}
    t = report["throughput"]
    assert t["peak_gflops"]["bf16"] > 0 and all(t[p]["share_of_bf16_peak_pct"] > 0 for p in ("train", "infer"))
    ddp = report["ddp"]
    assert ddp["backend"] == "gloo" and ddp["wrapped_in_ddp"] and ddp["vs_plain_run"]["bit_exact"]
    assert "| hisem |" in out and "PASSED" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--systems", "nope"], "--systems: unknown ['nope']"),
        (["--updates", "1"], "--updates must be at least 2"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv: list[str], words: str, capsys) -> None:
    assert load_script().main(["--device", "cpu", "--tiny", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
