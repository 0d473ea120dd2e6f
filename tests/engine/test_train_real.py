"""The engine with the real pieces: LEVIR-MCI fake data, ChangeCaptionDataset, a tiny random-init HiSem,
evaluate_captions, save_model — through ``changecap train`` and the Python API."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from changecap.cli.main import main
from changecap.data.vocab import Vocabulary
from changecap.engine import load_config, train
from tests.data.fakes import make_levir
from tests.engine.toy import TINY_MODEL


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir(tmp_path_factory.mktemp("levir") / "mci", "levir-mci", {"train": 6, "val": 2, "test": 2}, 32)


def write_config(tmp_path: Path, root: Path, model: dict | None = None, **train: object) -> Path:
    cfg = {
        "data": {
            "root": str(root),
            "format": "levir-mci",
            "image_size": 32,
            "normalize": "clip",
            "resize_mode": "clip",
            "vocab": {"splits": "train", "threshold": 0},
            "max_length": 16,
        },
        "model": model or TINY_MODEL,
        "optim": {"lr": 0.001},
        "loss": {"router_warmup_epochs": 0, "gt_routing_until_epoch": 0},
        "train": {"epochs": 2, "batch_size": 4, "output_dir": str(tmp_path / "run"), "val_max_length": 8, **train},
        "logging": {"progress": False, "log_every": 1},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_trains_a_tiny_hisem_and_saves_loadable_model_dirs(tmp_path: Path, data_root: Path, capsys) -> None:
    cfg = write_config(tmp_path, data_root)
    assert main(["train", str(cfg), "--set", "train.precision=bf16"]) == 0
    assert "finished: 4 updates" in capsys.readouterr().out  # 6 pairs / batch 4 → 2 updates per epoch
    from changecap.inference.predictor import ChangeCaptioner
    from changecap.models.io import load_model

    best = tmp_path / "run" / "best"
    model = load_model(best)
    vocab = Vocabulary.load(tmp_path / "run" / "vocab.json")
    assert model.config.vocab_size == len(vocab) and model.config.max_length == 16
    captioner = ChangeCaptioner.from_pretrained(best, device="cpu")
    assert captioner.preprocess.image_size == 32 and captioner.preprocess.resize_mode == "clip"
    out = captioner(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    assert isinstance(out.caption, str) and 0.0 <= out.change_probability <= 1.0
    card = (best / "README.md").read_text()
    assert "Bleu_4" in card and "rsicc" in card


def test_real_model_resumes_bit_identically(tmp_path: Path, data_root: Path) -> None:
    ref = train(load_config(write_config(tmp_path / "a", data_root, val_every=0)))
    b = tmp_path / "b"
    first = train(load_config(write_config(b, data_root, val_every=0, max_steps=3)))  # mid-epoch 1
    assert not first.finished
    second = train(load_config(write_config(b, data_root, val_every=0)))
    assert second.finished and second.global_step == ref.global_step == 4
    from safetensors.torch import load_file

    wa = load_file(str(ref.last_dir / "model.safetensors"))
    wb = load_file(str(second.last_dir / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_training_from_a_pack_ends_with_the_same_weights(tmp_path: Path, data_root: Path) -> None:
    """``data.packed``: the train and validation splits read the pack (here at the training size, so neither decoding
    nor resizing is left to the loader) and the run's weights and validation scores equal the image files' bit for
    bit."""
    import json

    from safetensors.torch import load_file

    from changecap.data.packing import write_pack

    write_pack(data_root, "levir-mci", tmp_path / "pack", size=32, resize_mode="clip", progress=False)
    ref = train(load_config(write_config(tmp_path / "files", data_root)))
    packed = train(load_config(write_config(tmp_path / "packed", data_root), [f"data.packed={tmp_path / 'pack'}"]))
    wa = load_file(str(ref.last_dir / "model.safetensors"))
    wb = load_file(str(packed.last_dir / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    scores = [[json.loads(line).get("Bleu_4") for line in (d / "run" / "metrics.jsonl").read_text().splitlines()]
              for d in (tmp_path / "files", tmp_path / "packed")]  # fmt: skip
    assert scores[0] == scores[1] and any(s is not None for s in scores[0])


def test_cli_errors_are_one_line_with_exit_status_2(tmp_path: Path, data_root: Path, capsys) -> None:
    cfg = write_config(tmp_path, data_root)
    cases = [
        (["--set", "data.root=" + str(tmp_path / "missing")], "data.root"),
        (["--set", "train.epochz=3"], "train.epochz"),
        (["--set", "optim.lr=-1"], "optim.lr"),
        (["--set", "model.decoder.heads=3"], "model.decoder.heads"),
        (["--set", "model.decoder.vocab_size=7"], "model.decoder.vocab_size"),
        (["--resume", "--output-dir", str(tmp_path / "fresh")], "no checkpoint"),
    ]
    for extra, words in cases:
        assert main(["train", str(cfg), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and words in err and "\n" not in err, (extra, err)


def test_cli_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, data_root: Path, one_torch_thread: None
) -> None:
    """A real ``changecap train`` process is SIGKILLed mid-epoch (after its first checkpoint); the resumed run ends
    with exactly the weights of an uninterrupted run (dropout on, so the RNG state must be restored too)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from changecap.engine.checkpoint import CHECKPOINT_DIRNAME, LATEST_FILE

    # 6 pairs / batch 2 = 3 updates per epoch; 10 epochs = 30 updates, a checkpoint every 2 updates (mid-epoch)
    extra = {"val_every": 0, "epochs": 10, "batch_size": 2, "checkpoint_every_steps": 2}
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the children run on one thread, like this process (same kernels)
    train(load_config(write_config(tmp_path / "ref", data_root, **extra)))  # the uninterrupted reference
    cfg = write_config(tmp_path / "killed", data_root, **extra)
    cmd = [sys.executable, "-m", "changecap", "train", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    latest = tmp_path / "killed" / "run" / CHECKPOINT_DIRNAME / LATEST_FILE
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "run" / "last").exists()  # it really stopped before the end
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "update(s) into it" in resumed.stderr
    wa = load_file(str(tmp_path / "ref" / "run" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "run" / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_frozen_feature_cache_trains_bit_identically_and_hits_from_the_second_epoch(
    tmp_path: Path, data_root: Path
) -> None:
    import copy
    import json

    from safetensors.torch import load_file

    model = copy.deepcopy(TINY_MODEL)
    model["encoder"]["config"]["num_hidden_layers"] = 2
    model["encoder"]["trainable_layers"] = 1  # block 0 frozen and cached
    # validating on the training split: its lookups (under inference_mode) hit the entries training filled
    ref = train(load_config(write_config(tmp_path / "a", data_root, model, val_split="train")))
    cached = train(
        load_config(write_config(tmp_path / "b", data_root, model, val_split="train", frozen_feature_cache_gb=0.01))
    )
    assert cached.global_step == ref.global_step == 4
    wa = load_file(str(ref.last_dir / "model.safetensors"))
    wb = load_file(str(cached.last_dir / "model.safetensors"))
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    records = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["feature_cache_hit_rate"] for r in records if r["kind"] == "train"]
    # 12 distinct images: 12 misses in epoch 1, then hits only (validation after epoch 1: 12, epoch 2: 12)
    assert rates[0] == 0.0 and rates[-1] == 24 / 36
    assert [r["Bleu_4"] for r in records if r["kind"] == "val"] == [
        r["Bleu_4"]
        for r in map(json.loads, (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == "val"
    ]


def test_frozen_feature_cache_needs_frozen_blocks(tmp_path: Path, data_root: Path) -> None:
    from changecap.errors import ConfigError

    with pytest.raises(ConfigError, match="train.frozen_feature_cache_gb.*no CLIP encoder with frozen blocks"):
        train(load_config(write_config(tmp_path, data_root, val_every=0, frozen_feature_cache_gb=0.01)))


def test_second_cc_trains_with_semantic_maps_in_its_batches(tmp_path: Path) -> None:
    from changecap.engine.data import build_datasets
    from changecap.engine.objectives.hisem import HisemObjective
    from tests.data.fakes import make_second_cc
    from tests.engine.toy import toy_builder, toy_saver

    root = make_second_cc(tmp_path / "second", {"train": 4, "val": 2, "test": 2}, size=32)
    path = write_config(tmp_path, root, val_every=0, max_steps=2)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(format="second-cc", semantic_maps=True)
    cfg["model"] = {"dim": 16}  # the toy captioner: this test is about the data reaching the trainer
    path.write_text(yaml.safe_dump(cfg))
    config = load_config(path, check_model=False)
    train_set, val_set = build_datasets(config, Vocabulary.build([["a"]], threshold=0))
    assert train_set[0]["semantic"].shape == val_set[0]["semantic"].shape == (2, 32, 32)
    result = train(config, objective=HisemObjective, model_builder=toy_builder(), model_saver=toy_saver)
    assert result.global_step == 2
