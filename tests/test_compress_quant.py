"""Expert Slimming by weight-only fake quantisation: the RTN grid, GPTQ, AWQ, and quantize_experts on a tiny MoE."""

import pytest
import torch
from conftest import tiny_llama, tiny_softmax_moe

from moelab.compress.quantize import (
    awq_quantize,
    gptq_hessian,
    gptq_quantize,
    quantize_experts,
    rtn_quantize,
    weight_bits_report,
)


def tiny_moe(num_shared_experts: int = 0):
    return tiny_softmax_moe(num_shared_experts=num_shared_experts)


def batches():
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 256, (4, 32), generator=g)}]


def out_err(X, W, Wq):
    return float((X @ (W - Wq).T).norm())


def correlated_inputs(n=256, c=64, seed=0):
    """Tokens x = z A with a random mixing A (correlated channels) and uneven channel scales."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g) / c**0.5
    scales = torch.linspace(0.2, 3.0, c)
    return (torch.randn(n, c, generator=g) @ mix) * scales


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- the RTN grid -------------------------------------------------------------------------------------


def test_rtn_hand_computed_groups():
    # 3 bits: lo -0.6, hi 0.8, scale 0.2, zero 3; q = [0, 4, 5, 7] -> (q - 3) * 0.2
    w = torch.tensor([[-0.6, 0.13, 0.33, 0.8]])
    torch.testing.assert_close(rtn_quantize(w, 3, 4), torch.tensor([[-0.6, 0.2, 0.4, 0.8]]))
    # 2 bits: scale 1, zero 1
    w = torch.tensor([[-1.0, 0.2, 0.7, 2.0]])
    assert torch.equal(rtn_quantize(w, 2, 4), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))
    # one-signed group: the range is stretched to hold 0 (scale 3 / 3 = 1, zero 0)
    w = torch.tensor([[0.4, 1.1, 1.6, 3.0]])
    assert torch.equal(rtn_quantize(w, 2, 4), torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
    # constant groups (scale 0 for the zero group): no NaN, exact values back
    w = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5]])
    out = rtn_quantize(w, 4, 4)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, w)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_grid_has_at_most_2_pow_b_values_within_half_a_step(bits):
    W = rand(16, 96, seed=bits)
    Wq = rtn_quantize(W, bits, 32)
    for k in range(3):
        grp, grq = W[:, 32 * k : 32 * (k + 1)], Wq[:, 32 * k : 32 * (k + 1)]
        lo = grp.amin(1, keepdim=True).clamp(max=0)
        hi = grp.amax(1, keepdim=True).clamp(min=0)
        step = (hi - lo) / (2**bits - 1)
        assert ((grq - grp).abs() <= step / 2 + 1e-6).all()
        for row in grq:
            assert row.unique().numel() <= 2**bits
    # more bits, less error
    if bits == 8:
        X = rand(64, 96, seed=9)
        assert out_err(X, W, Wq) < 0.1 * out_err(X, W, rtn_quantize(W, 4, 32))  # step ratio 15 / 255


def test_rtn_remainder_group_and_per_row():
    W = rand(8, 80)
    Wq = rtn_quantize(W, 4, 32)  # groups of 32, 32 and a remainder group of 16
    assert torch.equal(Wq[:, 64:], rtn_quantize(W[:, 64:], 4, -1))
    assert torch.equal(Wq[:, :32], rtn_quantize(W[:, :32], 4, -1))
    assert torch.equal(rtn_quantize(W, 4, -1), rtn_quantize(W, 4, 80))
    assert torch.equal(rtn_quantize(W, 4, 128), rtn_quantize(W, 4, -1))  # wider than the row: one group
    assert not torch.equal(rtn_quantize(W, 4, -1), Wq)


# ---- GPTQ ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "desc_act,static_groups",
    [(False, False), (True, False), (True, True)],
    ids=["plain", "act", "act-static"],
)
def test_gptq_reconstruction_error_below_rtn(desc_act, static_groups):
    W, X = rand(32, 64, seed=1), correlated_inputs()
    Wq = gptq_quantize(W, X, bits=4, group_size=16, desc_act=desc_act, static_groups=static_groups)
    assert out_err(X, W, Wq) < 0.9 * out_err(X, W, rtn_quantize(W, 4, 16))
    Wq3 = gptq_quantize(W, X, bits=3, group_size=-1, desc_act=desc_act, block_size=16)
    assert out_err(X, W, Wq3) < 0.9 * out_err(X, W, rtn_quantize(W, 3, -1))


def test_gptq_equals_sequential_obs_updates():
    """Alg. 1 (Cholesky rows, lazy blocks) = the OBS loop it reformulates (2210.17323 eq. 3, sec. 3): quantise
    column j, add -(w_j - q_j) / [H^-1]_jj * [H^-1]_j: to W, drop j from H^-1 by a rank-1 downdate (float64)."""
    W, X = rand(32, 64, seed=1), correlated_inputs()
    H = 2 * X.double().T @ X.double()
    Hinv = torch.linalg.inv(H + 0.01 * H.diagonal().mean() * torch.eye(64, dtype=torch.float64))
    Wc = W.double().clone()
    lo, hi = Wc.amin(1, keepdim=True).clamp(max=0), Wc.amax(1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / 7
    zero = torch.round(-lo / scale)
    expected = torch.empty_like(Wc)
    for j in range(64):
        q = (torch.clamp(torch.round(Wc[:, j : j + 1] / scale) + zero, 0, 7) - zero) * scale
        expected[:, j] = q[:, 0]
        Wc -= ((Wc[:, j] - q[:, 0]) / Hinv[j, j])[:, None] * Hinv[j][None, :]
        Hinv = Hinv - Hinv[:, j : j + 1] @ Hinv[j : j + 1, :] / Hinv[j, j]
    out = gptq_quantize(W, X, bits=3, group_size=-1, desc_act=False, block_size=16)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=0)


def sylvester_hadamard(n):
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("desc_act,static_groups", [(False, False), (True, False), (True, True)])
def test_gptq_with_orthogonal_equal_norm_inputs_is_exactly_rtn(desc_act, static_groups):
    """X = a Hadamard matrix: X^T X = 64 I exactly, so chol(H^-1) is diagonal, no column's error reaches another,
    act-order keeps the order (equal diag H, stable sort), and GPTQ returns RTN's values bit for bit."""
    X = sylvester_hadamard(64)
    assert torch.equal(X.T @ X, 64 * torch.eye(64))
    W = rand(24, 64, seed=3)
    for group, block in [(16, 128), (32, 16), (-1, 128)]:  # block 16 < group 32: groups span lazy blocks
        Wq = gptq_quantize(
            W, X, bits=4, group_size=group, desc_act=desc_act, static_groups=static_groups, block_size=block
        )
        assert torch.equal(Wq, rtn_quantize(W, 4, group))
    # and an H that is not diagonal changes the answer
    assert not torch.equal(
        gptq_quantize(W, correlated_inputs(), bits=4, group_size=16), rtn_quantize(W, 4, 16)
    )


