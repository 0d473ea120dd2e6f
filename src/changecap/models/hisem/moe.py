"""DeepSeek-style sparse mixture of experts of HiSem's changed path (``docs/hisem.md``; official ``SparseMoE``).

Changed scenes are diverse (new roads, demolished buildings, vegetation loss, ...), so the changed path routes every
token to a few specialised SwiGLU experts while one always-on shared expert learns what all changes have in common:

* token scores s = σ(W_e x) in fp32 (sigmoid, not softmax: each expert's affinity is scored independently);
* group-limited greedy top-k: the experts form ``n_group`` contiguous groups, a group's score is the max of its
  experts' scores, only the ``topk_group`` best groups stay eligible, then the top-k experts among them are chosen;
* MoE(x) = Σ_k routed_scaling_factor · s_{e_k} · Expert_{e_k}(x) + Shared(x), **without** renormalising the weights;
* a sequence-level balance loss (training only) discourages a sample's tokens from piling onto a few experts.

Dispatch sorts the (token, slot) pairs by expert and runs each expert once on a contiguous gather of its tokens,
then scatters the weighted results back with ``index_add_``; the only Python loop is over experts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from changecap.models.precision import keep_fp32


def fp32_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x Wᵀ`` in float32 with autocast disabled.

    Routing decisions (top-k, argmax) on bf16 logits flip on near-ties and make training runs diverge between
    precisions; the official code computes its gates in fp32, so every router here does too.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.float(), weight.float())


def group_limited_topk(
    scores: torch.Tensor, top_k: int, n_group: int, topk_group: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-limited greedy top-k of DeepSeek-V2 on token scores [T, E] → (chosen scores [T, K], expert ids [T, K]).

    Experts e are grouped contiguously: group g holds experts g·E/G … (g+1)·E/G − 1. Experts outside the kept groups
    get score 0 before the final top-k; because sigmoid scores are > 0, they can only be chosen when fewer than
    ``top_k`` experts are eligible, which :class:`~changecap.models.hisem.fusion.HiSemFusionConfig` rejects. The order
    of the K chosen experts is unspecified (only the weighted sum matters).
    """
    t, e = scores.shape
    per_group = e // n_group
    group_scores = scores.view(-1, n_group, per_group).amax(dim=-1)  # [T, G]
    kept_groups = group_scores.topk(topk_group, dim=-1, sorted=False).indices  # [T, topk_group]
    groups = torch.arange(n_group, device=scores.device)  # [G]
    group_mask = (kept_groups[:, :, None] == groups).any(dim=1)  # [T, G]: no scatter, so it traces (ONNX export)
    expert_mask = group_mask[:, :, None].expand(-1, n_group, per_group).reshape(-1, e)  # [T, E]
    masked = scores.masked_fill(~expert_mask, 0.0)  # [T, E]
    chosen, ids = masked.topk(top_k, dim=-1, sorted=False)  # [T, K] each
    return chosen, ids


