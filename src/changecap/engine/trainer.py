"""The training loop: data, model, Adam, LR schedule, DDP, accumulation, validation, checkpoints.

Plain PyTorch, readable top to bottom (nanoGPT style). One optimiser update is:

1. fetch this process's ``grad_accum`` micro-batches of the global batch (``DeterministicBatchSampler``);
2. all-reduce the number of target tokens and samples of the global batch (loss normalisers, see
   ``objectives.py``);
3. forward + backward each micro-batch, under ``no_sync()`` for all but the last so DDP all-reduces once;
4. clip (optional), ``optimizer.step()``, ``scheduler.step()``.

Launch with ``python -m changecap train cfg.yaml`` (one process) or
``torchrun --nproc-per-node N -m changecap train cfg.yaml`` (DDP; gloo on CPU, NCCL on CUDA).

Exact resume: a checkpoint holds weights, optimiser, scheduler, every process's RNG states and the sampler
position (epoch, update within the epoch). The data order is a pure function of ``(seed, epoch)`` and each sample a
pure function of ``(seed, epoch, index)``; the DataLoader gets its own generator so creating an iterator never
consumes the global RNG. A run interrupted anywhere and resumed ends with the same weights, bit for bit, as an
uninterrupted one (CPU; on GPU up to the non-determinism of the kernels unless ``train.deterministic``).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from changecap.data.vocab import NULL_ID, Vocabulary
from changecap.engine.checkpoint import (
    Checkpoint,
    TrainProgress,
    capture_rng_state,
    load_checkpoint,
    load_weights,
    restore_rng_state,
    save_checkpoint,
    unwrap,
)
from changecap.engine.config import TrainConfig, _normalize_value
from changecap.engine.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    gather_objects,
    init_distributed,
)
from changecap.engine.lr_schedule import build_scheduler
from changecap.engine.objectives import EpochPlan, GlobalCounts, TrainingStep, plan_epoch
from changecap.engine.precision import PRECISIONS
from changecap.engine.run_log import RunLogger
from changecap.engine.sampler import DeterministicBatchSampler
from changecap.engine.validation import ValidationResult, validate
from changecap.errors import ConfigError, ModelError

# (model section, vocabulary, max_length) → (model, model config object handed back to the saver)
ModelBuilder = Callable[[dict[str, Any], Vocabulary, int], tuple[nn.Module, Any]]
# (model, model config, vocabulary, target folder, model card) → None
ModelSaver = Callable[[nn.Module, Any, Vocabulary, Path, dict[str, Any]], None]
Callback = Callable[["Trainer"], None]

# Config fields whose change between an interrupted run and its resumption does not alter the computation.
_RESUME_NEUTRAL = (
    "data.num_workers",
    "train.max_steps",
    "train.output_dir",
    "train.checkpoint_every_steps",
    "train.val_batch_size",
    "logging.",
)


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


def count_target_tokens(target: torch.Tensor) -> int:
    """Target tokens scored by the caption loss: positions 1.. that are not ``<NULL>`` (see ``objectives``)."""
    return int((target[:, 1:] != NULL_ID).sum())


def build_vocabulary_for(config: TrainConfig) -> Vocabulary:
    """The run's vocabulary: ``data.vocab.path`` when given, else built from the dataset's captions."""
    from changecap.data.datasets import build_vocabulary

    v = config.data.vocab
    if v.path:
        return Vocabulary.load(v.path)
    return build_vocabulary(config.data.root, config.data.format, splits=v.splits, threshold=v.threshold, rule=v.rule)


def resolve_max_length(config: TrainConfig) -> int | None:
    """``data.max_length``, with ``auto`` = the longest caption over all splits + 2 (``<START>``/``<END>``)."""
    if config.data.max_length != "auto":
        return config.data.max_length  # type: ignore[return-value]
    from changecap.data.annotations import parse_annotations
    from changecap.data.text import tokenize

    records = parse_annotations(config.data.root, config.data.format, check_files=False)
    return 2 + max((len(tokenize(c)) for r in records for c in r.captions), default=0)


def build_datasets(config: TrainConfig, vocab: Vocabulary) -> tuple[Dataset, Dataset]:
    """Train split (canonicalised, augmented as configured) and the validation split (references untouched)."""
    from changecap.data.datasets import open_dataset

    d, t = config.data, config.train
    common: dict[str, Any] = {
        "vocab": vocab,
        "max_length": resolve_max_length(config),
        "image_size": d.image_size,
        "normalize": _normalize_value(d.normalize),
        "resize_mode": d.resize_mode,
        "seed": t.seed,
    }
    train_set = open_dataset(
        d.root,
        d.format,
        "train",
        sampling=d.sampling,
        canonicalize_no_change=d.canonicalize_no_change,
        augment=d.augment,
        **common,
    )
    val_set = open_dataset(d.root, d.format, t.val_split, sampling="random", **common)
    return train_set, val_set


def default_model_builder(section: dict[str, Any], vocab: Vocabulary, max_length: int) -> tuple[nn.Module, Any]:
    """``ModelConfig.from_dict(model section)`` → ``build_model``.

    The decoder's ``vocab_size`` and ``max_length`` come from the data when the config leaves them out; a value
    that contradicts the data is a ConfigError naming the field.
    """
    from changecap.models.config import ModelConfig, build_model

    model_config = ModelConfig.from_dict(with_data_sizes(section, len(vocab), max_length), prefix="model")
    model = build_model(model_config)
    return model, model.config


def with_data_sizes(section: dict[str, Any], vocab_size: int, max_length: int) -> dict[str, Any]:
    """A copy of the model section whose ``decoder`` has the data's vocabulary size and caption length."""
    section = dict(section)
    decoder = section.get("decoder")
    if not isinstance(decoder, dict):
        return section  # ModelConfig.from_dict reports the missing / malformed decoder section
    decoder = dict(decoder)
    given = decoder.get("vocab_size")
    if given is not None and given != vocab_size:
        raise ConfigError("model.decoder.vocab_size", f"is {given} but the vocabulary has {vocab_size} entries")
    decoder["vocab_size"] = vocab_size
    given = decoder.get("max_length")
    if isinstance(given, int) and given < max_length:
        raise ConfigError("model.decoder.max_length", f"is {given}, shorter than the data's captions ({max_length})")
    decoder.setdefault("max_length", max_length)
    section["decoder"] = decoder
    return section