def test_gptq_act_order_groups():
    """2 bits, groups of 16: with static_groups each original group of 16 columns has <= 4 values per row; by
    default (processing-order groups) each run of 16 columns in decreasing diag(H) order has <= 4 values per
    row, and the original groups do not."""
    scales = torch.rand(64, generator=torch.Generator().manual_seed(7))
    W, X = rand(32, 64, seed=4), correlated_inputs(seed=2) * scales
    perm = torch.argsort(torch.diagonal(gptq_hessian(X)), descending=True, stable=True)
    assert not torch.equal(perm, torch.arange(64))
    static = gptq_quantize(W, X, bits=2, group_size=16, desc_act=True, static_groups=True)
    ordered = gptq_quantize(W, X, bits=2, group_size=16, desc_act=True, static_groups=False)

    def max_values(Wq, cols):
        return max(int(Wq[r, cols].unique().numel()) for r in range(Wq.shape[0]))

    for k in range(4):
        assert max_values(static, torch.arange(16 * k, 16 * (k + 1))) <= 4
        assert max_values(ordered, perm[16 * k : 16 * (k + 1)]) <= 4
    assert max(max_values(ordered, torch.arange(16 * k, 16 * (k + 1))) for k in range(4)) > 4


@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq_lazy_blocks_change_nothing(desc_act):
    """Block size only batches the updates (Alg. 1): the same result up to float rounding, also when a group
    (24 columns) starts inside a block and reaches into the next one (its grid sees the pending updates)."""
    W, X = rand(16, 64, seed=8), correlated_inputs(seed=4)
    ref = gptq_quantize(W, X, bits=3, group_size=24, desc_act=desc_act, block_size=1)
    for block in (16, 128):
        out = gptq_quantize(W, X, bits=3, group_size=24, desc_act=desc_act, block_size=block)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_gptq_dead_column_and_hessian_input():
    W, X = rand(8, 32, seed=5), correlated_inputs(c=32)
    X[:, 7] = 0
    Wq = gptq_quantize(W, X, bits=4, group_size=16)
    assert torch.isfinite(Wq).all() and torch.equal(Wq[:, 7], torch.zeros(8))
    assert torch.equal(Wq, gptq_quantize(W, H=gptq_hessian(X), bits=4, group_size=16))


