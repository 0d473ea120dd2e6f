"""A brand-new architecture defined in this file only — model, config, objective with two phases — goes through the
whole stack with no edit to ``src/``: registry, real trainer (two phases per epoch training different parameter sets
on different dataset filters), exact resume after an interruption and after a SIGKILL, ``save_model`` /
``load_model`` and ``ChangeCaptioner``.

Run as a script (``python -m tests.engine.test_new_architecture train CONFIG ...``) it registers the architecture and
hands the rest of the command line to ``changecap``: that is how the kill test trains it in a child process.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from changecap.data.vocab import END_ID, START_ID
from changecap.engine import LossTerm, Objective, ObjectiveOutput, Phase, StepInfo, Trainer, load_config, train
from changecap.engine.objectives import caption_ce_sum, count_target_tokens
from changecap.engine.objectives.filters import changed_pairs
from changecap.models import Architecture, ArchitectureConfig, load_model, register_architecture
from changecap.models.contract import Capabilities, ChangeModel, Decoding, RawPrediction
from changecap.models.registry import unregister_architecture
from changecap.schema import require
from tests.data.fakes import make_levir

ARCH = "two_phase_toy"
REPO = Path(__file__).resolve().parents[2]
SEEN: list[tuple[str, list[str]]] = []  # (phase, pair names) of every micro-batch the objective saw, in-process


# ---------------------------------------------------------------------------------------------------------- model
@dataclass
class ToyDecoderConfig:
    dim: int = 16
    vocab_size: int = 4  # filled in from the data by the trainer
    max_length: int = 16


@dataclass
class TwoPhaseConfig(ArchitectureConfig):
    architecture: ClassVar[str] = ARCH
    image_size: int = 32
    patch: int = 8
    dropout: float = 0.1
    decoder: ToyDecoderConfig = field(default_factory=ToyDecoderConfig)

    @property
    def vocab_size(self) -> int:
        return self.decoder.vocab_size

    @property
    def max_length(self) -> int:
        return self.decoder.max_length

    def validate(self, prefix: str = "model") -> None:
        require(self.image_size % self.patch == 0, f"{prefix}.patch", "must divide image_size")


class TwoPhaseCaptioner(ChangeModel):
    """Patch conv encoder → difference fusion with a change head → GRU decoder; dropout so resume needs the RNG."""

    def __init__(self, config: TwoPhaseConfig) -> None:
        super().__init__()
        d, v = config.decoder.dim, config.decoder.vocab_size
        self.config = config
        self.encoder = nn.Conv2d(3, d, kernel_size=config.patch, stride=config.patch)
        self.fusion = nn.ModuleDict({"mix": nn.Linear(2 * d, d), "change": nn.Linear(d, 1)})
        self.decoder = nn.ModuleDict(
            {"embed": nn.Embedding(v, d), "gru": nn.GRU(d, d, batch_first=True), "drop": nn.Dropout(config.dropout),
             "out": nn.Linear(d, v)}
        )  # fmt: skip

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: list(getattr(self, name).parameters()) for name in ("encoder", "fusion", "decoder")}

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def infer(self, images: torch.Tensor, decoding: Decoding) -> RawPrediction:
        seqs, prob = self.caption(images, decoding.max_length or self.config.max_length)
        return RawPrediction(captions=seqs, change_probability=prob)

    def fuse(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = image.shape[0]
        tokens = self.encoder(image.flatten(0, 1)).flatten(2).transpose(1, 2)  # [2B, L, D]
        tokens = tokens.unflatten(0, (b, 2))  # [B, 2, L, D]
        memory = self.fusion["mix"](torch.cat([tokens[:, 0], tokens[:, 1] - tokens[:, 0]], dim=-1))  # [B, L, D]
        change_logit = self.fusion["change"](memory.mean(dim=1)).squeeze(-1)  # [B]
        return memory, change_logit

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h0 = memory.mean(dim=1).unsqueeze(0).contiguous()  # [1, B, D]
        out, _ = self.decoder["gru"](self.decoder["embed"](tokens), h0)  # [B, T, D]
        return self.decoder["out"](self.decoder["drop"](out))  # [B, T, V]

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory, change_logit = self.fuse(image)
        return self.decode(memory, tokens), change_logit

    @torch.no_grad()
    def caption(
        self, image: torch.Tensor, max_length: int = 16, beam_size: int = 1
    ) -> tuple[list[list[int]], torch.Tensor]:
        memory, change_logit = self.fuse(image)
        seqs = torch.full((image.shape[0], 1), START_ID, dtype=torch.long, device=image.device)
        for _ in range(max_length - 1):
            nxt = self.decode(memory, seqs)[:, -1].argmax(-1)  # [B]
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            if bool((seqs == END_ID).any(dim=1).all()):
                break
        rows = [row[: row.index(END_ID) + 1] if END_ID in row else row for row in seqs.tolist()]
        return rows, torch.sigmoid(change_logit.float())


def build(config: TwoPhaseConfig, load_pretrained: bool = True, init_weights: bool = True) -> TwoPhaseCaptioner:
    config.validate()
    return TwoPhaseCaptioner(copy.deepcopy(config))


# ---------------------------------------------------------------------------------------------------------- objective
@dataclass
class TwoPhaseLoss:
    change_weight: float = 0.5


class TwoPhaseObjective(Objective):
    """Phase ``fusion``: changed pairs only, encoder + fusion train (caption CE + change BCE through a frozen
    decoder). Phase ``decoder``: every pair, only the ``decoder`` optimiser group trains (caption CE)."""

    config_class = TwoPhaseLoss

    def phases(self, epoch: int) -> tuple[Phase, ...]:
        return (
            Phase(name="fusion", filter=changed_pairs, trainable=("encoder", "fusion")),
            Phase(name="decoder", groups=("decoder",)),
        )

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        return {"tokens": float(count_target_tokens(batch["target"])), "samples": float(len(batch["target"]))}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        SEEN.append((step.phase.name, list(batch["name"])))
        with step.autocast():
            logits, change_logit = model(batch["image"], batch["target"])
        ce_sum, n_tok = caption_ce_sum(logits, batch["target"])
        terms = {"caption_ce": LossTerm.mean(ce_sum, n_tok, over="tokens")}
        if step.phase.name == "fusion":
            bce = nn.functional.binary_cross_entropy_with_logits(
                change_logit.float(), batch["changed"].float(), reduction="sum"
            )
            samples = torch.tensor(float(len(batch["target"])))
            terms["change_bce"] = LossTerm.mean(bce, samples, over="samples", weight=self.config.change_weight)
        return ObjectiveOutput(terms)


SPEC = Architecture(name=ARCH, config_class=TwoPhaseConfig, build=build, objective=TwoPhaseObjective,
                    capabilities=Capabilities(captions=True, change_probability=True))


def register() -> None:
    register_architecture(SPEC, replace=True)


@pytest.fixture(autouse=True)
def registered(one_torch_thread: None) -> Iterator[None]:
    register()
    SEEN.clear()
    yield
    unregister_architecture(ARCH)


# ---------------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_levir(tmp_path_factory.mktemp("levir") / "mci", "levir-mci", {"train": 10, "val": 2, "test": 2}, 32)


def write_config(folder: Path, root: Path, **extra: Any) -> Path:
    cfg = {
        "data": {
            "root": str(root), "format": "levir-mci", "image_size": 32, "normalize": "clip", "resize_mode": "resize",
            "vocab": {"splits": "train", "threshold": 0}, "max_length": 16,
        },
        "model": {"architecture": ARCH, "decoder": {"dim": 16}},
        "optim": {"name": "adamw", "lr": 0.01, "group_lr": {"decoder": 0.02}, "weight_decay": 0.01},
        "loss": {"change_weight": 0.5},
        "train": {"epochs": 2, "batch_size": 2, "output_dir": str(folder / "run"), "val_max_length": 8, **extra},
        "logging": {"progress": False, "log_every": 1},
    }  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "last" / "model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---------------------------------------------------------------------------------------------------------- tests
def test_two_phases_train_their_own_parameters_on_their_own_items(tmp_path: Path, data_root: Path) -> None:
    changed_names = {f"train_{i + 1:06d}.png" for i in range(0, 10, 2)}  # fakes: even items are changed
    updates: list[tuple[str, set[str]]] = []
    previous: dict[str, torch.Tensor] = {}

    def watch(trainer: Trainer) -> None:
        now = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        if previous:
            moved = {k.split(".")[0] for k in now if not torch.equal(now[k], previous[k])}
            updates.append((trainer.current_phase.name, moved))
        previous.clear()
        previous.update(now)

    config = load_config(write_config(tmp_path, data_root))
    trainer = Trainer(config, callbacks=[watch])
    previous.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
    result = trainer.fit()

    # 5 changed pairs / batch 2 → 3 updates, then 10 pairs / batch 2 → 5 updates, in every epoch
    assert result.finished and result.global_step == 2 * (3 + 5)
    assert [phase for phase, _ in updates] == (["fusion"] * 3 + ["decoder"] * 5) * 2
    for phase, moved in updates:
        assert moved == ({"encoder", "fusion"} if phase == "fusion" else {"decoder"}), (phase, moved)
    fusion_items = {n for phase, names in SEEN if phase == "fusion" for n in names}
    decoder_items = {n for phase, names in SEEN if phase == "decoder" for n in names}
    assert fusion_items == changed_names and len(decoder_items) == 10
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trains = [r for r in records if r["kind"] == "train"]
    assert {r["phase"] for r in trains} == {"fusion", "decoder"}
    assert all("change_bce" in r for r in trains if r["phase"] == "fusion")
    for r in trains:  # the logged loss: the terms' means weighted as the phase weighs them (loss.change_weight 0.5)
        assert r["loss"] == r["caption_ce"] + (0.5 * r["change_bce"] if r["phase"] == "fusion" else 0.0)
    assert all(r["lr_decoder"] != r["lr_encoder"] for r in trains)  # per-group learning rates from optim.group_lr

    # save → load_model → ChangeCaptioner, through the registry
    from changecap.inference import ChangeCaptioner

    best = result.best_dir
    model = load_model(best)
    assert isinstance(model, TwoPhaseCaptioner) and model.config == trainer.model.config
    assert_same(model.state_dict(), load_file(str(best / "model.safetensors")))
    payload = json.loads((best / "config.json").read_text())
    assert payload["architecture"] == ARCH and payload["format_version"] == 2
    captioner = ChangeCaptioner.from_pretrained(best, device="cpu")
    out = captioner(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    assert isinstance(out.caption, str) and 0.0 <= out.change_probability <= 1.0
    assert ARCH in (best / "README.md").read_text()


def test_interrupted_in_the_second_phase_resumes_exactly(tmp_path: Path, data_root: Path) -> None:
    ref = train(load_config(write_config(tmp_path / "ref", data_root, val_every=0)))

    class Interrupt(Exception):
        pass

    def crash(trainer: Trainer) -> None:
        if trainer.progress.global_step == 12:  # epoch 1, the 4th update: inside its decoder phase
            raise Interrupt

    cfg = write_config(tmp_path / "crash", data_root, val_every=0, checkpoint_every_steps=5)
    with pytest.raises(Interrupt):
        train(load_config(cfg), callbacks=[crash])
    resumed = train(load_config(cfg), resume=True)  # from update 10 (epoch 1, phase decoder, 2 updates into it)
    assert resumed.finished and resumed.global_step == ref.global_step == 16
    assert_same(weights(tmp_path / "ref" / "run"), weights(tmp_path / "crash" / "run"))


def test_sigkilled_child_process_resumes_to_the_uninterrupted_weights(tmp_path: Path, data_root: Path) -> None:
    from changecap.engine.checkpoint import CHECKPOINT_DIRNAME, LATEST_FILE

    extra = {"val_every": 0, "epochs": 6, "checkpoint_every_steps": 3}  # 48 updates, checkpoints mid-phase
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    script = [sys.executable, "-m", "tests.engine.test_new_architecture"]
    # the reference runs in this process, on one thread like the children (one_torch_thread), so same kernels
    train(load_config(write_config(tmp_path / "ref", data_root, **extra)))
    cfg = write_config(tmp_path / "killed", data_root, **extra)
    proc = subprocess.Popen([*script, "train", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env, cwd=REPO)  # fmt: skip
    latest = tmp_path / "killed" / "run" / CHECKPOINT_DIRNAME / LATEST_FILE
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "run" / "last").exists()
    resumed = subprocess.run([*script, "train", str(cfg), "--resume"], capture_output=True, text=True, env=env,
                             cwd=REPO)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    assert_same(weights(tmp_path / "ref" / "run"), weights(tmp_path / "killed" / "run"))


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, data_root: Path) -> None:
    """DDP (torchrun, 2 CPU processes, gloo) with phases whose trainable sets differ reaches the weights of one
    process with grad_accum 2: frozen parameters stay out of the all-reduce and the optimiser in both."""
    import socket

    extra = {"val_every": 0, "batch_size": 4}
    model = {"architecture": ARCH, "dropout": 0.0, "decoder": {"dim": 16}}  # no dropout: the streams differ
    single = load_config(write_config(tmp_path / "single", data_root, grad_accum=2, **extra))
    single.model = model
    train(single)
    cfg = write_config(tmp_path / "ddp", data_root, **extra)
    data = yaml.safe_load(cfg.read_text())
    data["model"] = model
    cfg.write_text(yaml.safe_dump(data))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "tests.engine.test_new_architecture",
           "train", str(cfg)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = weights(tmp_path / "single" / "run"), weights(tmp_path / "ddp" / "run")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=1e-4), name


if __name__ == "__main__":
    from changecap.cli.main import main

    register()
    raise SystemExit(main(sys.argv[1:]))
