"""The model folders of a run (``best/``, ``last/``): model card fields and ``preprocess.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from changecap.engine.config import TrainConfig

OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW"}


def card_fields(
    config: TrainConfig,
    *,
    kind: str,
    run_dir: Path,
    epoch: int,
    global_step: int,
    vocab_size: int,
    max_length: int,
    world_size: int,
    scores: dict[str, float] | None,
) -> dict[str, Any]:
    """Model card fields in ``changecap.models.io.model_card``'s vocabulary (title, training data, metrics, …)."""
    d, t, o = config.data, config.train, config.optim
    vocab_rule = (
        f"file {d.vocab.path}"
        if d.vocab.path
        else f"built from the {d.vocab.splits} split(s), count {'>' if d.vocab.rule == 'gt' else '>='} "
        f"{'format default' if d.vocab.threshold is None else d.vocab.threshold}"
    )
    no_change = "unchanged captions canonicalised" if d.canonicalize_no_change else "captions as annotated"
    decoding = "greedy" if t.val_beam_size == 1 else f"beam {t.val_beam_size}"
    group_lr = "".join(f", {g} lr {lr}" for g, lr in o.group_lr.items())
    return {
        "title": f"changecap {config.model.get('architecture', 'captioner')} ({kind} of run {run_dir.name})",
        "description": (
            f"The {'best validation' if kind == 'best' else 'last'} model of a changecap training run "
            f"(epoch {epoch}, {global_step} updates of a global batch of {t.batch_size})."
        ),
        "training_data": (
            f"{d.format} dataset at {d.root}: train split ({d.sampling} sampling, {no_change}, "
            f"augmentation {'on' if d.augment else 'off'}); "
            f"vocabulary of {vocab_size} entries ({vocab_rule}); "
            f"images {d.image_size or 'native'} px, resize {d.resize_mode}, normalisation {d.normalize}; "
            f"captions up to {max_length} tokens."
        ),
        "metrics": None if scores is None else {k: round(v, 6) for k, v in scores.items()},
        "protocol": (
            f"{t.val_split} split, {decoding} decoding (at most {t.val_max_length or max_length} tokens), "
            f"rsicc protocol (vocabulary id strings, <UNK> kept), METEOR {t.val_meteor}; "
            f"model selected on {t.select_metric}."
        ),
        "training": (
            f"{OPTIMIZER_NAMES[o.name]} lr {o.lr}{group_lr}, {config.schedule.name} "
            f"schedule, {t.epochs} epochs, precision {t.precision}, {world_size} process(es) × grad_accum "
            f"{t.grad_accum}, seed {t.seed}; resolved config in {run_dir / 'config.yaml'}"
        ),
    }


def save_preprocess(folder: Path, train_set: Dataset, config: TrainConfig) -> None:
    """``preprocess.json``: how the predictor must prepare images for this model (the training pipeline)."""
    # the data layer's datasets know their normalisation and size; one a caller brings may not
    mean, std = getattr(train_set, "mean", None), getattr(train_set, "std", None)
    size = getattr(train_set, "image_size", None) or config.data.image_size
    if mean is None or std is None or size is None:
        return  # a custom dataset without those attributes: the predictor falls back to its defaults
    from changecap.models.preprocess import PreprocessConfig

    folder.mkdir(parents=True, exist_ok=True)
    PreprocessConfig(image_size=int(size), resize_mode=config.data.resize_mode, mean=mean, std=std).save(folder)
