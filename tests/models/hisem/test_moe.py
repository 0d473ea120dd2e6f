"""DeepSeek-style sparse MoE: group-limited top-k, dispatch, balance loss (docs/hisem.md)."""

from __future__ import annotations

import torch

from changecap.models.hisem.moe import SparseMoE, SwiGLUExpert, fp32_linear, group_limited_topk

DIM, HIDDEN, E, K, G, TG = 16, 24, 8, 2, 4, 2


def _moe(**kw: float) -> SparseMoE:
    torch.manual_seed(0)
    args = dict(num_experts=E, top_k=K, n_group=G, topk_group=TG, expert_hidden=HIDDEN, n_shared_experts=2)
    args.update(kw)
    return SparseMoE(DIM, **args)  # type: ignore[arg-type]


def _naive_topk(s: list[float], top_k: int, n_group: int, topk_group: int) -> dict[int, float]:
    """One token, plain Python: {expert: score} of the chosen experts."""
    per = len(s) // n_group
    group_best = [max(s[g * per : (g + 1) * per]) for g in range(n_group)]
    kept = sorted(range(n_group), key=lambda g: -group_best[g])[:topk_group]
    eligible = [e for e in range(len(s)) if e // per in kept]
    chosen = sorted(eligible, key=lambda e: -s[e])[:top_k]
    return {e: s[e] for e in chosen}


def _naive_moe(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop: Σ_k s_e · Expert_e(x) + Shared(x), no renormalisation."""
    rows = []
    for tok in x.reshape(-1, DIM):
        s = torch.sigmoid(tok @ moe.gate.weight.T).tolist()
        acc = moe.shared_expert(tok) if moe.shared_expert is not None else torch.zeros(DIM)
        for e, w in _naive_topk(s, moe.top_k, moe.n_group, moe.topk_group).items():
            acc = acc + moe.routed_scaling_factor * w * moe.experts[e](tok)
        rows.append(acc)
    return torch.stack(rows).view(x.shape)


def test_group_limited_topk_equals_naive_reference() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(64, E, generator=g)
    for top_k, n_group, topk_group in [(2, 4, 2), (3, 4, 2), (1, 2, 1), (4, 8, 4), (2, 1, 1)]:
        chosen, ids = group_limited_topk(scores, top_k, n_group, topk_group)
        assert chosen.shape == ids.shape == (64, top_k)
        for t in range(64):
            ref = _naive_topk(scores[t].tolist(), top_k, n_group, topk_group)
            got = dict(zip(ids[t].tolist(), chosen[t].tolist()))
            assert got.keys() == ref.keys()
            for e in ref:
                assert abs(got[e] - ref[e]) < 1e-7


def test_group_mask_excludes_a_high_scoring_expert_in_a_dropped_group() -> None:
    # groups {0,1} {2,3} {4,5} {6,7}; group maxima 0.9, 0.8, 0.7, 0.1 → keep groups 0 and 1 (topk_group=2)
    s = torch.tensor([[0.9, 0.85, 0.8, 0.1, 0.7, 0.1, 0.1, 0.1]])
    chosen, ids = group_limited_topk(s, 3, 4, 2)
    assert sorted(ids[0].tolist()) == [0, 1, 2]
    s = torch.tensor([[0.9, 0.85, 0.1, 0.1, 0.7, 0.1, 0.1, 0.1]])  # plain top-3 would take expert 4 (0.7) …
    _, ids = group_limited_topk(s, 3, 4, 1)  # … but only group 0 survives, so one pick is a masked (0-score) expert
    assert {0, 1} <= set(ids[0].tolist())


def test_moe_equals_per_token_loop_in_train_and_eval() -> None:
    moe = _moe()
    x = torch.randn(3, 5, DIM)
    ref = _naive_moe(moe, x)
    out, aux = moe(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert aux.ndim == 0 and aux.item() > 0
    moe.eval()
    out_eval, aux_eval = moe(x)
    torch.testing.assert_close(out_eval, ref, rtol=1e-6, atol=1e-6)  # same function in both modes
    assert aux_eval.item() == 0.0


def test_scaling_factor_and_no_shared_expert() -> None:
    moe = _moe(routed_scaling_factor=2.5, n_shared_experts=0)
    assert moe.shared_expert is None
    x = torch.randn(2, 3, DIM)
    out, _ = moe(x)
    torch.testing.assert_close(out, _naive_moe(moe, x), rtol=1e-6, atol=1e-6)


def test_weights_are_raw_sigmoid_scores_not_renormalised() -> None:
    moe = _moe()
    tokens = torch.randn(10, DIM)
    scores, weights, ids = moe.route(tokens)
    assert scores.dtype == weights.dtype == torch.float32
    torch.testing.assert_close(weights, scores.gather(1, ids))
    assert not torch.allclose(weights.sum(-1), torch.ones(10))


def test_balance_loss_matches_naive_formula() -> None:
    moe = _moe(aux_loss_alpha=0.001)
    n, length = 3, 6
    x = torch.randn(n, length, DIM)
    _, aux = moe(x)
    scores, _, ids = moe.route(x.reshape(-1, DIM))
    scores, ids = scores.detach().view(n, length, E), ids.view(n, length, K)
    total = 0.0
    for b in range(n):
        for e in range(E):
            count = sum(int(ids[b, t, k]) == e for t in range(length) for k in range(K))
            f = count / (length * K / E)
            p = float(scores[b, :, e].mean())
            total += f * p
    expected = 0.001 * total / n
    assert abs(aux.item() - expected) < 1e-7
    # gradient flows into the gate through P (f is counted without gradient)
    moe.zero_grad()
    moe(x)[1].backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_empty_input_and_gradients() -> None:
    moe = _moe()
    out, aux = moe(torch.randn(0, 4, DIM))
    assert out.shape == (0, 4, DIM) and aux.item() == 0.0
    x = torch.randn(2, 4, DIM, requires_grad=True)
    out, aux = moe(x)
    (out.square().sum() + aux).backward()
    used = sum(expert.down_proj.weight.grad is not None for expert in moe.experts)
    assert used >= 1 and x.grad is not None and moe.gate.weight.grad is not None
    assert moe.shared_expert is not None and moe.shared_expert.up_proj.weight.grad is not None


def test_bf16_autocast_routes_in_fp32() -> None:
    moe = _moe()
    x = torch.randn(2, 4, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = fp32_linear(x, moe.gate.weight)
        out, aux = moe(x)
        out.float().sum().backward()
    assert logits.dtype == torch.float32 and aux.dtype == torch.float32
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, _naive_moe(moe, x), rtol=0.05, atol=0.05)


def test_paper_parameter_counts_on_meta() -> None:
    with torch.device("meta"):
        moe = SparseMoE(768)

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(moe.experts) == 37_748_736
    assert moe.shared_expert is not None and count(moe.shared_expert) == 3_538_944
    assert count(moe.gate) == 6_144
    assert isinstance(moe.experts[0], SwiGLUExpert) and moe.experts[0].gate_proj.bias is None
