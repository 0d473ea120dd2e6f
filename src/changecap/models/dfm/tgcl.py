"""DFM's text-guided gated contrastive loss (TGCL, ``docs/dfm.md``; the paper's eqs. 1–5 are lost, this is
changecap's reconstruction).

For a batch of B pairs with [CLS] differences v_i (visual) and projected caption embeddings u_i (text)::

    S_ij  = min(exp(s), 100) · ⟨v_i / ‖v_i‖, u_j / ‖u_j‖⟩          [B, B]
    N_v   = Σ_i g_i + eps
    L_i2t = (1 / N_v) Σ_i g_i · CE(S_i,:, i)        rows: image i against every caption
    L_t2i = (1 / N_v) Σ_j g_j · CE(S_:,j, j)        columns: caption j against every image
    L     = ½ (L_i2t + L_t2i)

The gate g (``changed``) removes the no-change pairs as *anchors* only: the softmax still runs over all B rows /
columns, so their embeddings stay negatives of the changed ones. With no changed pair in the batch every term is
multiplied by 0 and L is exactly 0, with a gradient path and no NaN (a zero [CLS] difference normalises to zero, not
to NaN). With g ≡ 1 it is CLIP's symmetric InfoNCE (the ablation "without masking").

Our addition (not in the equations): vectors are divided by max(‖x‖, ``norm_floor`` = 1e-4) rather than ‖x‖. For every
real embedding this is the exact normalisation; it only changes the [CLS] difference of two (nearly) identical
images, whose float-noise direction would otherwise enter the softmax as a random unit vector with an exploding
gradient (measured: encoder gradients of ~1e5 on identical test pairs).

False negatives (``false_negative``, an option borrowed from RSICRC): identical change captions are common in
a batch (LEVIR-CC), so caption j ≠ i may describe pair i's change as well. ``caption_similarity`` [B, B] (cosine of
the frozen sentence embeddings) marks such pairs at ``threshold`` and above:

* ``"fne"`` (false-negative elimination): they are removed from the softmax's denominator;
* ``"fna"`` (false-negative attraction): they count as positives too — the target of each anchor's cross-entropy is
  spread evenly over itself and its false negatives (our choice; RSICRC's exact weighting is not recoverable).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: CLIP's cap on the learnable scale exp(s)
MAX_LOGIT_SCALE = 100.0
FalseNegative = Literal["none", "fne", "fna"]


def tgcl_loss(
    visual: torch.Tensor,
    text: torch.Tensor,
    changed: torch.Tensor,
    logit_scale: torch.Tensor,
    eps: float = 1e-8,
    *,
    false_negative: FalseNegative = "none",
    caption_similarity: torch.Tensor | None = None,
    threshold: float = 1.0,
    norm_floor: float = 1e-4,
) -> torch.Tensor:
    """TGCL (module docstring). ``visual`` [B, D] the [CLS] differences v_i, ``text`` [B, D] the projected caption
    embeddings u_i, ``changed`` [B] bool (the gate g), ``logit_scale`` a 0-dim tensor holding s (the scale is
    exp(s), clamped to at most 100) → a 0-dim tensor, ½ (L_i2t + L_t2i)."""
    if visual.dim() != 2 or visual.shape != text.shape:
        raise ValueError(f"tgcl_loss: visual and text must both be [B, D], got {list(visual.shape)} and "
                         f"{list(text.shape)}")  # fmt: skip
    b = visual.shape[0]
    if changed.shape != (b,):
        raise ValueError(f"tgcl_loss: changed must be [B] = [{b}], got {list(changed.shape)}")
    scale = logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
    # x / max(‖x‖, norm_floor): a zero vector stays zero (never NaN), and so does the difference of two identical
    # images, which is float noise (~1e-6): normalised, it would get a random unit direction and a gradient of
    # 1/‖v‖ ~ 1e6. Real [CLS] differences are orders of magnitude longer than the floor and are normalised exactly.
    v = F.normalize(visual.float(), dim=-1, eps=norm_floor)  # [B, D]
    u = F.normalize(text.float(), dim=-1, eps=norm_floor)  # [B, D]
    logits = scale * v @ u.t()  # [B, B]: S_ij, image i × caption j
    gate = changed.to(logits.dtype)  # [B]
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    if false_negative == "none":
        targets = eye.to(logits.dtype)  # [B, B]
        excluded = torch.zeros_like(eye)
    else:
        if caption_similarity is None or caption_similarity.shape != (b, b):
            need = f"caption_similarity [B, B] = [{b}, {b}]"
            raise ValueError(f"tgcl_loss: false_negative={false_negative!r} needs {need}")
        duplicates = (caption_similarity >= threshold) & ~eye  # [B, B]: other captions as good as one's own
        if false_negative == "fne":
            targets, excluded = eye.to(logits.dtype), duplicates
        elif false_negative == "fna":
            positives = (duplicates | eye).to(logits.dtype)
            targets, excluded = positives / positives.sum(dim=1, keepdim=True), torch.zeros_like(eye)
        else:
            raise ValueError(f"tgcl_loss: false_negative must be none, fne or fna, got {false_negative!r}")
    # The duplicate relation is symmetric, so the same target / exclusion matrices serve both directions.
    # Targets are never excluded, so only finite log-probabilities are read (no 0 · −inf).
    masked = logits.masked_fill(excluded, float("-inf"))  # [B, B]
    hit = targets > 0
    i2t = -(torch.where(hit, F.log_softmax(masked, dim=1), 0.0) * targets).sum(dim=1)  # [B]: per image anchor
    t2i = -(torch.where(hit, F.log_softmax(masked, dim=0), 0.0) * targets).sum(dim=0)  # [B]: per caption anchor
    n_valid = gate.sum() + eps
    return 0.5 * ((gate * i2t).sum() / n_valid + (gate * t2i).sum() / n_valid)
