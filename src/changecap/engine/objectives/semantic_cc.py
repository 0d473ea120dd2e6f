"""The Semantic-CC objective (``docs/semantic_cc.md``): caption CE + λ · change-detection loss, in stages.

L = L_cc + λ · L_cd with λ = 0.5 (paper; the code sums, λ = 1). L_cc is the LLM's token cross-entropy over the
caption and end-symbol tokens, L_cd the pixel loss of the change mask (BCE on one logit, paper; 2-class CE, code),
both exact means over the global batch (``base.py``): the normalisers are the caption tokens (counted with the
model's own tokenizer, hence :meth:`bind`) and the labelled pixels (``loss.cd_denominator: labelled``) or all pixels
(``all``: the released code's mmseg loss, ``avg_non_ignore=False``). Ignored pixels (class ``IGNORE``, 255) add no
loss in either; the two differ only for masks with ignored pixels, which the released pipeline never produces.

Schedules (``loss.schedule``), phases of every epoch in order:

* ``3-stage`` (paper): pairs with masks → encoder (LoRA, BCSF), the neck's CD side, CD decoder → L_cd;
  pairs with captions → the neck's CC side, enhancer, LLM LoRA → L_cc; pairs with both → the neck → L_cc + λ L_cd;
* ``2-stage``: the first two of those;
* ``1-stage``: pairs with both → everything trainable → L_cc + λ L_cd;
* ``caption-only`` (the single-task row of the paper's Table II): pairs with captions → everything trainable → L_cc
  (the CD decoder gets no gradient);
* ``cd-only``: the first stage alone, pairs with masks → L_cd (a change detector; the caption side never trains).

Masks are binarised (class > 0 = change: LEVIR-MCI roads and buildings both count, as the released code has it). Each
sample gets one of the configured instructions at random (torch's generator: restored exactly on resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from changecap.engine.objectives.base import LossTerm, Objective, ObjectiveOutput, Phase, StepInfo
from changecap.engine.objectives.filters import pairs_with_captions, pairs_with_mask, pairs_with_mask_and_captions
from changecap.models.parts.change_masks import IGNORE, binary_change_loss_sum
from changecap.schema import require

STAGE_NAMES = ("cd", "cc", "neck", "joint", "caption")


@dataclass
class SemanticCCLossConfig:
    """The ``loss`` section of a Semantic-CC run."""

    cd_weight: float = 0.5  # λ (paper 0.5; the released code sums the losses: 1.0)
    schedule: Literal["3-stage", "2-stage", "1-stage", "caption-only", "cd-only"] = "3-stage"
    # weight of change pixels in L_cd (1 = the paper's plain BCE); > 1 counters their rarity (2.7 % on SynthCC)
    cd_change_weight: float = 1.0
    # what L_cd's sum is divided by: the labelled pixels ("labelled", as torch's cross_entropy with ignore_index) or
    # every pixel, ignored ones included ("all": the released code, mmseg's avg_non_ignore=False). "labelled" keeps
    # L_cd a mean per labelled pixel, so a mask's ignored share does not scale its loss down against λ·L_cd's
    # balance with L_cc; without ignored pixels (LEVIR-MCI, SynthCC) both give the same loss.
    cd_denominator: Literal["labelled", "all"] = "labelled"
    # passes of a stage per epoch, by phase name (cd, cc, neck, joint, caption); unnamed stages make one (the paper).
    # A from-scratch CPU run can give the cheap caption stage more of its time than the paper's 1 : 1 : 1.
    stage_passes: dict[str, int] = field(default_factory=dict)

    def validate(self, prefix: str = "loss") -> None:
        require(self.cd_weight >= 0, f"{prefix}.cd_weight", f"must be >= 0, got {self.cd_weight}")
        w = self.cd_change_weight
        require(w > 0, f"{prefix}.cd_change_weight", f"must be > 0, got {w}")
        for name, n in self.stage_passes.items():
            require(name in STAGE_NAMES, f"{prefix}.stage_passes.{name}", f"is not a stage; stages: {STAGE_NAMES}")
            require(n >= 1, f"{prefix}.stage_passes.{name}", f"must be >= 1, got {n}")


def neck_sides(units: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Module prefixes of the neck's captioning side and detection side."""
    cc = ("neck.cc_proj", *(f"neck.units.{i}.{m}" for i in range(units) for m in ("intra_cc", "inter")))
    cd = tuple(f"neck.units.{i}.{m}" for i in range(units) for m in ("intra_cd", "inter_cd"))
    return cc, cd


