"""Expert Slimming pruning: exact sparsity patterns, hand-computed scores, SparseGPT's reconstruction, and
that prune_experts touches only the experts' linear weights."""

import pytest
import torch
from conftest import tiny_softmax_moe

from moelab.compress.calibration import expert_linears, routed_inputs
from moelab.compress.prune import (
    magnitude_mask,
    parse_pattern,
    prune_experts,
    sparsegpt_prune,
    wanda_mask,
)


def tiny_moe(num_experts=4, shared=0):
    return tiny_softmax_moe(num_experts=num_experts, num_shared_experts=shared)


def batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    return [{"input_ids": ids, "attention_mask": mask}]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def groups_kept(mask, m):
    return mask.reshape(mask.shape[0], -1, m).sum(-1)


# ---- per-matrix masks --------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.75])
def test_unstructured_masks_hit_the_exact_sparsity_of_their_group(sparsity):
    W, X = rand(24, 40), rand(50, 40, seed=1)
    mag = magnitude_mask(W, sparsity)
    assert int((~mag).sum()) == int(24 * 40 * sparsity)  # per matrix
    wan = wanda_mask(W, X, sparsity)
    assert ((~wan).sum(1) == int(40 * sparsity)).all()  # per output row
    # the kept weights score above every pruned one in their group
    if 0 < sparsity:
        a = W.abs()
        assert a[mag].min() >= a[~mag].max()
        s = W.abs() * X.norm(dim=0)
        for r in range(24):
            assert s[r][wan[r]].min() >= s[r][~wan[r]].max()


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8)])
def test_n_m_masks_keep_exactly_n_of_every_m(pattern, n, m):
    W, X = rand(16, 32), rand(20, 32, seed=1)
    for mask in (magnitude_mask(W, pattern=pattern), wanda_mask(W, X, pattern=pattern)):
        assert (groups_kept(mask, m) == n).all()
    new, mask = sparsegpt_prune(W, X, pattern=pattern)
    assert (groups_kept(mask, m) == n).all()
    assert ((new != 0) == mask).all()
    # magnitude keeps the n largest |w| of each group
    g = W.abs().reshape(16, -1, m)
    kept = magnitude_mask(W, pattern=pattern).reshape(16, -1, m)
    assert torch.equal(kept, g >= g.topk(n, dim=-1).values[..., -1:])


def test_wanda_equals_magnitude_when_all_input_norms_are_equal():
    W = rand(8, 16)
    X = torch.zeros(16, 16)
    X[torch.arange(16), torch.arange(16)] = 3.0  # every column norm is 3
    X[1, 1] = 0.0
    X[5, 1] = 3.0  # column 1 still has norm 3, different rows
    assert torch.equal(wanda_mask(W, X, 0.5), magnitude_mask(W, 0.5, group="row"))
    assert torch.equal(wanda_mask(W, X, pattern="2:4"), magnitude_mask(W, pattern="2:4"))
    assert torch.equal(wanda_mask(W, X, 0.5, group="matrix"), magnitude_mask(W, 0.5))


def test_hand_computed_2x4_magnitude_and_wanda():
    W = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-0.5, 6.0, 0.25, 2.0]])
    X = torch.tensor([[3.0, 0.0, 1.0, 0.0], [4.0, 1.0, 0.0, 0.1]])  # column norms 5, 1, 1, 0.1
    # magnitude, per matrix, 50%: |W| = 1 2 3 4 / .5 6 .25 2 -> zero the four smallest: .25, .5, 1, then 2 vs 2
    # (tie broken by lower flat index: W[0,1] = -2 before W[1,3] = 2)
    assert magnitude_mask(W, 0.5).tolist() == [[False, False, True, True], [False, True, False, True]]
    # wanda scores |W| * norm: row 0: 5, 2, 3, 0.4; row 1: 2.5, 6, 0.25, 0.2 -> keep the top 2 per row
    assert wanda_mask(W, X, 0.5).tolist() == [[True, False, True, False], [True, True, False, False]]
    # 2:4 is the same here (one group of 4 per row)
    assert wanda_mask(W, X, pattern="2:4").tolist() == wanda_mask(W, X, 0.5).tolist()
    assert magnitude_mask(W, pattern="2:4").tolist() == [
        [False, False, True, True],
        [False, True, False, True],
    ]


