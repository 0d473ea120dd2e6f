"""The pretraining loop of ``changecap pretrain TARGET``: one loop for every foundation target.

What is trained comes from the target (``changecap.models.foundations``; the contract of a pretraining module is in
``models/foundations/target.py``); the data from ``changecap.data.pretrain_data`` (train split only). The loop:

1. reads the train split's single-date records, keeps a seeded fraction of them (by pair) out as the held-out set,
   and checks that every training image has what the target needs (captions, land-cover maps);
2. builds the target's module from its ``model`` section (identical on every process: same seed, same data);
3. trains with AdamW (``optim``), a warm-up + cosine schedule (``schedule``), gradient clipping, fp32 or bf16
   autocast; each update sums the module's named loss terms; ``metrics.jsonl`` gets a ``train`` line every
   ``logging.log_every`` updates, an ``epoch`` line with each term's mean over the epoch and an ``eval`` line per
   held-out evaluation;
4. writes the directory: the module's ``save_pretrained`` files, ``pretrain_card.json`` (data, epochs, final losses,
   held-out figures, resolved config), ``config.yaml`` and ``metrics.jsonl``, all into a temporary folder beside
   ``train.output_dir`` that is renamed into place when complete, so a crash never leaves half a foundation there.

Under ``torchrun --nproc-per-node N -m changecap pretrain TARGET cfg.yaml`` every process runs the loop on its share
of each global batch (DDP; gloo on CPU, NCCL on CUDA); rank 0 evaluates and writes. Runs are short, so there is no
checkpoint: an interrupted run is started again.

>>> from changecap.engine.pretrain import pretrain
>>> from changecap.engine.pretrain_config import load_pretrain_config
>>> result = pretrain("clip", load_pretrain_config("configs/pretrain/clip_synthcc_cpu.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from changecap.data.files import check_output_dir, make_temp_dir, remove_stale_temps, replace_folder
from changecap.data.pretrain_data import (
    CaptionDocumentDataset,
    CaptionTextDataset,
    PretrainCorpus,
    SingleDateDataset,
    caption_texts,
    collate_single_dates,
    held_out_groups,
    read_pair_captions,
    read_pretrain_corpus,
    resolve_mean_std,
)
from changecap.engine.curves import write_curves
from changecap.engine.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    init_distributed,
)
from changecap.engine.lr_schedule import build_scheduler
from changecap.engine.optim import build_optimizer
from changecap.engine.precision import PRECISIONS, autocast
from changecap.engine.pretrain_config import PretrainConfig
from changecap.engine.run_log import RunLogger
from changecap.engine.sampler import DeterministicBatchSampler
from changecap.engine.standins import StandIn, find_standins, resolve_standins
from changecap.engine.step import to_device
from changecap.engine.trainer import seed_everything
from changecap.errors import ConfigError, DataError, ModelError
from changecap.models.foundations.target import PretrainInputs, PretrainTarget, get_target
from changecap.schema import with_path
from changecap.version import __version__

CARD_FILE = "pretrain_card.json"


@dataclass
class PretrainResult:
    """What a finished (or ``max_steps``-stopped) run wrote."""

    output_dir: Path
    target: str
    updates: int
    epochs_completed: int
    seconds: float
    final_losses: dict[str, float]
    held_out: dict[str, float] | None
    losses_by_epoch: list[dict[str, float]] = field(default_factory=list)


@dataclass
class PretrainData:
    """The training and held-out datasets of a run and what the target may know of them."""

    corpus: PretrainCorpus
    train_set: Dataset
    held_out_set: Dataset | None
    inputs: PretrainInputs
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------------------- data
def build_pretrain_data(target: PretrainTarget, config: PretrainConfig) -> PretrainData:
    """Read the train split, hold a fraction out, check the target's needs, build both datasets."""
    d, seed = config.data, config.train.seed
    try:
        corpus = read_pretrain_corpus(d.root, d.source, d.split, d.captions)
    except ConfigError as e:
        raise with_path(e, config.source) from None
    for need, have in (("captions", corpus.has_captions), ("landcover", corpus.has_landcover)):
        if need in target.needs and not have:
            what = "captions" if need == "captions" else "land-cover / segmentation maps"
            missing = sum(1 for r in corpus.records if not (r.captions if need == "captions" else r.landcover_path))
            raise DataError(
                corpus.root,
                f"the {target.name} target needs {what} for every training image; {missing} of "
                f"{len(corpus.records)} have none",
            )
    held = held_out_groups((r.group for r in corpus.records), d.holdout, seed)
    records = corpus.records
    if "landcover" not in target.needs:  # maps a target does not train on are never read
        records = [dataclasses.replace(r, landcover_path=None) for r in records]
    train_records = [r for r in records if r.group not in held]
    held_records = [r for r in records if r.group in held]
    mean, std = resolve_mean_std(d.normalize)
    summary: dict[str, Any] = {
        "description": corpus.description,
        "root": str(corpus.root),
        "source": corpus.source,
        "split": "train",
        "images": len(train_records),
        "held_out_images": len(held_records),
        "held_out_fraction": d.holdout,
    }
    if target.inputs == "text":
        pairs = read_pair_captions(corpus.root) if d.pair_captions else []
        items = caption_texts(corpus.records, pairs)
        train_items = [i for i in items if i.group not in held]
        held_items = [i for i in items if i.group in held]
        summary.update(texts=len(train_items), held_out_texts=len(held_items), pair_captions=len(pairs))
        # held-out captions one per sequence either way: the card's perplexity means the same for both
        train_set: Dataset = (
            CaptionDocumentDataset(train_items, seed) if d.documents else CaptionTextDataset(train_items)
        )
        held_set: Dataset | None = CaptionTextDataset(held_items) if held_items else None
        if d.documents:
            summary.update(documents=len(train_set))  # type: ignore[arg-type]
        texts = [i.text for i in train_items]
    else:
        num_classes = None if corpus.landcover_classes is None else len(corpus.landcover_classes)

        def images(records: list, cache: bool) -> SingleDateDataset:
            return SingleDateDataset(records, d.image_size, mean, std, d.resize_mode, num_classes, seed, cache)

        train_set = images(train_records, d.cache_images)
        held_set = images(held_records, False) if held_records else None
        texts = [c for r in train_records for c in r.captions]
        summary.update(
            captions=len(texts), image_size=d.image_size, resize_mode=d.resize_mode, mean=list(mean), std=list(std),
            landcover_classes=corpus.landcover_classes,
        )  # fmt: skip
    if len(train_set) == 0:  # type: ignore[arg-type]
        raise DataError(corpus.root, "no training data left after the hold-out; lower data.holdout")
    inputs = PretrainInputs(
        texts=texts,
        image_size=d.image_size,
        resize_mode=d.resize_mode,
        mean=tuple(mean),
        std=tuple(std),
        landcover_classes=corpus.landcover_classes,
        seed=seed,
    )
    return PretrainData(corpus, train_set, held_set, inputs, summary)