class SemanticCCObjective(Objective):
    """Staged multi-task training of Semantic-CC (module docstring)."""

    config_class = SemanticCCLossConfig

    def __init__(self, config: SemanticCCLossConfig | None = None, train_config: Any = None, units: int | None = None):
        super().__init__(config or SemanticCCLossConfig(), train_config)
        if units is None:
            neck = (train_config.model.get("neck") or {}) if train_config is not None else {}
            units = int(neck.get("units", 3))
        cc_side, cd_side = neck_sides(units)
        cd = Phase("cd", filter=pairs_with_mask, trainable=("encoder", *cd_side, "cd_decoder"), options={"tasks": "cd"})
        cc = Phase("cc", filter=pairs_with_captions, trainable=(*cc_side, "caption_decoder"), options={"tasks": "cc"})
        both = Phase("neck", filter=pairs_with_mask_and_captions, trainable=("neck",), options={"tasks": "both"})
        joint = Phase("joint", filter=pairs_with_mask_and_captions, options={"tasks": "both"})
        caption = Phase("caption", filter=pairs_with_captions, options={"tasks": "cc"})
        stages = {
            "3-stage": (cd, cc, both),
            "2-stage": (cd, cc),
            "1-stage": (joint,),
            "caption-only": (caption,),
            "cd-only": (cd,),
        }[self.config.schedule]
        # a stage's repeated passes follow each other; each pass has its own data order (its position in the epoch)
        passes = self.config.stage_passes
        self._phases = tuple(p for stage in stages for p in (stage,) * passes.get(stage.name, 1))
        self.model: Any = None

    def bind(self, model: nn.Module) -> None:
        """Remember the model: the caption-token normaliser is counted before the forward pass, with the model's
        own target encoding (``caption_target_length``)."""
        self.model = model

    def phases(self, epoch: int) -> Sequence[Phase]:
        return self._phases

    def normalizers(self, batch: Mapping[str, Any], phase: Phase) -> dict[str, float]:
        tasks = phase.options.get("tasks", "both")
        out: dict[str, float] = {"samples": float(len(batch["name"]))}
        if tasks in ("cc", "both"):
            if self.model is None:
                raise RuntimeError("SemanticCCObjective.bind(model) must be called before training")
            out["tokens"] = float(sum(self.model.caption_target_length(c) for c in batch["caption"]))
        if tasks in ("cd", "both"):
            out["pixels"] = float(self._pixel_count(batch["mask"]))
        return out

    def _pixel_count(self, mask: torch.Tensor) -> torch.Tensor:
        """L_cd's denominator over ``mask`` [B, S, S] (0-dim): its labelled pixels or all of them."""
        if self.config.cd_denominator == "all":
            return torch.tensor(mask.numel(), device=mask.device)
        return (mask != IGNORE).sum()

    def __call__(self, model: nn.Module, batch: Mapping[str, Any], step: StepInfo) -> ObjectiveOutput:
        tasks = step.phase.options.get("tasks", "both")
        terms: dict[str, LossTerm] = {}
        with step.autocast():
            f_cc, f_cd = model.features(batch["image"])
        if tasks in ("cd", "both"):
            with step.autocast():
                logits = model.change_logits(f_cd)  # [B, K, S, S]
            pix_sum, _ = binary_change_loss_sum(logits.float(), batch["mask"], self.config.cd_change_weight)
            weight = 1.0 if tasks == "cd" else self.config.cd_weight
            terms["cd_loss"] = LossTerm.mean(pix_sum, self._pixel_count(batch["mask"]), over="pixels", weight=weight)
        if tasks in ("cc", "both"):
            n = len(batch["caption"])
            k = model.num_instructions
            instructions = torch.randint(k, (n,)).tolist()  # one instruction per sample, uniformly
            with step.autocast():
                ce_sum, n_tok = model.caption_loss_sum(f_cc, list(batch["caption"]), instructions)
            terms["caption_ce"] = LossTerm.mean(ce_sum.float(), n_tok, over="tokens")
        return ObjectiveOutput(terms)


#: what ``objective_factory("semantic_cc")`` finds
OBJECTIVE = SemanticCCObjective