def default_model_saver(model: nn.Module, model_config: Any, vocab: Vocabulary, out_dir: Path, card: dict) -> None:
    from changecap.models.io import save_model

    save_model(model, model_config, vocab, out_dir, card=card)


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """One Adam group per model part (``encoder`` / ``fusion`` / ``decoder``, then anything else), trainable only."""
    o = config.optim
    seen: set[int] = set()
    groups: list[dict[str, Any]] = []
    for name in ("encoder", "fusion", "decoder", "other"):
        if name == "other":
            params = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
            lr = o.lr
        else:
            sub = getattr(model, name, None)
            if not isinstance(sub, nn.Module):
                continue
            params = [p for p in sub.parameters() if p.requires_grad and id(p) not in seen]
            override = getattr(o, f"{name}_lr")
            lr = o.lr if override is None else override
        seen.update(id(p) for p in params)
        if params:
            groups.append({"name": name, "params": params, "lr": lr})
    if not groups:
        raise ConfigError("model", "the model has no trainable parameters")
    return groups


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a fully written folder into place (rename is atomic; the old one is removed afterwards)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig` and runs it with :meth:`fit`.

    The keyword arguments replace parts built from the config (tests, scripts with their own model or data):
    ``model_builder`` / ``model_saver`` (default: ``changecap.models``), ``datasets`` (train, val) with ``vocab``,
    ``callbacks`` called after every optimiser update with the trainer. ``resume``: ``None`` resumes when
    ``<output_dir>/checkpoint/`` holds a checkpoint, ``True`` requires one, ``False`` starts afresh (and replaces
    an existing checkpoint).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        resume: bool | None = None,
        model_builder: ModelBuilder | None = None,
        model_saver: ModelSaver | None = None,
        datasets: tuple[Dataset, Dataset] | None = None,
        vocab: Vocabulary | None = None,
        callbacks: Sequence[Callback] = (),
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> None:
        from changecap.data.collate import collate_pairs

        self.config = config
        t = config.train
        self.ctx: DistContext = init_distributed(t.device)
        set_deterministic(t.deterministic)
        if self.ctx.device.type == "cpu":
            # Adam's second moments of tiny gradients (and activations of a randomly initialised ViT) fall into the
            # denormal range, where x86 arithmetic is ~10× slower: measured 2–7 s vs 0.26 s per fp32 update of
            # configs/hisem_synthcc_cpu.yaml. Values below 1.2e-38 carry nothing a model can use, so flush them
            # (process-wide setting; bf16 autocast mostly avoids them anyway).
            torch.set_flush_denormal(True)
        self.output_dir = Path(t.output_dir)
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

        # ---- data and vocabulary
        if datasets is None:
            root = Path(config.data.root)
            if not root.is_dir():
                raise ConfigError("data.root", f"dataset folder {root} not found", path=config.source)
            self.vocab = vocab or build_vocabulary_for(config)
            self.train_set, self.val_set = build_datasets(config, self.vocab)
        else:
            if vocab is None:
                raise ValueError("datasets given without their vocabulary")
            self.vocab, (self.train_set, self.val_set) = vocab, datasets
        if checkpoint is not None and checkpoint.vocab != self.vocab.id_to_word:
            raise ModelError(
                f"{checkpoint.path}: the vocabulary ({len(self.vocab)} words) does not match the resumed checkpoint's "
                f"({len(checkpoint.vocab)} words); use the same data.vocab settings or a new train.output_dir"
            )
        self.max_length = int(getattr(self.train_set, "max_length", 0) or resolve_max_length(config) or 41)
        self.sampler = DeterministicBatchSampler(
            len(self.train_set),  # type: ignore[arg-type]
            t.batch_size,
            world_size=self.ctx.world_size,
            rank=self.ctx.rank,
            grad_accum=t.grad_accum,
            seed=t.seed,
            shuffle=True,
            drop_last=t.drop_last,
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                "train.batch_size",
                f"the train split has {len(self.train_set)} items, too few for one update "  # type: ignore[arg-type]
                f"with {self.ctx.world_size} process(es) × grad_accum {t.grad_accum}",
                path=config.source,
            )
        self.total_steps = self.steps_per_epoch * t.epochs
        self.loader = DataLoader(
            self.train_set,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=config.data.num_workers,
            pin_memory=self.ctx.device.type == "cuda",
            # A private generator: creating an iterator must not draw from the global RNG, or a run resumed
            # mid-epoch would see different dropout masks from an uninterrupted one.
            generator=torch.Generator().manual_seed(t.seed),
        )

        # ---- model (identical initialisation on every process), optimiser, schedule
        seed_everything(t.seed)
        builder = model_builder or default_model_builder
        self.model, self.model_config = builder(dict(config.model), self.vocab, self.max_length)
        self.model.to(self.ctx.device)
        self.optimizer = torch.optim.Adam(
            param_groups(self.model, config),
            lr=config.optim.lr,
            betas=config.optim.betas,
            eps=config.optim.eps,
            weight_decay=config.optim.weight_decay,
        )
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.total_steps)
        # Dropout streams: one per process (nanoGPT's seed offset), so ranks do not share masks.
        seed_everything(t.seed + self.ctx.rank)

        self.progress = TrainProgress()
        if checkpoint is not None:
            self._restore(checkpoint)

        # ---- the module DDP wraps: model + loss (see TrainingStep for why the loss is inside)
        self.step_module: nn.Module = TrainingStep(self.model)
        if self.ctx.distributed:
            # find_unused_parameters: hard routing sends each sample through ONE of the two HASD paths, so in a
            # micro-batch with only unchanged (or only changed) pairs the other path's parameters get no gradient;
            # the router gets none during its warm-up either. DDP must be told to expect that.
            self.step_module = DistributedDataParallel(
                self.step_module,
                device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                find_unused_parameters=True,
            )

        self.logger: RunLogger | None = None
        self.validations: list[dict[str, Any]] = []
        # Training statistics since the last log line, kept on the device (no host sync per update).
        self._window = torch.zeros(7, dtype=torch.float64, device=self.ctx.device)
        self._window_time = time.perf_counter()

    # ------------------------------------------------------------------ resume
    def _restore(self, ckpt: Checkpoint) -> None:
        """Load weights, optimiser, scheduler, progress and this process's RNG streams from a checkpoint."""
        t = self.config.train
        old = ckpt.config.get("train", {})
        if ckpt.progress.step_in_epoch and old.get("batch_size") != t.batch_size:
            raise ConfigError(
                "train.batch_size",
                f"is {t.batch_size} but the checkpoint {ckpt.path} was written mid-epoch with {old.get('batch_size')}",
                path=self.config.source,
            )
        load_weights(self.model, ckpt.weights, self.ctx.device)
        try:
            self.optimizer.load_state_dict(ckpt.optimizer)
        except (ValueError, KeyError) as e:
            raise ModelError(f"{ckpt.path}: optimiser state does not fit the model ({e})") from None
        self.scheduler.load_state_dict(ckpt.scheduler)
        self.progress = ckpt.progress
        if self.ctx.rank < len(ckpt.rng) and len(ckpt.rng) == self.ctx.world_size:
            restore_rng_state(ckpt.rng[self.ctx.rank])
        elif self.ctx.is_main:
            print(
                f"warning: checkpoint written by {len(ckpt.rng)} process(es), resuming with {self.ctx.world_size}: "
                "random streams restart from the seed (the run is no longer bit-identical)",
                file=sys.stderr,
            )
        if self.ctx.is_main:
            print(
                f"resuming from {ckpt.path} (update {self.progress.global_step}, epoch {self.progress.epoch}, "
                f"{self.progress.step_in_epoch} update(s) into it)",
                file=sys.stderr,
            )
            now, before = _flatten(self.config.to_dict()), _flatten(ckpt.config)
            changed = sorted(
                k for k in set(now) | set(before) if now.get(k) != before.get(k) and not k.startswith(_RESUME_NEUTRAL)
            )
            if changed:
                print(f"warning: resuming with changed config fields: {', '.join(changed)}", file=sys.stderr)

    # ------------------------------------------------------------------ one update
    def _fetch(self, it: Iterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return [next(it) for _ in range(self.config.train.grad_accum)]

    def train_step(self, micro_batches: list[dict[str, Any]], plan: EpochPlan) -> None:
        """One optimiser update from this process's micro-batches (module docstring, steps 2–4)."""
        t, ctx = self.config.train, self.ctx
        tokens = sum(count_target_tokens(b["target"]) for b in micro_batches)
        local = torch.tensor(
            [tokens, sum(len(b["target"]) for b in micro_batches)],
            dtype=torch.float64,
            device=ctx.device,
        )
        n_tokens, n_samples = all_reduce_sum(local, ctx).tolist()
        counts = GlobalCounts(
            tokens=max(n_tokens, 1.0), samples=n_samples, world_size=ctx.world_size, grad_accum=t.grad_accum
        )
        stats = torch.zeros(7, dtype=torch.float64, device=ctx.device)
        for j, batch in enumerate(micro_batches):
            last = j == len(micro_batches) - 1
            # Accumulate locally; DDP all-reduces the summed gradients once, in the last backward.
            sync = contextlib.nullcontext() if last or not ctx.distributed else self.step_module.no_sync()
            with sync:
                terms = self.step_module(
                    batch["image"].to(ctx.device, non_blocking=True),
                    batch["target"].to(ctx.device, non_blocking=True),
                    batch["changed"].to(ctx.device, non_blocking=True),
                    plan,
                    counts,
                    self.autocast_dtype,
                )
                terms.loss.backward()
            stats += torch.stack(
                [
                    terms.caption_ce_sum.double(),
                    terms.tokens.double(),
                    terms.router_ce_sum.double(),
                    terms.router_correct.double(),
                    terms.samples.double(),
                    terms.aux.double(),
                    torch.ones((), dtype=torch.float64, device=ctx.device),
                ]
            )
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._window += stats

    # ------------------------------------------------------------------ logging
    def _log_train(self, plan: EpochPlan, bar: tqdm) -> None:
        """All-reduce the window's sums (every process calls this at the same update) and log the means."""
        window = all_reduce_sum(self._window.clone(), self.ctx).cpu()
        ce, tok, r_ce, r_ok, n, aux, micro = window.tolist()
        elapsed = max(time.perf_counter() - self._window_time, 1e-9)
        values: dict[str, Any] = {
            "caption_ce": ce / max(tok, 1.0),
            "router_ce": r_ce / max(n, 1.0),
            "router_acc": r_ok / max(n, 1.0),
            "aux": aux / max(micro, 1.0),
            "router_weight": plan.router_weight,
            "gt_routing": plan.gt_routing,
            "samples_per_s": n / elapsed,
            "tokens_per_s": tok / elapsed,
        }
        values["loss"] = (
            values["caption_ce"] + plan.router_weight * values["router_ce"] + plan.aux_weight * values["aux"]
        )
        for group in self.optimizer.param_groups:
            values[f"lr_{group.get('name', 'group')}"] = group["lr"]
        if self.logger is not None:
            self.logger.log("train", self.progress.global_step, plan.epoch, values)
        bar.set_postfix(loss=f"{values['loss']:.3f}", ce=f"{values['caption_ce']:.3f}", refresh=False)
        self._window.zero_()
        self._window_time = time.perf_counter()

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

    def _model_card(self, kind: str, validation: ValidationResult | None) -> dict[str, Any]:
        """Model card fields in ``changecap.models.io.model_card``'s vocabulary (title, training data, metrics, …)."""
        d, t, p = self.config.data, self.config.train, self.progress
        vocab_rule = (
            f"file {d.vocab.path}"
            if d.vocab.path
            else f"built from the {d.vocab.splits} split(s), count {'>' if d.vocab.rule == 'gt' else '>='} "
            f"{'format default' if d.vocab.threshold is None else d.vocab.threshold}"
        )
        no_change = "unchanged captions canonicalised" if d.canonicalize_no_change else "captions as annotated"
        decoding = "greedy" if t.val_beam_size == 1 else f"beam {t.val_beam_size}"
        return {
            "title": f"changecap {self.config.model.get('architecture', 'captioner')} ({kind} of run "
            f"{self.output_dir.name})",
            "description": (
                f"The {'best validation' if kind == 'best' else 'last'} model of a changecap training run "
                f"(epoch {p.epoch}, {p.global_step} updates of a global batch of {t.batch_size})."
            ),
            "training_data": (
                f"{d.format} dataset at {d.root}: train split ({d.sampling} sampling, {no_change}, "
                f"augmentation {'on' if d.augment else 'off'}); "
                f"vocabulary of {len(self.vocab)} entries ({vocab_rule}); "
                f"images {d.image_size or 'native'} px, resize {d.resize_mode}, normalisation {d.normalize}; "
                f"captions up to {self.max_length} tokens."
            ),
            "metrics": None if validation is None else {k: round(v, 6) for k, v in validation.scores.items()},
            "protocol": (
                f"{t.val_split} split, {decoding} decoding (at most {t.val_max_length or self.max_length} tokens), "
                f"rsicc protocol (vocabulary id strings, <UNK> kept), METEOR {t.val_meteor}; "
                f"model selected on {t.select_metric}."
            ),
            "training": (
                f"Adam lr {self.config.optim.lr}, {self.config.schedule.name} schedule, {t.epochs} epochs, "
                f"precision {t.precision}, {self.ctx.world_size} process(es) × grad_accum {t.grad_accum}, "
                f"seed {t.seed}; resolved config in {self.output_dir / 'config.yaml'}"
            ),
        }

    def save_model_dir(self, name: str, validation: ValidationResult | None) -> Path:
        """Write ``<output_dir>/<name>/`` (rank 0) through a temp folder, so a crash never leaves half a model."""
        final = self.output_dir / name
        if self.ctx.is_main:
            tmp = self.output_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            self.model_saver(self.model, self.model_config, self.vocab, tmp, self._model_card(name, validation))
            self._save_preprocess(tmp)
            _replace_dir(tmp, final)
        barrier(self.ctx)
        return final

    def _save_preprocess(self, folder: Path) -> None:
        """``preprocess.json``: how the predictor must prepare images for this model (the training pipeline)."""
        mean, std = getattr(self.train_set, "mean", None), getattr(self.train_set, "std", None)
        size = getattr(self.train_set, "image_size", None) or self.config.data.image_size
        if mean is None or std is None or size is None:
            return  # a custom dataset without those attributes: the predictor falls back to its defaults
        from changecap.inference.preprocess import PreprocessConfig

        folder.mkdir(parents=True, exist_ok=True)
        PreprocessConfig(image_size=int(size), resize_mode=self.config.data.resize_mode, mean=mean, std=std).save(
            folder
        )

    # ------------------------------------------------------------------ validation
    def run_validation(self) -> ValidationResult:
        t = self.config.train
        return validate(
            unwrap(self.model),
            self.val_set,
            self.vocab,
            self.ctx,
            batch_size=t.val_batch_size,
            max_length=t.val_max_length or self.max_length,
            beam_size=t.val_beam_size,
            meteor=t.val_meteor,
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
        record = {**result.scores, "router_acc": result.router_accuracy, "pairs": result.num_pairs, "best": improved}
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
    def fit(self) -> TrainResult:
        """Train from the current progress to ``train.epochs`` (or ``train.max_steps``) and return the result."""
        cfg, t, p, ctx = self.config, self.config.train, self.progress, self.ctx
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
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
                resume_step=p.global_step if self.resumed_from else None,
            )
        barrier(ctx)
        bar = tqdm(
            total=self.total_steps,
            initial=p.global_step,
            disable=not (ctx.is_main and cfg.logging.progress),
            dynamic_ncols=True,
            unit="step",
        )
        stopped = False
        last_validation: ValidationResult | None = None
        try:
            while p.epoch < t.epochs and not stopped:
                epoch = p.epoch
                plan = plan_epoch(cfg, epoch)
                self.model.train()
                if hasattr(self.train_set, "set_epoch"):
                    self.train_set.set_epoch(epoch)  # before the iterator pickles the dataset into workers
                self.sampler.set_epoch(epoch, start_step=p.step_in_epoch)
                bar.set_description(f"epoch {epoch}/{t.epochs}")
                batches = iter(self.loader)
                while p.step_in_epoch < self.steps_per_epoch:
                    self.train_step(self._fetch(batches), plan)
                    p.step_in_epoch += 1
                    p.global_step += 1
                    bar.update(1)
                    if p.global_step % cfg.logging.log_every == 0 or p.step_in_epoch == self.steps_per_epoch:
                        self._log_train(plan, bar)
                    end_of_epoch = p.step_in_epoch == self.steps_per_epoch
                    stopped = t.max_steps is not None and p.global_step >= t.max_steps and not end_of_epoch
                    due = t.checkpoint_every_steps and p.global_step % t.checkpoint_every_steps == 0
                    if (due or stopped) and not end_of_epoch:
                        self.save_checkpoint()
                    for callback in self.callbacks:
                        callback(self)
                    if stopped:
                        break
                if stopped:
                    break
                # ---- end of epoch: validate, select, checkpoint (after validation, so a resume never redoes it)
                p.epoch, p.step_in_epoch = epoch + 1, 0
                if t.val_every and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs):
                    last_validation = self.run_validation()
                    self._after_validation(last_validation, epoch)
                self.save_checkpoint()
                stopped = t.max_steps is not None and p.global_step >= t.max_steps and p.epoch < t.epochs
            last_dir = self.save_model_dir("last", last_validation)
        finally:
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
    :class:`Trainer`). Under torchrun every process calls this; the process group is torn down at the end."""
    try:
        return Trainer(config, resume=resume, **kwargs).fit()
    finally:
        cleanup_distributed()