# ---- SparseGPT ---------------------------------------------------------------------------------------


def test_sparsegpt_reconstructs_better_than_magnitude_and_wanda():
    """||W X^T - W' X^T|| at the same sparsity, on correlated inputs (as real activations are)."""
    W = rand(48, 64)
    X = rand(200, 24, seed=1) @ rand(24, 64, seed=2) + 0.3 * rand(200, 64, seed=3)

    def err(Wp):
        return float(torch.linalg.norm(W @ X.T - Wp @ X.T))

    for kw in ({"sparsity": 0.5}, {"pattern": "2:4"}, {"pattern": "4:8"}):
        new, mask = sparsegpt_prune(W, X, block_size=32, **kw)  # two blocks: the lazy update is used
        assert float((new == 0).float().mean()) == 0.5
        assert err(new) < 0.8 * err(W * wanda_mask(W, X, **kw)) < 0.8 * err(W * magnitude_mask(W, **kw)), kw


def test_sparsegpt_beats_magnitude_on_a_calibration_batch():
    moe = tiny_moe(num_experts=4, shared=1)
    ids = torch.randint(0, 256, (4, 48), generator=torch.Generator().manual_seed(3))
    r = routed_inputs(moe, [{"input_ids": ids}], layers=[0])[0]
    for lin in expert_linears(moe.model.layers[0].mlp, r, 0):
        W, X = lin.weight, lin.inputs
        assert X.shape[0] > 100  # more tokens than inputs, as at paper scale

        def err(Wp, W=W, X=X):
            return float(torch.linalg.norm(W @ X.T - Wp @ X.T))

        for kw in ({"sparsity": 0.5}, {"pattern": "2:4"}):
            new, _ = sparsegpt_prune(W, X, **kw)
            assert err(new) < 0.95 * err(W * magnitude_mask(W, **kw)), (lin.expert, lin.name, kw)


