"""The DFM objective (``docs/dfm.md``): L = λ_1 · L_cap + λ_2 · L_TGCL.

* ``L_cap``: the caption decoder's token cross-entropy under teacher forcing, an exact mean over the target tokens of
  the global batch (``base.py``).
* ``L_TGCL``: :func:`~changecap.models.dfm.tgcl_loss` over the [CLS] differences v and the projected embeddings u of
  the caption sampled for L_cap in the same step, gated by the ground-truth change flag (``gate: false`` — every pair
  an anchor — is the paper's "without masking" ablation). Under DDP, v, u, the flags and the caption embeddings are
  all-gathered with gradients, so the similarity matrix covers the global micro-batch as one process would see it.
  The loss is defined per forward pass (a per-pass term: ``base.py`` averages it over the k accumulation
  micro-batches; the all-gather's backward sums each slice's gradient over the W processes and DDP divides by W).

Caption embeddings come from a frozen sentence encoder (all-mpnet-base-v2 by default) through
:class:`~changecap.models.dfm.text.CaptionEmbeddings`: every training caption — canonicalised as the dataset serves
it, and its flipped forms when augmentation is on — is encoded once before the first update (rank 0; the others read
the cache file it writes), so training never re-encodes. One phase per epoch over the pairs that have captions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from changecap.engine.distributed import all_gather_with_grad, barrier
from changecap.engine.objectives.base import (
    LossTerm,
    Objective,
    ObjectiveOutput,
    Phase,
    StepInfo,
    caption_ce_sum,
    count_target_tokens,
)
from changecap.engine.objectives.filters import pairs_with_captions
from changecap.models.dfm.text import DEFAULT_SENTENCE_MODEL, CaptionEmbeddings
from changecap.models.dfm.tgcl import tgcl_loss
from changecap.schema import require


@dataclass
class DFMLossConfig:
    """The ``loss`` section of a DFM run (the weights are reconstructed: λ_1 = 1, λ_2 = 0.5)."""

    caption_weight: float = 1.0  # λ_1
    tgcl_weight: float = 0.5  # λ_2 (0: no TGCL, the "without TGCL" ablation; no sentence encoder is loaded)
    gate: bool = True  # exclude no-change pairs as anchors (false: plain symmetric InfoNCE, every pair an anchor)
    false_negative: Literal["none", "fne", "fna"] = "none"  # identical captions in a batch: keep / drop / attract
    fn_threshold: float = 0.999  # cosine of two caption embeddings at or above which they count as the same caption
    sentence_model: str = DEFAULT_SENTENCE_MODEL  # Hub id or local sentence-transformers folder (frozen)
    embedding_cache: str | None = None  # folder of the on-disk embedding cache (default ~/.cache/changecap/...)
    embedding_batch_size: int = 64

    def validate(self, prefix: str = "loss") -> None:
        require(self.caption_weight >= 0, f"{prefix}.caption_weight", f"must be >= 0, got {self.caption_weight}")
        require(self.tgcl_weight >= 0, f"{prefix}.tgcl_weight", f"must be >= 0, got {self.tgcl_weight}")
        require(self.false_negative in ("none", "fne", "fna"), f"{prefix}.false_negative",
                f"must be none, fne or fna, got {self.false_negative!r}")  # fmt: skip
        require(-1.0 <= self.fn_threshold <= 1.0, f"{prefix}.fn_threshold", "a cosine similarity, in [-1, 1]")
        require(self.embedding_batch_size >= 1, f"{prefix}.embedding_batch_size", "must be >= 1")
        both_zero = self.caption_weight == 0 and self.tgcl_weight == 0
        require(not both_zero, f"{prefix}.caption_weight", "and loss.tgcl_weight are both 0: nothing would train")


def training_caption_texts(datasets: Mapping[str, Dataset]) -> list[str]:
    """Every caption text a training sample can carry: each pair's captions as the dataset serves them
    (canonicalised when configured) and, with augmentation on, their flipped forms."""
    from changecap.data.augment import flip_caption

    texts: list[str] = []
    stack = list(datasets.values())
    while stack:
        ds = stack.pop(0)
        parts = getattr(ds, "parts", None)
        if parts is not None:  # a MixedDataset
            stack.extend(parts)
            continue
        captions_of = getattr(ds, "captions_of", None)
        if captions_of is None:
            continue  # a custom dataset: its captions are encoded when first met
        flips = [(True, False), (False, True), (True, True)] if getattr(ds, "augment", False) else []
        for pair in range(len(ds.records)):  # type: ignore[attr-defined]
            for caption in captions_of(pair):
                texts.append(caption)
                texts += [flip_caption(caption, h, v) for h, v in flips]
    return list(dict.fromkeys(t for t in texts if t))


class DFMObjective(Objective):
    """Caption CE + gated contrastive loss (module docstring)."""

    config_class = DFMLossConfig
    _PHASES = (Phase("caption", filter=pairs_with_captions),)

    def __init__(
        self, config: DFMLossConfig | None = None, train_config: Any = None, embeddings: CaptionEmbeddings | None = None
    ) -> None:
        super().__init__(config or DFMLossConfig(), train_config)
        self._embeddings = embeddings
        self._text_width: int | None = None  # the model's text projection input (model.text_dim), from bind()

    def bind(self, model: nn.Module) -> None:
        self._text_width = int(model.text_proj.in_features)  # the DFM model this objective trains

    @property
    def embeddings(self) -> CaptionEmbeddings:
        if self._embeddings is None:
            c = self.config
            self._embeddings = CaptionEmbeddings(c.sentence_model, c.embedding_cache, c.embedding_batch_size)
        return self._embeddings

    def prepare(self, datasets: Mapping[str, Dataset], ctx: Any) -> None:
        if self.config.tgcl_weight == 0:
            return
        texts = training_caption_texts(datasets)
        if ctx.is_main:
            new = self.embeddings.ensure(texts, progress=len(texts) > 2000)
            if new:
                print(f"caption embeddings: {new} new of {len(texts)} training captions → {self.embeddings.path}")
        barrier(ctx)
        if not ctx.is_main:
            self.embeddings.reload()
        width = int(self.embeddings.lookup(texts[:1]).shape[-1]) if texts else None
        # a mismatch would otherwise surface as a matrix-shape error deep inside the first update
        require(
            self._text_width is None or width is None or width == self._text_width,
            "model.text_dim",
            f"is {self._text_width} but loss.sentence_model '{self.config.sentence_model}' gives {width}-wide "
            f"embeddings; set model.text_dim={width}",
        )

    def phases(self, epoch: int) -> Sequence[Phase]:
        return self._PHASES

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        return {"tokens": float(count_target_tokens(batch["target"])), "samples": float(len(batch["target"]))}

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        c = self.config
        image, target = batch["image"], batch["target"]
        with step.autocast():
            out = model(image, target)
        ce_sum, n_tok = caption_ce_sum(out.logits, target)
        terms = {"caption_ce": LossTerm.mean(ce_sum, n_tok, over="tokens", weight=c.caption_weight)}
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if c.tgcl_weight > 0:
            sentences = self.embeddings.lookup(list(batch["caption"])).to(image.device)  # [B, d], frozen
            visual = all_gather_with_grad(out.visual.float())  # [B_global, D]
            text = all_gather_with_grad(model.text_embedding(sentences).float())  # [B_global, D]
            changed = all_gather_with_grad(batch["changed"].to(image.device).float()) > 0.5  # [B_global]
            gate = changed if c.gate else torch.ones_like(changed)
            similarity = None
            if c.false_negative != "none":
                s = F.normalize(all_gather_with_grad(sentences.float()), dim=-1)  # [B_global, d]
                similarity = s @ s.t()  # [B_global, B_global]
            value = tgcl_loss(visual, text, gate, model.logit_scale, false_negative=c.false_negative,
                              caption_similarity=similarity, threshold=c.fn_threshold)  # fmt: skip
            terms["tgcl"] = LossTerm.per_pass(value, weight=c.tgcl_weight)
            one = torch.ones((), device=image.device)
            stats["tgcl_anchors"] = (gate.sum().float(), one)
            stats["logit_scale"] = (model.logit_scale.detach().exp().clamp(max=100.0), one)
        return ObjectiveOutput(terms, stats)


#: what ``objective_factory("dfm")`` finds
OBJECTIVE = DFMObjective
