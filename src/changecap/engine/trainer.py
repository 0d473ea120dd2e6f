"""The training loop: epochs of phases, validation, model selection, checkpoints. It knows no system.

Plain PyTorch, readable top to bottom (nanoGPT style). What is trained and how comes from elsewhere:

* the model from the architecture registry (``model_setup.py``), its optimiser groups from the model (``optim.py``);
* the loss, the statistics and the phases of each epoch from the architecture's objective
  (``objectives/``; the contract and the DDP scaling rule are in ``objectives/base.py``);
* each phase's data from ``data.py`` (a deterministic batch order per phase), one update from ``step.py``;
* checkpoints from ``checkpoint.py``, model folders and cards from ``model_dirs.py``.

Launch with ``python -m changecap train cfg.yaml`` (one process) or
``torchrun --nproc-per-node N -m changecap train cfg.yaml`` (DDP; gloo on CPU, NCCL on CUDA).

Exact resume: a checkpoint holds weights, optimiser, scheduler, every process's RNG states and the position
(epoch, update within the epoch — counted across the epoch's phases). The phases are a pure function of the epoch,
each phase's data order a pure function of ``(seed, phase position, epoch)`` and each sample a pure function of
``(seed, epoch, index)``; the DataLoaders get their own generators so creating an iterator never consumes the
global RNG. A run interrupted anywhere and resumed ends with the same weights, bit for bit, as an uninterrupted
one (CPU; on GPU up to the non-determinism of the kernels unless ``train.deterministic``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm import tqdm

from changecap.data.files import check_output_dir, make_temp_dir, remove_stale_temps, replace_folder
from changecap.data.vocab import Vocabulary
from changecap.engine.checkpoint import (
    Checkpoint,
    TrainProgress,
    capture_rng_state,
    load_checkpoint,
    save_checkpoint,
    unwrap,
)
from changecap.engine.config import TrainConfig
from changecap.engine.curves import write_curves
from changecap.engine.data import PhaseData, PhaseLoaders, build_datasets, build_vocabulary_for, resolve_max_length
from changecap.engine.distributed import (
    DistContext,
    barrier,
    cleanup_distributed,
    gather_objects,
    group_initialized,
    init_distributed,
)
from changecap.engine.lr_schedule import build_scheduler
from changecap.engine.model_dirs import card_fields, save_preprocess
from changecap.engine.model_setup import (
    ModelBuilder,
    ModelSaver,
    default_model_builder,
    default_model_saver,
    enable_frozen_feature_caches,
)
from changecap.engine.objectives import Objective, Phase, StepInfo, TrainingStep, build_objective
from changecap.engine.optim import build_optimizer
from changecap.engine.precision import PRECISIONS
from changecap.engine.resume import restore_training
from changecap.engine.run_log import RunLogger
from changecap.engine.standins import resolve_standins
from changecap.engine.step import StatsWindow, UpdateStep, set_phase_trainable
from changecap.engine.validation import ValidationResult, validate
from changecap.errors import ConfigError, ModelError
from changecap.metrics import MeteorScorer, meteor_session
from changecap.models.compiling import compile_with_fallback
from changecap.models.contract import Decoding
from changecap.schema import with_path

Callback = Callable[["Trainer"], None]


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    output_dir: Path
    best_dir: Path | None  # the selected model (``last_dir`` when no validation ran)
    last_dir: Path | None
    best_metric: float | None
    best_epoch: int | None
    select_metric: str
    global_step: int
    epochs_completed: int
    finished: bool  # False when stopped early by ``train.max_steps``
    validations: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels where PyTorch has them (warn-only where it has none)."""
    if enabled:
        # cuBLAS needs a fixed workspace for reproducible GEMMs; must be set before the first cuBLAS call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs it with :meth:`fit`.

    The keyword arguments replace parts built from the config (tests, scripts with their own model or data):
    ``model_builder`` / ``model_saver`` (default: the architecture registry), ``objective`` (an :class:`Objective`,
    or a class/factory built from the ``loss`` section; default: the architecture's), ``datasets`` (train, val) or
    ``{"train": ..., "<other>": ..., "val": ...}`` with ``vocab``, ``callbacks`` called after every optimiser update
    with the trainer. ``resume``: ``None`` resumes when ``<output_dir>/checkpoint/`` holds a checkpoint, ``True``
    requires one, ``False`` starts afresh (and replaces an existing checkpoint). The checkpoint is the one ``LATEST``
    names, else the newest readable one (with a warning); checkpoints of which none is readable are refused
    (``engine.checkpoint.load_checkpoint``), never silently replaced.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool | None = None,
        model_builder: ModelBuilder | None = None,
        model_saver: ModelSaver | None = None,
        objective: Objective | Callable[..., Objective] | str | None = None,
        datasets: tuple[Dataset, Dataset] | dict[str, Dataset] | None = None,
        vocab: Vocabulary | None = None,
        callbacks: Sequence[Callback] = (),
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> None:
        from changecap.data.collate import collate_pairs

        # stand-ins (``standin:FILE``) → their cache directories, or a one-line error before anything starts
        resolved = resolve_standins(dict(config.model), config.data.root, config.source)
        config = dataclasses.replace(config, model=resolved)
        self.config = config
        t = config.train
        self.ctx: DistContext = init_distributed(t.device, path=config.source)
        set_deterministic(t.deterministic)
        if self.ctx.device.type == "cpu":
            # Adam's second moments of tiny gradients (and activations of a randomly initialised ViT) fall into the
            # denormal range, where x86 arithmetic is ~10× slower: measured 2–7 s vs 0.26 s per fp32 update of
            # the SynthCC CPU config. Values below 1.2e-38 carry nothing a model can use, so flush them
            # (process-wide setting; bf16 autocast mostly avoids them anyway).
            torch.set_flush_denormal(True)
        self.output_dir = check_output_dir(t.output_dir, "train.output_dir")  # before anything is read or built
        self.callbacks = list(callbacks)
        self.collate_fn = collate_fn or collate_pairs
        self.model_saver = model_saver or default_model_saver
        self.autocast_dtype = PRECISIONS[t.precision]
        if t.batch_size % (self.ctx.world_size * t.grad_accum):
            raise ConfigError(
                "train.batch_size",
                f"global batch {t.batch_size} is not divisible by {self.ctx.world_size} processes × grad_accum "
                f"{t.grad_accum}",
                path=config.source,
            )

        # ---- resume decision (before anything is written)
        checkpoint: Checkpoint | None = None
        if resume is not False:
            checkpoint = load_checkpoint(self.output_dir)
            if checkpoint is None and resume:
                raise ModelError(f"{self.output_dir / 'checkpoint'}: no checkpoint to resume from")
        self.resumed_from = checkpoint.path if checkpoint else None

        # ---- objective (before the data: a bad loss section fails before anything is read)
        self.objective = self._build_objective(objective, model_builder is not None)

        # ---- data and vocabulary
        self.vocab, self.train_sets, self.val_set = self._build_data(datasets, vocab)
        if checkpoint is not None and checkpoint.vocab != self.vocab.id_to_word:
            raise ModelError(
                f"{checkpoint.path}: the vocabulary ({len(self.vocab)} words) does not match the resumed checkpoint's "
                f"({len(checkpoint.vocab)} words); use the same data.vocab settings or a new train.output_dir"
            )
        self.train_set = self.train_sets["train"]
        # a dataset of the data layer knows its caption length; one a caller brings may not (then: the config's)
        self.max_length = int(getattr(self.train_set, "max_length", 0) or resolve_max_length(config) or 41)
        self.loaders = PhaseLoaders(self.train_sets, config, self.ctx, self.collate_fn)
        self.steps_in_epoch = [sum(p.steps_per_epoch for p in self.epoch_data(e)) for e in range(t.epochs)]
        self.total_steps = sum(self.steps_in_epoch)

        # ---- model (identical initialisation on every process), optimiser, schedule
        seed_everything(t.seed)
        builder = model_builder or default_model_builder
        self.model, self.model_config = builder(dict(config.model), self.vocab, self.max_length)
        self.model.vocab = self.vocab  # the ids its captions use (models/contract.py)
        self._check_validation_decoding()
        self.model.to(self.ctx.device)
        self.objective.bind(self.model)
        self.objective.prepare(self.train_sets, self.ctx)
        self.trainable_ids = {id(p) for p in self.model.parameters() if p.requires_grad}
        self.optimizer, self.param_groups = build_optimizer(self.model, config.optim, config.source)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.total_steps)
        # Dropout streams: one per process (nanoGPT's seed offset), so ranks do not share masks.
        seed_everything(t.seed + self.ctx.rank)

        self.progress = TrainProgress()
        if checkpoint is not None:
            self.progress = restore_training(
                checkpoint, self.model, self.optimizer, self.scheduler, self.ctx, config, config.source
            )

        self.prefix_caches = enable_frozen_feature_caches(self.model, t.frozen_feature_cache_gb)
        if t.compile:  # in place, before DDP wraps it: parameters, state_dict keys and checkpoints are unchanged
            compile_with_fallback(self.model, "the model")
        # ---- the module DDP wraps: model + objective (see TrainingStep for why the loss is inside)
        self.step_module: nn.Module = TrainingStep(self.model, self.objective)
        if self.ctx.distributed:
            # find_unused_parameters: a micro-batch (or a whole phase) may leave some parameters without gradient —
            # a path of a mixture no sample took, a head whose loss is only logged, a part frozen in this phase.
            self.step_module = DistributedDataParallel(
                self.step_module,
                device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.window = StatsWindow(self.ctx.device)
        self.update = UpdateStep(
            self.step_module,
            self.model,
            self.objective,
            self.optimizer,
            self.scheduler,
            self.ctx,
            config.optim.grad_clip,
            self.autocast_dtype,
            self.window,
        )
        self.logger: RunLogger | None = None
        self.loss_terms: dict[str, None] = {}  # the objective's loss terms seen so far, in order (for curves.svg)
        self.validations: list[dict[str, Any]] = []
        self._val_meteor: MeteorScorer | str | None = None  # the run's METEOR JVM while fit() runs
        self._phases_of_epoch: list[PhaseData] = []
        self.current_phase: Phase | None = None  # the phase of the update just made (for callbacks)
        self._window_time = time.perf_counter()

    # ------------------------------------------------------------------ construction pieces
    def _build_objective(self, objective: Any, custom_model: bool) -> Objective:
        if isinstance(objective, Objective):
            return objective
        ref = objective
        if ref is None:
            from changecap.models.registry import get_architecture

            arch = self.config.model.get("architecture")
            if arch is None and custom_model:
                raise ConfigError("model.architecture", "a model_builder without an objective needs an architecture")
            ref = get_architecture(arch).objective
        try:
            return build_objective(ref, self.config.loss, self.config)
        except ConfigError as e:
            raise with_path(e, self.config.source) from None

    def _check_validation_decoding(self) -> None:
        """``train.val_beam_size`` / ``val_max_length`` against the model's capabilities, before any training."""
        t = self.config.train
        try:
            self.model.check_decoding(Decoding(beam_size=t.val_beam_size, max_length=t.val_max_length))
        except ModelError as e:
            raise ConfigError("train.val_beam_size", str(e), path=self.config.source) from None

    def _build_data(
        self, datasets: tuple[Dataset, Dataset] | dict[str, Dataset] | None, vocab: Vocabulary | None
    ) -> tuple[Vocabulary, dict[str, Dataset], Dataset]:
        config = self.config
        if datasets is None:
            root = Path(config.data.root)
            if not root.is_dir():
                raise ConfigError("data.root", f"dataset folder {root} not found", path=config.source)
            vocab = vocab or build_vocabulary_for(config)
            train_set, val_set = build_datasets(config, vocab)
            return vocab, {"train": train_set}, val_set
        if vocab is None:
            raise ValueError("datasets given without their vocabulary")
        if isinstance(datasets, dict):
            sets = dict(datasets)
            if "train" not in sets or "val" not in sets:
                raise ValueError("a datasets mapping needs 'train' and 'val' entries")
            val_set = sets.pop("val")
            return vocab, sets, val_set
        train_set, val_set = datasets
        return vocab, {"train": train_set}, val_set

    def _epoch_phases(self, epoch: int) -> Sequence[Phase]:
        phases = tuple(self.objective.phases(epoch))
        if not phases:
            raise ValueError(f"{type(self.objective).__name__}.phases({epoch}) returned no phase")
        return phases

    def epoch_data(self, epoch: int) -> list[PhaseData]:
        """The loaders of the phases of ``epoch``, in order (each with its sampler and dataset)."""
        return self.loaders.epoch_plan(self._epoch_phases(epoch))

    # ------------------------------------------------------------------ logging
    def _log_train(self, epoch: int, phase: Phase, bar: tqdm) -> None:
        """All-reduce the window's sums (every process calls this at the same update) and log the means."""
        means = self.window.means(self.ctx)
        elapsed = max(time.perf_counter() - self._window_time, 1e-9)
        counts = dict(self.window.counts)
        info = StepInfo(epoch, phase, None, self.ctx.device, self.autocast_dtype)  # type: ignore[arg-type]
        values: dict[str, Any] = self.objective.log_line(means, self.window.weights, info)
        self.loss_terms.update(dict.fromkeys(self.window.weights))
        if len(self._phases_of_epoch) > 1:
            values["phase"] = phase.name
        for name, total in counts.items():
            values[f"{name}_per_s"] = total / elapsed
        for group in self.optimizer.param_groups:
            values[f"lr_{group.get('name', 'group')}"] = group["lr"]
        if self.prefix_caches:  # this process's frozen-feature cache: lookups answered so far, entries held
            hits = sum(c.hits for c in self.prefix_caches)
            values["feature_cache_hit_rate"] = hits / max(hits + sum(c.misses for c in self.prefix_caches), 1)
            values["feature_cache_gb"] = sum(c.bytes for c in self.prefix_caches) / 2**30
        if self.logger is not None:
            self.logger.log("train", self.progress.global_step, epoch, values)
        shown = {k: f"{v:.3f}" for k, v in values.items() if k in ("loss",) and isinstance(v, float)}
        bar.set_postfix(shown, refresh=False)
        self.window.reset()
        self._window_time = time.perf_counter()

    def draw_curves(self) -> None:
        """Rank 0: ``curves.svg`` from the run's ``metrics.jsonl`` (losses and validation per epoch)."""
        if self.logger is not None:
            write_curves(self.output_dir, list(self.loss_terms))

    # ------------------------------------------------------------------ checkpoints and model folders
    def save_checkpoint(self) -> None:
        """Collective: every process hands its RNG state to rank 0, which writes the checkpoint atomically."""
        rng = gather_objects(capture_rng_state(), self.ctx)
        if self.ctx.is_main:
            save_checkpoint(
                self.output_dir,
                self.model,
                self.optimizer,
                self.scheduler,
                self.progress,
                rng,
                self.config.to_dict(),
                self.vocab.id_to_word,
            )
        barrier(self.ctx)

    def save_model_dir(self, name: str, validation: ValidationResult | None) -> Path:
        """Write ``<output_dir>/<name>/`` (rank 0) through a temp folder, so a crash never leaves half a model."""
        final = self.output_dir / name
        if self.ctx.is_main:
            card = card_fields(
                self.config,
                kind=name,
                run_dir=self.output_dir,
                epoch=self.progress.epoch,
                global_step=self.progress.global_step,
                vocab_size=len(self.vocab),
                max_length=self.max_length,
                world_size=self.ctx.world_size,
                scores=None if validation is None else validation.scores,
            )
            tmp = make_temp_dir(final)
            try:
                self.model_saver(self.model, self.model_config, self.vocab, tmp, card)
                save_preprocess(tmp, self.train_set, self.config)
                replace_folder(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # never half a model left behind (Ctrl-C, SIGTERM included)
                raise
        barrier(self.ctx)
        return final

    # ------------------------------------------------------------------ validation
    def run_validation(self) -> ValidationResult:
        t = self.config.train
        return validate(
            unwrap(self.model),
            self.val_set,
            self.vocab,
            self.ctx,
            batch_size=t.val_batch_size,
            max_length=t.val_max_length,  # None: the model's own (its decoder's, which the data sized)
            beam_size=t.val_beam_size,
            meteor=self._val_meteor or t.val_meteor,
            autocast_dtype=self.autocast_dtype,
            collate_fn=self.collate_fn,
            num_workers=self.config.data.num_workers,
        )

    def _after_validation(self, result: ValidationResult, epoch: int) -> None:
        t, p = self.config.train, self.progress
        if t.select_metric not in result.scores:
            raise ConfigError(
                "train.select_metric",
                f"{t.select_metric!r} is not among the validation scores ({', '.join(sorted(result.scores))})",
                path=self.config.source,
            )
        value = result.scores[t.select_metric]
        improved = p.best_metric is None or value > p.best_metric
        record = {**result.scores, "change_acc": result.change_accuracy, "pairs": result.num_pairs, "best": improved}
        self.validations.append({"epoch": epoch, "step": p.global_step, **record})
        if self.logger is not None:
            self.logger.log("val", p.global_step, epoch, record)
        if self.ctx.is_main:
            tqdm.write(
                f"epoch {epoch}: val {t.select_metric} {value:.4f}"
                + (" (best)" if improved else f" (best {p.best_metric:.4f} at epoch {p.best_epoch})")
            )
        if improved:
            p.best_metric, p.best_epoch = value, epoch
            self.save_model_dir("best", result)

    # ------------------------------------------------------------------ the loop
    def _start(self) -> None:
        """Run folder, resolved config, vocabulary and log (rank 0), before the first update."""
        cfg, ctx = self.config, self.ctx
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.output_dir)  # model folders half written by a killed run
            if self.resumed_from is None:
                # A fresh run in a used folder: drop the old run's checkpoint and best model, so a crash before our
                # first checkpoint can never resume the old run, and `best/` is always this run's.
                for stale in ("checkpoint", "best"):
                    shutil.rmtree(self.output_dir / stale, ignore_errors=True)
            cfg.save(self.output_dir / "config.yaml")
            self.vocab.save(self.output_dir / "vocab.json")
            self.logger = RunLogger(
                self.output_dir,
                tensorboard=cfg.logging.tensorboard,
                resume_step=self.progress.global_step if self.resumed_from else None,
            )
        barrier(ctx)

    def _train_epoch(self, epoch: int, bar: tqdm) -> bool:
        """The epoch's phases from the current position on; ``True`` when stopped by ``train.max_steps``."""
        cfg, t, p = self.config, self.config.train, self.progress
        plan = self.epoch_data(epoch)
        self._phases_of_epoch = plan
        steps_in_epoch = self.steps_in_epoch[epoch]
        self.model.train()
        first = 0  # the update of the epoch at which the current phase starts
        for data in plan:
            phase, steps = data.phase, data.steps_per_epoch
            if p.step_in_epoch >= first + steps:
                first += steps
                continue  # resumed past this phase
            frozen = set_phase_trainable(self.model, self.trainable_ids, phase, self.param_groups)
            self.current_phase = phase
            if hasattr(data.dataset, "set_epoch"):  # a dataset with per-epoch randomness (the data layer's have it)
                data.dataset.set_epoch(epoch)  # before the iterator pickles the dataset into workers
            data.sampler.set_epoch(epoch, start_step=p.step_in_epoch - first)
            batches: Iterator[dict[str, Any]] = iter(data.loader)
            while p.step_in_epoch < first + steps:
                self.update([next(batches) for _ in range(t.grad_accum)], epoch, phase, frozen)
                p.step_in_epoch += 1
                p.global_step += 1
                bar.update(1)
                end_of_phase = p.step_in_epoch == first + steps
                end_of_epoch = p.step_in_epoch == steps_in_epoch
                if p.global_step % cfg.logging.log_every == 0 or end_of_phase:
                    self._log_train(epoch, phase, bar)
                stopped = t.max_steps is not None and p.global_step >= t.max_steps and not end_of_epoch
                due = t.checkpoint_every_steps and p.global_step % t.checkpoint_every_steps == 0
                if (due or stopped) and not end_of_epoch:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback(self)
                if stopped:
                    return True
            first += steps
        return False

    def fit(self) -> TrainResult:
        """Train from the current progress to ``train.epochs`` (or ``train.max_steps``) and return the result."""
        t, p = self.config.train, self.progress
        self._start()
        bar = tqdm(
            total=self.total_steps,
            initial=p.global_step,
            disable=not (self.ctx.is_main and self.config.logging.progress),
            dynamic_ncols=True,
            unit="step",
        )
        stopped = False
        last_validation: ValidationResult | None = None
        # one METEOR JVM for every validation round of the run, started now so its load overlaps the first epoch
        # (rank 0 scores; the other ranks never start one)
        meteor = contextlib.ExitStack()
        try:
            if t.val_every and self.ctx.is_main:
                self._val_meteor = meteor.enter_context(meteor_session(t.val_meteor))
            while p.epoch < t.epochs and not stopped:
                epoch = p.epoch
                bar.set_description(f"epoch {epoch}/{t.epochs}")
                if self._train_epoch(epoch, bar):
                    stopped = True
                    break
                # ---- end of epoch: validate, select, checkpoint (after validation, so a resume never redoes it)
                p.epoch, p.step_in_epoch = epoch + 1, 0
                if t.val_every and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs):
                    last_validation = self.run_validation()
                    self._after_validation(last_validation, epoch)
                self.save_checkpoint()
                self.draw_curves()
                stopped = t.max_steps is not None and p.global_step >= t.max_steps and p.epoch < t.epochs
            self.draw_curves()  # a run stopped by train.max_steps inside an epoch: its last lines too
            last_dir = self.save_model_dir("last", last_validation)
        finally:
            meteor.close()
            self._val_meteor = None
            bar.close()
            if self.logger is not None:
                self.logger.close()
        best_dir = self.output_dir / "best" if p.best_metric is not None else last_dir
        return TrainResult(
            output_dir=self.output_dir,
            best_dir=best_dir,
            last_dir=last_dir,
            best_metric=p.best_metric,
            best_epoch=p.best_epoch,
            select_metric=t.select_metric,
            global_step=p.global_step,
            epochs_completed=p.epoch,
            finished=not stopped,
            validations=list(self.validations),
        )


def train(config: TrainConfig, *, resume: bool | None = None, **kwargs: Any) -> TrainResult:
    """Train a model from a config (the Python API behind ``changecap train``; keyword arguments as
    :class:`Trainer`). Under torchrun every process calls this; the process group is torn down at the end, unless
    the caller initialised it (then it stays the caller's)."""
    callers_group = group_initialized()
    try:
        return Trainer(config, resume=resume, **kwargs).fit()
    finally:
        if not callers_group:
            cleanup_distributed()
