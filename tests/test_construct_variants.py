"""Construction variants: shared experts on exact-cover splits (v2 "1+7top1"), attention MoE, both."""

import pytest
import torch
from test_construct_methods import WIDTH, L, tiny_dense

from moelab.construct import construct_variant, init_routers, load_partition, save_partition, sequential_split
from moelab.io import count_parameters


@pytest.fixture(scope="module")
def dense():
    return tiny_dense()


def ids():
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


def test_sequential_with_shared_expert_first_block_is_shared_and_all_active_equals_dense(dense):
    # 1 shared + 3 routed, all routed active with uniform gates and scale 3: shared + 3 * mean(E_i) = FFN
    spec = {
        "method": "sequential",
        "num_experts": 4,
        "top_k": 4,
        "num_shared_experts": 1,
        "score_scale_factor": 3.0,
    }
    out = construct_variant(dense, None, spec, seed=0, gate_network="linear", progress=False)
    cfg = out.model.config
    assert (cfg.num_experts, cfg.top_k, cfg.num_shared_experts) == (3, 3, 1)
    expected = sequential_split(WIDTH, 4, num_layers=L)
    assert all(
        torch.equal(a, b)
        for la, lb in zip(out.partition, expected, strict=True)
        for a, b in zip(la, lb, strict=True)
    )
    assert out.stats["shared_neurons"] == [WIDTH // 4] * L and out.stats["attention"] is None
    init_routers(out.model, "zero", seed=0, progress=False)
    with torch.no_grad():
        torch.testing.assert_close(
            out.model(input_ids=ids()).logits, dense(input_ids=ids()).logits, rtol=1e-4, atol=1e-4
        )


def test_attention_only_keeps_mlp_dense_and_counts_active_heads(dense, tmp_path):
    out = construct_variant(dense, None, {"mlp_moe": False, "attention_top_k": 1}, seed=0)
    cfg = out.model.config
    assert cfg.attention_moe and cfg.mlp_layer_types == ["dense"] * L and out.partition == []
    assert out.stats["attention"] == {"num_experts": 2, "top_k": 1, "expert_split": 1}
    assert out.stats["num_experts"] == 0 and out.stats["timing_s"]["attention"] >= 0
    assert load_partition(save_partition(out.partition, tmp_path / "p.safetensors")) == []
    n = count_parameters(out.model)
    assert n["active"] < n["total"] == count_parameters(dense)["total"] + L * 2 * 64  # + routers (h x E_a)


def test_mlp_and_attention_moe_together_and_same_seed_same_model(dense):
    spec = {
        "method": "random",
        "num_experts": 4,
        "top_k": 2,
        "attention_top_k": 1,
        "attention_expert_split": 2,
    }
    a = construct_variant(dense, None, spec, seed=3, progress=False)
    b = construct_variant(dense, None, spec, seed=3, progress=False)
    assert a.model.config.attention_moe and a.model.config.num_experts == 4
    assert a.stats["attention"]["num_experts"] == 4
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert torch.isfinite(a.model(input_ids=ids()).logits).all()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            {"num_experts": 4, "top_k": 2, "experts": 3},
            r"unknown construction variant key\(s\) \['experts'\]",
        ),
        ({"mlp_moe": False}, "builds nothing"),
        ({"top_k": 2}, "needs 'num_experts'"),
        (
            {"method": "sharing_inter", "num_experts": 4, "top_k": 2, "num_shared_experts": 0},
            "num_shared_experts >= 1",
        ),
        ({"num_experts": 4, "top_k": 1, "num_shared_experts": 1}, "top_k=1 must exceed the shared experts"),
        ({"mlp_moe": False, "attention_top_k": 3}, "attention_top_k must be an int in"),
    ],
)
def test_bad_variants_fail_naming_the_problem(dense, spec, match):
    with pytest.raises(ValueError, match=match):
        construct_variant(dense, None, spec, seed=0, progress=False)