def test_sparsegpt_single_pruned_column_is_the_exact_obs_update():
    """Pruning only column 0 of every row: W' = W - W[:, :1] [H^-1]_{0,:} / [H^-1]_00 (OBS, SparseGPT eq. 3)."""
    X = rand(100, 16, seed=1) @ rand(16, 16, seed=2)
    W = rand(6, 16)
    W[:, 0] *= 1e-3  # lowest w^2 / U_00^2 in every row
    new, mask = sparsegpt_prune(W.double(), X.double(), sparsity=1 / 16)
    assert (~mask[:, 0]).all() and mask[:, 1:].all()
    H = X.double().T @ X.double()
    H += 0.01 * H.diagonal().mean() * torch.eye(16, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    expected = W.double() - W.double()[:, :1] * Hinv[:1] / Hinv[0, 0]
    torch.testing.assert_close(new, expected)


def test_sparsegpt_masks_and_updates():
    W = rand(48, 64)
    X = rand(200, 24, seed=1) @ rand(24, 64, seed=2) + 0.3 * rand(200, 64, seed=3)
    # unstructured: exactly floor(p * out * B) zeros in every column block (its comparison group)
    new, mask = sparsegpt_prune(W, X, sparsity=0.3, block_size=32)
    for i in (0, 32):
        assert int((~mask[:, i : i + 32]).sum()) == int(0.3 * 48 * 32)
    # H given instead of X gives the same result; sparsity 0 leaves W unchanged
    again, _ = sparsegpt_prune(W, H=X.T @ X, sparsity=0.3, block_size=32)
    torch.testing.assert_close(again, new)
    same, keep = sparsegpt_prune(W, X, sparsity=0.0)
    assert keep.all() and torch.equal(same, W)


def test_sparsegpt_keeps_dtype_and_does_not_modify_its_input():
    W = rand(8, 16).to(torch.bfloat16)
    before = W.clone()
    new, _ = sparsegpt_prune(W, rand(30, 16, seed=2), pattern="2:4")
    assert new.dtype == torch.bfloat16 and torch.equal(W, before)


# ---- the model ---------------------------------------------------------------------------------------


def _non_expert_state(model):
    return {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not (".mlp.experts." in k or ".mlp.shared_experts." in k)
    }


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_experts_touches_only_expert_weights(method):
    moe = tiny_moe(num_experts=4, shared=1)
    before = _non_expert_state(moe)
    assert any(".router." in k for k in before) and any("embed_tokens" in k for k in before)
    report = prune_experts(moe, batches(), method, sparsity=0.5)
    after = moe.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k  # router, attention, embeddings, norms bitwise untouched
    assert report["sparsity_achieved"] == pytest.approx(0.5, abs=1e-9)
    for layer in report["layers"]:
        assert layer["shared"]["tokens"] == 28  # 32 positions minus 4 padding
        assert layer["shared"]["sparsity"] == pytest.approx(0.5)
        for item in layer["experts"]:
            assert item["sparsity"] == pytest.approx(0.5) and item["scored_by"] == method
        assert sum(i["tokens"] for i in layer["experts"]) == 28 * 2  # top-2
    block = moe.model.layers[0].mlp
    for p in (block.experts.gate_proj, block.experts.down_proj, block.shared_experts.up_proj.weight):
        assert float((p == 0).float().mean()) == pytest.approx(0.5)
    out = moe(**batches()[0]).logits
    assert torch.isfinite(out).all()


def test_prune_experts_n_m_on_every_expert_matrix_in_linear_orientation():
    moe = tiny_moe(num_experts=4)
    prune_experts(moe, batches(), "wanda", pattern="2:4")
    r = routed_inputs(moe, batches(), layers=[1])[1]
    for lin in expert_linears(moe.model.layers[1].mlp, r, 1):
        assert (groups_kept(lin.weight != 0, 4) == 2).all(), (lin.expert, lin.name)
    # down_proj's groups run along the expert's neurons (its input), i.e. along columns of [H, I_tot]
    down = moe.model.layers[1].mlp.experts.down_proj
    assert (groups_kept(down != 0, 4) == 2).all()


def test_wanda_in_the_model_uses_each_experts_routed_tokens():
    moe = tiny_moe(num_experts=4)
    block = moe.model.layers[0].mlp
    r = routed_inputs(moe, batches(), layers=[0])[0]
    expected = {
        (lin.expert, lin.name): lin.weight * wanda_mask(lin.weight, lin.inputs, 0.5)
        for lin in expert_linears(block, r, 0)
    }
    prune_experts(moe, batches(), "wanda", sparsity=0.5, layers=[0])
    for (e, name), w in expected.items():
        rows = block.experts.expert_slice(e)
        got = getattr(block.experts, name)[rows] if name != "down_proj" else block.experts.down_proj[:, rows]
        assert torch.equal(got, w), (e, name)
    assert (moe.model.layers[1].mlp.experts.gate_proj != 0).all()  # layer 1 not asked for


def _silence_expert(moe, layer, expert):
    """Router rows so that `expert` never enters the top-2 of 8: rows 0/1 = +-v and 2/3 = +-u make two logits
    >= 0 for every token, and the expert's zero row gives logit 0 (ties have probability 0)."""
    w = moe.model.layers[layer].mlp.router.gate_network.weight  # [8, H]
    with torch.no_grad():
        w[1] = -w[0]
        w[3] = -w[2]
        w[expert] = 0.0


@pytest.mark.parametrize("unrouted", ["magnitude", "skip"])
def test_unrouted_expert_follows_the_named_option_and_is_reported(unrouted):
    moe = tiny_moe(num_experts=8)
    _silence_expert(moe, 0, 6)
    report = prune_experts(moe, batches(), "sparsegpt", sparsity=0.5, unrouted=unrouted)
    layer0 = report["layers"][0]
    assert layer0["unrouted"] == [6]
    item = layer0["experts"][6]
    assert item["tokens"] == 0
    ex = moe.model.layers[0].mlp.experts
    rows = ex.expert_slice(6)
    gate = ex.gate_proj[rows]
    if unrouted == "skip":
        assert item["scored_by"] == "dense" and item["sparsity"] == 0.0 and (gate != 0).all()
    else:
        assert item["scored_by"] == "magnitude" and item["sparsity"] == pytest.approx(0.5)
        assert int((gate == 0).sum()) == gate.numel() // 2
    assert all(i["scored_by"] == "sparsegpt" for i in layer0["experts"] if i["expert"] != 6)
    assert torch.isfinite(moe(**batches()[0]).logits).all()


def test_magnitude_needs_no_calibration_and_passes_agree():
    a, b = tiny_moe(), tiny_moe()
    prune_experts(a, None, "magnitude", pattern="4:8")
    rep = prune_experts(b, batches(), "magnitude", pattern="4:8")
    assert torch.equal(a.model.layers[0].mlp.experts.up_proj, b.model.layers[0].mlp.experts.up_proj)
    assert rep["sparsity_achieved"] == pytest.approx(0.5)
    c, d = tiny_moe(), tiny_moe()
    prune_experts(c, batches(), "sparsegpt", sparsity=0.4)
    prune_experts(d, batches(), "sparsegpt", sparsity=0.4, layers_per_pass=1)  # still one-shot
    for k, v in c.state_dict().items():
        assert torch.equal(v, d.state_dict()[k]), k


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_names_the_parameter():
    W, X = rand(4, 8), rand(5, 8)
    for kw, key in [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({}, "sparsity"),
        ({"pattern": "4:2"}, "pattern"),
        ({"pattern": "2-4"}, "pattern"),
        ({"pattern": "a:b"}, "pattern"),
        ({"pattern": "2:4", "sparsity": 0.5}, "sparsity"),
        ({"pattern": "3:16"}, "pattern"),  # 8 inputs are no multiple of 16
    ]:
        with pytest.raises(ValueError, match=key):
            magnitude_mask(W, **kw)
        with pytest.raises(ValueError, match=key):
            sparsegpt_prune(W, X, **kw)
    with pytest.raises(ValueError, match="group"):
        magnitude_mask(W, 0.5, group="column")
    with pytest.raises(ValueError, match="X"):
        wanda_mask(W, rand(0, 8), 0.5)
    with pytest.raises(ValueError, match="X"):
        wanda_mask(W, rand(5, 7), 0.5)
    with pytest.raises(ValueError, match="exactly one of X"):
        sparsegpt_prune(W, sparsity=0.5)
    with pytest.raises(ValueError, match="block_size"):
        sparsegpt_prune(W, X, pattern="2:4", block_size=6)
    moe = tiny_moe()
    for kw, key in [
        ({"method": "obs", "sparsity": 0.5}, "method"),
        ({"method": "wanda", "sparsity": 0.5, "unrouted": "drop"}, "unrouted"),
        ({"method": "wanda", "sparsity": 0.5, "layers": [7]}, "layers"),
        ({"method": "wanda", "sparsity": 1.5}, "sparsity"),
        ({"method": "wanda", "pattern": "8:4"}, "pattern"),
    ]:
        with pytest.raises(ValueError, match=key):
            prune_experts(moe, batches(), **kw)
    with pytest.raises(ValueError, match="batches"):
        prune_experts(moe, None, "wanda", sparsity=0.5)
    assert parse_pattern("2:4", None) == (2, 4) and parse_pattern("unstructured", 0.5) is None