# ---- AWQ ----------------------------------------------------------------------------------------------


def outlier_inputs():
    X = rand(256, 64, seed=6)
    X[:, [3, 17, 40, 41]] *= 30.0  # a few large-magnitude channels
    return X


def test_awq_alpha_zero_is_rtn():
    W, X = rand(32, 64, seed=7), outlier_inputs()
    assert torch.equal(
        awq_quantize(W, X, bits=4, group_size=16, n_grid=1, clip=False), rtn_quantize(W, 4, 16)
    )


@pytest.mark.parametrize("clip", [False, True])
def test_awq_output_error_below_rtn_with_outlier_channels(clip):
    W, X = rand(32, 64, seed=7), outlier_inputs()
    Wq = awq_quantize(W, X, bits=4, group_size=16, clip=clip)
    assert out_err(X, W, Wq) < 0.7 * out_err(X, W, rtn_quantize(W, 4, 16))
    # the scale is folded back: W' is close to W, not to W diag(s)
    assert (Wq - W).abs().max() < 0.5 * W.abs().max()


# ---- quantize_experts on a tiny LlamaMoE --------------------------------------------------------------


def is_expert_param(name):
    return ".mlp.experts." in name or ".mlp.shared_experts." in name


@pytest.mark.parametrize(
    "method,options", [("rtn", {}), ("gptq", {"desc_act": False}), ("gptq", {}), ("awq", {})], ids=str
)
def test_quantize_experts_changes_only_expert_weights(method, options):
    moe = tiny_moe(num_shared_experts=1)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    report = quantize_experts(moe, batches(), method, bits=4, group_size=32, **options)
    after = moe.state_dict()
    for name, value in before.items():
        if is_expert_param(name):
            assert not torch.equal(value, after[name]), name
        else:
            assert torch.equal(value, after[name]), name  # router, attention, embeddings, norms
    assert any("router" in k for k in before) and any("self_attn" in k for k in before)
    if method == "rtn" or options:  # on the grid in original column groups (not AWQ's W'/s, not act-order)
        w = moe.model.layers[1].mlp.experts.gate_proj
        for r in range(w.shape[0]):
            assert w[r, :32].unique().numel() <= 16 and w[r, 32:].unique().numel() <= 16
    logits = moe(input_ids=batches()[0]["input_ids"]).logits
    assert torch.isfinite(logits).all()
    recs = report["experts"]
    assert [(r["layer"], r["kind"], r["expert"]) for r in recs[:5]] == [
        (0, "routed", e) for e in range(3)
    ] + [
        (0, "shared", 0),
        (1, "routed", 0),
    ]
    assert sum(r["tokens"] for r in recs if r["layer"] == 0 and r["kind"] == "routed") == 128 * 2  # top-2
    assert all(r["tokens"] == 128 for r in recs if r["kind"] == "shared")
    assert all(0 < r["output_error"] < 0.5 for r in recs)
    assert report["unrouted_experts"] == []


def test_gptq_and_awq_beat_rtn_on_the_routed_tokens():
    total = {}
    for method in ("rtn", "gptq", "awq"):
        report = quantize_experts(tiny_moe(), batches(), method, bits=3, group_size=32)
        total[method] = sum(m["error"] ** 2 for r in report["experts"] for m in r["matrices"].values())
    assert total["gptq"] < 0.7 * total["rtn"] and total["awq"] < total["rtn"]


def test_one_layer_per_pass_is_still_one_shot():
    """Layers captured one per pass, last first, see the same (unquantised) inputs: identical weights."""
    a, b = tiny_moe(), tiny_moe()
    rep_a = quantize_experts(a, batches(), "gptq", bits=3, group_size=32)
    rep_b = quantize_experts(b, iter(batches()), "gptq", bits=3, group_size=32, layers_per_pass=1)
    for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), name
    assert rep_a["experts"] == rep_b["experts"]