class SwiGLUExpert(nn.Module):
    """Expert(x) = W_down(SiLU(W_gate x) ⊙ W_up x), no biases (official ``DeepseekMLP`` names)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] → [..., D]."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoE(nn.Module):
    """Routed SwiGLU experts + one shared SwiGLU expert; returns the MoE output and the weighted balance loss.

    ``n_shared_experts`` multiplies the width: the shared expert's hidden size is ``dim · n_shared_experts`` (official
    convention); 0 means no shared expert (an extension; the paper uses 2).
    """

    def __init__(
        self,
        dim: int,
        num_experts: int = 8,
        top_k: int = 2,
        n_group: int = 4,
        topk_group: int = 2,
        expert_hidden: int = 2048,
        n_shared_experts: int = 2,
        routed_scaling_factor: float = 1.0,
        aux_loss_alpha: float = 0.001,
    ) -> None:
        super().__init__()
        if num_experts % n_group != 0:
            raise ValueError(f"{num_experts} experts cannot be split into {n_group} equal groups")
        self.num_experts = num_experts
        self.top_k = top_k
        self.n_group = n_group
        self.topk_group = topk_group
        self.routed_scaling_factor = float(routed_scaling_factor)
        self.aux_loss_alpha = float(aux_loss_alpha)
        # nn.Linear's default weight init is kaiming_uniform_(a=√5), the official gate init.
        self.gate = keep_fp32(nn.Linear(dim, num_experts, bias=False))  # read by fp32_linear
        self.experts = nn.ModuleList(SwiGLUExpert(dim, expert_hidden) for _ in range(num_experts))
        self.shared_expert = SwiGLUExpert(dim, dim * n_shared_experts) if n_shared_experts > 0 else None
        # Dense dispatch runs every expert on every token and weights the results (zero for unchosen experts): the
        # same function without data-dependent shapes, for graph export (ONNX); slower, so off by default.
        self.dense_dispatch = False

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens [T, D] → (sigmoid scores [T, E] fp32, weights [T, K] fp32, expert ids [T, K])."""
        scores = torch.sigmoid(fp32_linear(tokens, self.gate.weight))  # [T, E]
        chosen, ids = group_limited_topk(scores, self.top_k, self.n_group, self.topk_group)
        return scores, chosen * self.routed_scaling_factor, ids  # no renormalisation (official norm_topk_prob=False)

    def dispatch(self, tokens: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Σ_k weights[t, k] · Expert_{ids[t, k]}(tokens[t]) for every token: [T, D] (fp32 accumulation)."""
        if self.dense_dispatch:
            # weight of every expert for every token: [T, E] (the K chosen ids are distinct)
            dense = (F.one_hot(ids, self.num_experts).float() * weights.float()[:, :, None]).sum(dim=1)  # [T, E]
            outs = torch.stack([expert(tokens).float() for expert in self.experts], dim=1)  # [T, E, D]
            return (outs * dense[:, :, None]).sum(dim=1)  # [T, D]
        t, k = ids.shape
        flat_ids = ids.reshape(t * k)  # [T·K] expert of each (token, slot)
        order = flat_ids.argsort(stable=True)  # [T·K] slots grouped by expert
        token_of = order // k  # [T·K] token index of each sorted slot
        sorted_weights = weights.reshape(t * k)[order]  # [T·K]
        counts = torch.bincount(flat_ids, minlength=self.num_experts).tolist()  # one host sync for the split sizes
        out = torch.zeros(t, tokens.shape[-1], dtype=torch.float32, device=tokens.device)  # [T, D]
        start = 0
        for expert, n in zip(self.experts, counts):
            if n == 0:
                continue
            rows = token_of[start : start + n]  # [n]
            y = expert(tokens.index_select(0, rows))  # [n, D]
            out.index_add_(0, rows, y.float() * sorted_weights[start : start + n, None])
            start += n
        return out

    def balance_loss(self, scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Sequence-level balance loss α · mean_b Σ_e f[b, e] · P[b, e], as the official ``SparseMoE`` computes it.

        scores: [N, L, E] raw sigmoid scores (with gradient); ids: [N, L, K] chosen experts.
        f[b, e] = #{(t, k): ids[b, t, k] = e} / (L·K/E) (no gradient), P[b, e] = mean_t scores[b, t, e].
        """
        n, length, e = scores.shape
        k = ids.shape[-1]
        with torch.no_grad():
            slots = ids.reshape(n, length * k)  # [N, L·K]
            hits = torch.zeros(n, e, dtype=scores.dtype, device=scores.device)  # [N, E]
            hits.scatter_add_(1, slots, torch.ones_like(slots, dtype=scores.dtype))
            load = hits / (length * k / e)  # [N, E]
        return self.aux_loss_alpha * (load * scores.mean(dim=1)).sum(dim=1).mean()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, L, D] → (MoE(x) [N, L, D] in x's dtype, balance loss 0-dim fp32).

        The balance loss is returned as a tensor instead of the official identity-forward/unit-backward autograd
        hook: adding it to the total loss with weight 1 produces exactly the gradient the hook injects, and a
        returned value can also be logged. It is zero in eval mode and for an empty input.
        """
        n, length, d = x.shape
        tokens = x.reshape(n * length, d) if n == 0 else x.reshape(-1, d)  # [T, D]
        scores, weights, ids = self.route(tokens)  # [T, E], [T, K], [T, K]
        out = self.dispatch(tokens, weights, ids)  # [T, D] fp32
        if self.shared_expert is not None:
            out = out + self.shared_expert(tokens)
        if self.training and n > 0:
            aux = self.balance_loss(scores.view(n, length, -1), ids.view(n, length, -1))  # [N, L, E], [N, L, K]
        else:
            aux = torch.zeros((), dtype=torch.float32, device=x.device)
        return out.to(x.dtype).view(n if n == 0 else -1, length, d), aux  # [N, L, D]

    def extra_repr(self) -> str:
        return (
            f"num_experts={self.num_experts}, top_k={self.top_k}, n_group={self.n_group}, "
            f"topk_group={self.topk_group}, routed_scaling_factor={self.routed_scaling_factor}, "
            f"aux_loss_alpha={self.aux_loss_alpha}"
        )