# ---------------------------------------------------------------------------------------------------------- output
def _check_output(out: Path, overwrite: bool, source: str | None) -> None:
    """Before any data is read: ``out`` can be written (:func:`~changecap.data.files.check_output_dir`; nothing is
    created yet) and is new unless ``overwrite``."""
    check_output_dir(out, "train.output_dir")
    if out.exists() and not overwrite:
        raise ConfigError(
            "train.output_dir", f"{out} already exists; choose another folder or pass --overwrite", path=source
        )


class _Window:
    """Sums of the loss terms (on the device) since the last log line, and over the epoch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for name, value in terms.items():
            v = value.detach().double()
            self.sums[name] = self.sums[name] + v if name in self.sums else v
        self.steps += 1

    def means(self, ctx: DistContext) -> dict[str, float]:
        """Mean of each term over the window's updates and the processes (collective: every rank calls it)."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        total = all_reduce_sum(torch.stack([self.sums[n] for n in names]), ctx)  # [K]
        count = self.steps * ctx.world_size
        out = {n: float(v) / max(count, 1) for n, v in zip(names, total.tolist())}
        out["loss"] = sum(out[n] for n in names)
        return out

    def reset(self) -> None:
        self.sums.clear()
        self.steps = 0


# ---------------------------------------------------------------------------------------------------------- loop
class Pretrainer:
    """Builds a run from a target and a :class:`PretrainConfig`; :meth:`fit` trains and writes the directory."""

    def __init__(self, target: str, config: PretrainConfig, *, overwrite: bool = False) -> None:
        self.target = get_target(target)
        if config.target is not None and config.target != target:
            raise ConfigError(
                "target", f"the config is written for {config.target!r}, not {target!r}", path=config.source
            )
        # stand-ins the target's config names (the qformer's SAM and tokenizer) → their cache directories
        resolved = resolve_standins(dict(config.model), config.data.root, config.source)
        config = dataclasses.replace(config, model=resolved)
        self.config = config
        t = config.train
        try:
            self.model_config = self.target.read_config(config.model)
        except ConfigError as e:
            raise with_path(e, config.source) from None
        self.output_dir = Path(t.output_dir).expanduser()
        # a killed run's temporary folder goes; a folder it had moved aside comes back (then it exists, as before)
        remove_stale_temps(self.output_dir.parent, self.output_dir.name)
        self.ctx = init_distributed(t.device)
        _check_output(self.output_dir, overwrite, config.source)  # every rank: none may start when one refuses
        if t.batch_size % self.ctx.world_size:
            raise ConfigError(
                "train.batch_size",
                f"global batch {t.batch_size} is not divisible by {self.ctx.world_size} processes",
                path=config.source,
            )
        if self.ctx.device.type == "cpu":
            torch.set_flush_denormal(True)  # see Trainer: denormal Adam moments are ~10x slower on x86
        self.autocast_dtype = PRECISIONS[t.precision]
        self.data = build_pretrain_data(self.target, config)

        seed_everything(t.seed)  # identical initialisation on every process
        try:
            module = self.target.build(self.model_config, self.data.inputs)
        except ConfigError as e:
            raise with_path(e, config.source) from None
        self.module: nn.Module = module.to(self.ctx.device)
        self.sampler = DeterministicBatchSampler(
            len(self.data.train_set),  # type: ignore[arg-type]
            t.batch_size,
            self.ctx.world_size,
            self.ctx.rank,
            seed=t.seed,
            shuffle=True,
        )
        self.loader = DataLoader(
            self.data.train_set,
            batch_sampler=self.sampler,
            collate_fn=collate_single_dates,
            num_workers=config.data.num_workers,
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataError(self.data.corpus.root, f"{len(self.sampler.permutation(0))} training items do not fill one "
                            f"batch per process; lower train.batch_size")  # fmt: skip
        self.total_steps = t.epochs * self.steps_per_epoch
        self.optimizer, _ = build_optimizer(self.module, config.optim, config.source)
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.total_steps)
        seed_everything(t.seed + self.ctx.rank)  # dropout streams differ between processes
        self.step_module: nn.Module = self.module
        if self.ctx.distributed:
            self.step_module = DistributedDataParallel(
                self.module,
                device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                find_unused_parameters=True,  # a target may leave parts without gradient in some batches
            )

    # ------------------------------------------------------------------ pieces
    def _update(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        with autocast(self.ctx.device, self.autocast_dtype):
            terms = self.step_module(to_device(batch, self.ctx.device))
        if not isinstance(terms, dict) or not terms:
            raise ModelError(f"the {self.target.name} module's forward must return a non-empty dict of loss terms")
        loss = torch.stack([v.float() for v in terms.values()]).sum()
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return terms

    def held_out_batches(self) -> Iterator[dict[str, Any]]:
        """The held-out set in order, batched and on the device (rank 0 evaluates)."""
        if self.data.held_out_set is None:
            return
        loader = DataLoader(
            self.data.held_out_set,
            batch_size=self.config.train.eval_batch_size,
            shuffle=False,
            collate_fn=collate_single_dates,
        )
        for batch in loader:
            yield to_device(batch, self.ctx.device)

    def evaluate(self) -> dict[str, float] | None:
        """The module's held-out figures (rank 0; None on the other ranks or without ``evaluate``/held-out data)."""
        evaluate = getattr(self.module, "evaluate", None)  # a pretraining target's optional held-out figures
        result = None
        if self.ctx.is_main and evaluate is not None and self.data.held_out_set is not None:
            self.module.eval()
            with autocast(self.ctx.device, self.autocast_dtype):
                result = {k: float(v) for k, v in evaluate(self.held_out_batches()).items()}
            self.module.train()
        barrier(self.ctx)
        return result

    def card(self, epochs: int, updates: int, seconds: float, final: dict[str, float], held: dict | None) -> dict:
        t = self.config.train
        return {
            "target": self.target.name,
            "summary": self.target.summary,
            "loads_as": self.target.loads_as,
            "data": self.data.summary,
            "training": {
                "epochs": epochs,
                "updates": updates,
                "global_batch": t.batch_size,
                "processes": self.ctx.world_size,
                "device": self.ctx.device.type,
                "precision": t.precision,
                "seed": t.seed,
                "seconds": round(seconds, 1),
            },
            "final_losses": final,
            "held_out": held,
            "config": self.config.to_dict(),
            "changecap_version": __version__,
        }

    # ------------------------------------------------------------------ the loop
    def fit(self) -> PretrainResult:
        lg, ctx = self.config.logging, self.ctx
        tmp: Path | None = None
        logger: RunLogger | None = None
        if ctx.is_main:
            tmp = make_temp_dir(self.output_dir)
            logger = RunLogger(tmp, tensorboard=lg.tensorboard)
        try:
            result = self._fit(logger)
            if ctx.is_main:
                assert tmp is not None and logger is not None
                logger.close()
                write_curves(tmp, title=self.output_dir.name)  # its losses and held-out figures per epoch
                unwrapped = self.module
                unwrapped.save_pretrained(tmp)  # type: ignore[operator]
                card = self.card(result.epochs_completed, result.updates, result.seconds, result.final_losses,
                                 result.held_out)  # fmt: skip
                (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
                (tmp / "config.yaml").write_text(self.config.to_yaml(), encoding="utf-8")
                replace_folder(tmp, self.output_dir)
            barrier(ctx)
            return result
        finally:
            if logger is not None:
                logger.close()
            if ctx.is_main and tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)  # a failed run leaves nothing behind

    def _fit(self, logger: RunLogger | None) -> PretrainResult:
        t, lg, ctx = self.config.train, self.config.logging, self.ctx
        window, epoch_window = _Window(ctx.device), _Window(ctx.device)
        bar = tqdm(total=self.total_steps, disable=not (ctx.is_main and lg.progress), dynamic_ncols=True, unit="step")
        step, epochs_done = 0, 0
        by_epoch: list[dict[str, float]] = []
        held: dict[str, float] | None = None
        start = time.perf_counter()
        window_start = start
        self.module.train()
        try:
            for epoch in range(t.epochs):
                bar.set_description(f"{self.target.name} epoch {epoch}/{t.epochs}")
                if hasattr(self.data.train_set, "set_epoch"):  # a dataset with per-epoch randomness
                    self.data.train_set.set_epoch(epoch)
                self.sampler.set_epoch(epoch)
                stopped = False
                for batch in self.loader:
                    terms = self._update(batch)
                    window.add(terms)
                    epoch_window.add(terms)
                    step += 1
                    bar.update(1)
                    stopped = t.max_steps is not None and step >= t.max_steps
                    if step % lg.log_every == 0 or step % self.steps_per_epoch == 0 or stopped:
                        means = window.means(ctx)
                        now = time.perf_counter()
                        values = {**means, "lr": self.optimizer.param_groups[0]["lr"],
                                  "updates_per_s": window.steps / max(now - window_start, 1e-9)}  # fmt: skip
                        if logger is not None:
                            logger.log("train", step, epoch, values)
                        bar.set_postfix({"loss": f"{means['loss']:.3f}"}, refresh=False)
                        window.reset()
                        window_start = now
                    if stopped:
                        break
                means = epoch_window.means(ctx)
                epoch_window.reset()
                by_epoch.append(means)
                epochs_done = epoch + 1
                if logger is not None:
                    logger.log("epoch", step, epoch, {**means, "seconds": time.perf_counter() - start})
                last = stopped or epoch + 1 == t.epochs
                if last or (t.eval_every and (epoch + 1) % t.eval_every == 0):
                    held = self.evaluate()
                    if held is not None and logger is not None:
                        logger.log("eval", step, epoch, held)
                if stopped:
                    break
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        return PretrainResult(
            output_dir=self.output_dir,
            target=self.target.name,
            updates=step,
            epochs_completed=epochs_done,
            seconds=seconds,
            final_losses=by_epoch[-1] if by_epoch else {},
            held_out=held,
            losses_by_epoch=by_epoch,
        )


def pretrain(target: str, config: PretrainConfig, *, overwrite: bool = False) -> PretrainResult:
    """Pretrain foundation ``target`` from ``config`` and write its directory (the Python API behind
    ``changecap pretrain``). Under torchrun every process calls this; the process group is torn down at the end."""
    try:
        return Pretrainer(target, config, overwrite=overwrite).fit()
    finally:
        cleanup_distributed()


def build_standins(
    section: Any,
    data_root: str | os.PathLike[str],
    source: str | os.PathLike[str] | None,
    prefix: str = "model",
    log: Any = print,
) -> list[StandIn]:
    """Build every stand-in ``section`` names that is not in the cache yet (dependencies first); return them all.
    Reuses the built ones; each build is an ordinary ``changecap pretrain`` run writing into the cache."""
    from changecap.engine.pretrain_config import load_pretrain_config

    plans = find_standins(section, data_root, source, prefix)
    done: set[Path] = set()
    for plan in plans:
        for need in plan.walk():
            if need.directory in done:
                continue
            done.add(need.directory)
            if need.built:
                log(f"stand-in {need.target}: reusing {need.directory}")
                continue
            log(f"stand-in {need.target}: building {need.directory} ({need.command()})")
            overrides = [*need.overrides, f"train.output_dir={json.dumps(str(need.directory))}"]
            pretrain(need.target, load_pretrain_config(need.config_path, overrides), overwrite=True)
    return plans