def test_rtn_experts_equal_rtn_of_their_slices():
    moe = tiny_moe(num_shared_experts=1)
    block = moe.model.layers[0].mlp
    down = block.experts.down_proj.detach().clone()
    shared_up = block.shared_experts.up_proj.weight.detach().clone()
    report = quantize_experts(moe, None, "rtn", bits=4, group_size=16)
    rows = block.experts.expert_slice(2)
    assert torch.equal(block.experts.down_proj[:, rows], rtn_quantize(down[:, rows], 4, 16))
    assert torch.equal(block.shared_experts.up_proj.weight, rtn_quantize(shared_up, 4, 16))
    assert report["experts"][0]["tokens"] is None


def unrouted_moe():
    """Layer 0's router can never pick expert 3 (logit bias -1e4)."""
    moe = tiny_moe()
    router = moe.model.layers[0].mlp.router
    old = router.gate_network
    new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.copy_(torch.tensor([0.0, 0.0, 0.0, -1e4]))
    router.gate_network = new
    return moe


@pytest.mark.parametrize("unrouted", ["rtn", "skip"])
def test_unrouted_expert_follows_the_named_option(unrouted):
    moe = unrouted_moe()
    experts = moe.model.layers[0].mlp.experts
    rows = experts.expert_slice(3)
    original = experts.gate_proj[rows].detach().clone()
    report = quantize_experts(moe, batches(), "gptq", bits=4, group_size=32, unrouted=unrouted)
    assert report["unrouted_experts"] == [{"layer": 0, "expert": 3}]
    rec = next(r for r in report["experts"] if (r["layer"], r["expert"]) == (0, 3))
    assert rec["tokens"] == 0 and rec["output_error"] is None
    if unrouted == "rtn":
        assert rec["quantized_by"] == "rtn"
        assert torch.equal(experts.gate_proj[rows], rtn_quantize(original, 4, 32))
    else:
        assert rec["quantized_by"] is None
        assert torch.equal(experts.gate_proj[rows], original)


def test_bad_inputs_name_the_parameter():
    W = rand(4, 32)
    for bits in (1, 9, 4.0, True):
        with pytest.raises(ValueError, match="bits="):
            rtn_quantize(W, bits, 16)
    with pytest.raises(ValueError, match="group_size="):
        rtn_quantize(W, 4, 0)
    with pytest.raises(ValueError, match="exactly one of X"):
        gptq_quantize(W, rand(8, 32), H=torch.eye(32))
    with pytest.raises(ValueError, match="percdamp="):
        gptq_quantize(W, rand(8, 32), percdamp=-1)
    with pytest.raises(ValueError, match="H is zero"):
        gptq_quantize(W, torch.zeros(8, 32))
    with pytest.raises(ValueError, match="n_grid="):
        awq_quantize(W, rand(8, 32), n_grid=0)
    moe = tiny_moe()
    with pytest.raises(ValueError, match="unknown quantisation method 'hqq'"):
        quantize_experts(moe, batches(), "hqq")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['clip'\] for method 'gptq'"):
        quantize_experts(moe, batches(), "gptq", clip=True)
    with pytest.raises(ValueError, match="unrouted="):
        quantize_experts(moe, batches(), "gptq", unrouted="drop")
    with pytest.raises(ValueError, match="batches"):
        quantize_experts(moe, None, "awq")
    with pytest.raises(ValueError, match=r"layers \[7\]"):
        quantize_experts(moe, None, "rtn", layers=[7])
    with pytest.raises(ValueError, match="layers_per_pass="):
        quantize_experts(moe, batches(), "gptq", layers_per_pass=0)
    with pytest.raises(ValueError, match="no MoE layer"):
        quantize_experts(tiny_llama(), None, "rtn")


def test_weight_bits_report_counts():
    """2 layers x 4 experts of width 32, H = 64: gate/up [32, 64], down [64, 32] per expert."""
    rep = weight_bits_report(tiny_moe(), bits=4, group_size=128)
    assert rep["params"] == 2 * 4 * 3 * 32 * 64 == 49152
    assert rep["groups"] == 2 * 4 * (32 + 32 + 64)  # one group per row (group wider than every row)
    assert rep["bytes"] == {"fp32": 196608, "fp16": 98304, "quantized": 49152 / 2 + 1024 * 2.5}
    rep16 = weight_bits_report(tiny_moe(), bits=4, group_size=16)
    assert rep16["groups"] == 2 * 4 * (32 * 4 + 32 * 4 + 64 * 2)
    assert rep16["bits_per_weight"] == pytest.approx(4 + 2.5 * 8 / 16)
    assert (
        weight_bits_report(tiny_moe(), 8, 16, g_idx=True)["bytes"]["quantized"]
        == 49152 + 3072 * 3 + 4 * 2 * 4 * 160
    )
