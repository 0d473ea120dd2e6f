"""Trainer with the toy captioner: outputs of a run, exact resume after an interruption, bf16, resume errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from changecap.engine import TrainConfig, Trainer, train
from changecap.engine.checkpoint import load_checkpoint
from changecap.engine.objectives.hisem import HisemObjective
from changecap.errors import ConfigError, DataError, ModelError
from tests.engine.test_curves import series as curve_series
from tests.engine.toy import ToyDataset, load_toy_weights, toy_builder, toy_saver, toy_vocab


def make_config(out: Path, tensorboard: bool = False, **train: Any) -> TrainConfig:
    section = {
        "epochs": 2,
        "batch_size": 4,
        "output_dir": str(out),
        "val_batch_size": 8,
        "val_max_length": 10,
        **train,
    }
    return TrainConfig.from_dict(
        {
            "data": {"root": "toy"},
            "model": {"dim": 16},
            "optim": {"lr": 0.01},
            # short schedule so one 2-epoch run crosses warm-up, the ramp and the end of GT routing
            "loss": {"router_warmup_epochs": 0, "gt_routing_until_epoch": 0},
            "train": section,
            "logging": {"log_every": 2, "progress": False, "tensorboard": tensorboard},
        },
        check_model=False,
    )


def run(config: TrainConfig, n: int = 18, num_workers: int = 0, builder: Any = None, **kw: Any):
    """Train the toy model on the toy data (``num_workers`` DataLoader worker processes)."""
    config.data.num_workers = num_workers
    vocab = toy_vocab()
    datasets = (ToyDataset(n, vocab, "train", seed=config.train.seed), ToyDataset(6, vocab, "val"))
    return train(
        config,
        objective=HisemObjective,
        model_builder=builder or toy_builder(),
        model_saver=toy_saver,
        datasets=datasets,
        vocab=vocab,
        **kw,
    )


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_toy_weights(out / "last")


def test_run_writes_model_dirs_metrics_and_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run(make_config(out))
    assert result.finished and result.epochs_completed == 2
    assert result.global_step == 2 * 5  # 18 items / batch 4 -> 4 full + 1 partial (2 samples) per epoch
    assert result.best_dir == out / "best" and (out / "best" / "model.safetensors").is_file()
    assert (out / "last" / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    assert (out / "vocab.json").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["kind"] == "val"]
    assert [r["epoch"] for r in val] == [0, 1] and all("Bleu_4" in r for r in val)
    assert result.best_metric == max(r["Bleu_4"] for r in val)
    trains = [r for r in records if r["kind"] == "train"]
    assert trains and all(r["caption_ce"] > 0 and "lr_decoder" in r for r in trains)
    assert [r["gt_routing"] for r in trains][0] is True and trains[-1]["gt_routing"] is False
    # the curves of both epochs: the total and the objective's loss terms (not its statistics), the validation
    drawn = curve_series((out / "curves.svg").read_text())
    assert {"loss", "caption_ce", "router_ce", "aux", "BLEU-4", "CIDEr-D"} <= set(drawn)
    assert "router_acc" not in drawn and len(drawn["loss"]) == len(drawn["BLEU-4"]) == 2
    card = json.loads((out / "best" / "card.json").read_text())
    assert card["metrics"]["Bleu_4"] == round(result.best_metric, 6) and "greedy" in card["protocol"]
    ckpt = load_checkpoint(out)
    assert ckpt is not None and ckpt.progress.epoch == 2 and ckpt.progress.global_step == 10
    # training changed the weights and they are the ones in last/
    first = toy_builder()({"dim": 16}, toy_vocab(), 10)[0]
    last = final_weights(out)
    assert not torch.equal(last["decoder.out.weight"], first.state_dict()["decoder.out.weight"])


class FakeMeteor:
    """Stands in for the METEOR JVM: counts how many are started and closed, scores every pair 0.5."""

    started: list[FakeMeteor] = []

    def __init__(self, *, warmup: bool = False) -> None:
        self.closed = False
        self.requests = 0
        FakeMeteor.started.append(self)

    def __enter__(self) -> FakeMeteor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def statistics(self, hyps: list[str], refs: list[list[str]]) -> list[str]:
        self.requests += 1
        return ["s"] * len(hyps)

    def evaluate(self, stats: list[str]) -> tuple[float, list[float]]:
        return 0.5, [0.5] * len(stats)


def test_one_meteor_jvm_serves_every_validation_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import changecap.metrics.caption_eval as caption_eval

    FakeMeteor.started = []
    monkeypatch.setattr(caption_eval, "MeteorScorer", FakeMeteor)
    result = run(make_config(tmp_path / "run", epochs=3, val_meteor="java"))
    assert [v["METEOR"] for v in result.validations] == [0.5, 0.5, 0.5]
    assert len(FakeMeteor.started) == 1  # started once for the run, not once per round
    scorer = FakeMeteor.started[0]
    assert scorer.requests == 3 and scorer.closed


class Interrupt(Exception):
    pass


def interrupt_at(step: int):
    def callback(trainer: Trainer) -> None:
        if trainer.progress.global_step == step:
            raise Interrupt

    return callback


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("workers", [0, 1])
def test_resume_after_max_steps_mid_epoch_is_bit_identical(tmp_path: Path, workers: int) -> None:
    run(make_config(tmp_path / "ref"))  # reference: no workers
    out = tmp_path / "split"
    first = run(make_config(out, max_steps=7), num_workers=workers)  # stops mid epoch 1 (5 updates per epoch)
    assert not first.finished and first.global_step == 7
    assert load_checkpoint(out).progress.step_in_epoch == 2
    second = run(make_config(out), num_workers=workers)  # automatic resume
    assert second.finished and second.global_step == 10
    assert_same_weights(final_weights(tmp_path / "ref"), final_weights(out))
    # the log reads as one run: each train step logged once
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [s for s, x in zip(steps, (out / "metrics.jsonl").read_text().splitlines()) if '"train"' in x]
    assert len(train_steps) == len(set(train_steps))


def test_resume_after_a_crash_in_a_hook_is_bit_identical(tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    run(make_config(ref, grad_accum=2))
    out = tmp_path / "crash"
    # checkpoint every 3 updates, crash at update 4: updates 4.. are redone after the resume from update 3
    with pytest.raises(Interrupt):
        run(make_config(out, grad_accum=2, checkpoint_every_steps=3), callbacks=[interrupt_at(4)])
    assert load_checkpoint(out).progress.global_step == 3
    run(make_config(out, grad_accum=2, checkpoint_every_steps=3), resume=True)
    assert_same_weights(final_weights(ref), final_weights(out))


def test_resume_true_without_checkpoint_and_vocab_mismatch_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no checkpoint to resume from"):
        run(make_config(tmp_path / "none"), resume=True)
    out = tmp_path / "run"
    run(make_config(out, max_steps=2))
    other_vocab = toy_vocab()
    other_vocab = type(other_vocab)({**other_vocab.word_to_id, "zebra": len(other_vocab)})
    with pytest.raises(ModelError, match="does not match the resumed checkpoint"):
        train(
            make_config(out),
            objective=HisemObjective,
            model_builder=toy_builder(),
            model_saver=toy_saver,
            datasets=(ToyDataset(8, other_vocab), ToyDataset(4, other_vocab, "val")),
            vocab=other_vocab,
        )


def test_deleted_latest_resumes_from_the_newest_checkpoint_and_says_so(tmp_path: Path, capsys) -> None:
    """Resuming is exact whichever way the checkpoint is found (the resume tests above): here only which one."""
    out = tmp_path / "split"
    run(make_config(out, max_steps=7))  # stops mid epoch 1
    (out / "checkpoint" / "LATEST").unlink()
    capsys.readouterr()
    second = run(make_config(out))
    assert second.finished and second.global_step == 10
    err = capsys.readouterr().err
    assert "warning: " in err and "LATEST: missing; resuming from the newest readable checkpoint, step-000000007" in err
    assert "(update 7, epoch 1, 2 update(s) into it)" in err  # resumed at update 7, not started over


def test_unreadable_checkpoint_is_refused_and_kept_until_restart(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run(make_config(out, max_steps=3))
    (out / "checkpoint" / "LATEST").unlink()
    weights = load_checkpoint_weights_file(out)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    kept = {p: p.read_bytes() for p in (out / "checkpoint").rglob("*") if p.is_file()}
    with pytest.raises(ModelError, match="checkpoint: no readable checkpoint to resume from .*--restart") as info:
        run(make_config(out))
    assert "\n" not in str(info.value) and "model.safetensors: cannot read safetensors file" in str(info.value)
    assert {p: p.read_bytes() for p in (out / "checkpoint").rglob("*") if p.is_file()} == kept  # nothing deleted
    result = run(make_config(out, epochs=1), resume=False)  # told to start afresh: the checkpoint is replaced
    assert result.finished and result.global_step == 5 and load_checkpoint(out).progress.global_step == 5


def load_checkpoint_weights_file(out: Path) -> Path:
    (folder,) = [p for p in (out / "checkpoint").iterdir() if p.is_dir()]
    return folder / "model.safetensors"


def test_restart_ignores_the_checkpoint_and_bf16_trains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    run(make_config(out, max_steps=3))
    result = run(make_config(out, tensorboard=True, epochs=1, precision="bf16", val_every=0), resume=False)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert "TensorBoard is not installed" in capsys.readouterr().err  # a clear message, and training went on
    else:
        assert (out / "tensorboard").is_dir()
    assert result.finished and result.global_step == 5  # started afresh
    assert result.best_metric is None and result.best_dir == out / "last"
    losses = [json.loads(x)["caption_ce"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(0 < v < 10 for v in losses)


@pytest.mark.slow
def test_compiled_training_follows_the_eager_curve_over_50_updates(tmp_path: Path) -> None:
    pytest.importorskip("torch._inductor")

    def curve(compile_: bool) -> list[float]:
        out = tmp_path / f"compile_{compile_}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would make this test vacuous
            # no dropout: compiled kernels draw their masks from another random stream than eager ones
            result = run(
                make_config(out, epochs=5, val_every=0, compile=compile_), n=40, builder=toy_builder(dropout=0)
            )
        assert result.global_step == 50
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["caption_ce"] for r in records if r["kind"] == "train"]

    eager_losses = curve(False)
    compiled_losses = curve(True)
    assert len(eager_losses) == len(compiled_losses) >= 20
    # float re-association in the compiled kernels drifts by < 1e-3 relative over 50 updates at lr 0.01
    assert compiled_losses == pytest.approx(eager_losses, rel=2e-3, abs=1e-5)


def test_model_folders_and_run_files_get_the_umask_permissions(tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        run(make_config(out, epochs=1))
    finally:
        os.umask(old)
    for folder in ("best", "last"):
        assert (out / folder).stat().st_mode & 0o777 == 0o755  # not the temporary folder's 0700
        assert (out / folder / "model.safetensors").stat().st_mode & 0o777 == 0o644
    for name in ("config.yaml", "vocab.json"):
        assert (out / name).stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary file or folder left


@pytest.mark.parametrize("layout", ["a file", "under a file"])
def test_an_unusable_output_dir_is_refused_before_anything_is_built(tmp_path: Path, layout: str) -> None:
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if layout == "a file" else tmp_path / "taken" / "run"
    with pytest.raises(DataError, match=r"\[train.output_dir\]") as e:
        Trainer(make_config(out), model_builder=lambda *a: pytest.fail("the model was built"))
    assert "\n" not in str(e.value) and str(tmp_path / "taken") in str(e.value)


def test_an_interrupted_model_save_leaves_no_temporary_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"

    def interrupted_saver(*args: Any) -> None:
        toy_saver(*args)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(make_config(out, epochs=1), objective=HisemObjective, model_builder=toy_builder(),
              model_saver=interrupted_saver, datasets=(ToyDataset(8, toy_vocab(), "train"),
              ToyDataset(4, toy_vocab(), "val")), vocab=toy_vocab())  # fmt: skip
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_killed_runs_half_written_model_folder_is_removed_at_the_next_start(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stale = out / f".best.{proc.pid}.x1y2.tmp"  # what a SIGKILL during save_model_dir leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    run(make_config(out, epochs=1))
    assert not stale.exists() and (out / "best" / "model.safetensors").is_file()


def test_a_validation_decoding_the_model_cannot_do_is_refused_at_start(tmp_path: Path) -> None:
    """The toy model declares no beam search (its capabilities): train.val_beam_size 2 fails before any update."""
    with pytest.raises(ConfigError, match="config field 'train.val_beam_size': toy has no beam search") as e:
        run(make_config(tmp_path / "run", val_beam_size=2))
    assert "\n" not in str(e.value) and not (tmp_path / "run" / "checkpoint").exists()
