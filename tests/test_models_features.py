"""LlamaMoE model features: shared experts, dense layers, per-layer experts and scales, ablation routers."""

import pytest
import torch
from conftest import TINY
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaMLP

from moelab.compress.drop import drop_blocks
from moelab.construct import dense_to_moe, random_split
from moelab.models import (
    PER_LAYER_FIELDS,
    FrozenRandomRouter,
    LlamaMoEConfig,
    LlamaMoEForCausalLM,
    LlamaMoESparseBlock,
    dense_layer_types,
)

IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))


def tiny_dense(num_layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**TINY, "num_hidden_layers": num_layers})).eval()


def tiny_model(seed: int = 0, **moe) -> LlamaMoEForCausalLM:
    torch.manual_seed(seed)
    return LlamaMoEForCausalLM(LlamaMoEConfig(**{**TINY, "num_experts": 4, "top_k": 2, **moe})).eval()


def zero_routers_(model) -> None:
    """Zero the last gate Linear: every expert gets probability 1/N (uniform gate)."""
    with torch.no_grad():
        for layer in model.model.layers:
            if isinstance(layer.mlp, LlamaMoESparseBlock):
                net = layer.mlp.router.gate_network
                (net[-1] if isinstance(net, torch.nn.Sequential) else net).weight.zero_()


# ---- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"mlp_layer_types": ["moe", "sparse"]}, "mlp_layer_types"),
        ({"mlp_layer_types": ["moe"]}, "mlp_layer_types"),
        ({"num_experts_per_layer": [4, 0]}, "num_experts_per_layer"),
        ({"num_experts_per_layer": [4, 1]}, "top_k"),
        ({"score_scale_factor": [1.0]}, "score_scale_factor"),
        ({"score_scale_factor": [1.0, -2.0]}, "score_scale_factor"),
        ({"num_shared_experts": -1}, "num_shared_experts"),
        ({"num_shared_experts": 1, "shared_expert_sizes": [[32], [32, 32]]}, "shared_expert_sizes"),
        ({"shared_expert_scale": [1.0, 1.0, 1.0]}, "shared_expert_scale"),
        ({"router_type": "hash"}, "router_type"),
        ({"attention_moe": True, "attention_expert_split": 3}, "attention_expert_split"),
        ({"attention_moe": True, "attention_top_k": 3}, "attention_top_k"),
    ],
)
def test_config_rejects_bad_new_fields_naming_them(bad, field):
    with pytest.raises(ValueError, match=field):
        LlamaMoEConfig(**TINY, **{"num_experts": 4, "top_k": 2, **bad})


def test_per_layer_accessors_and_dense_layer_types():
    cfg = LlamaMoEConfig(
        **{**TINY, "num_hidden_layers": 3},
        num_experts=4,
        top_k=2,
        num_experts_per_layer=[4, 2, 8],
        score_scale_factor=[1.0, None, 3.0],
        num_shared_experts=[0, 1, 2],
        shared_expert_scale=[1.0, 0.5, 2.0],
        mlp_layer_types=dense_layer_types(3, [0]),
    )
    assert cfg.mlp_layer_types == ["dense", "moe", "moe"]
    assert cfg.moe_layer_indices == [1, 2] and cfg.dense_layer_indices == [0]
    assert [cfg.layer_num_experts(i) for i in range(3)] == [4, 2, 8]
    assert cfg.layer_expert_sizes(2) == [16] * 8
    assert cfg.layer_score_scale_factor(1) == 1.0  # None -> N_l / top_k = 2 / 2
    assert cfg.layer_score_scale_factor(2) == 3.0
    assert cfg.layer_shared_expert_sizes(2) == [32, 32] and cfg.layer_shared_expert_sizes(0) == []
    assert cfg.layer_shared_expert_scale(1) == 0.5
    with pytest.raises(ValueError, match="per-layer"):
        _ = cfg.resolved_score_scale_factor
    with pytest.raises(ValueError, match="index 5"):
        dense_layer_types(3, [5])
    assert dense_layer_types(4, [0, -1]) == ["dense", "moe", "moe", "dense"]


# ---- shared experts and dense layers ----------------------------------------------------------------------


@pytest.mark.parametrize("dense_layers", [(), (0,)])
def test_shared_expert_plus_all_routed_experts_equals_dense(dense_layers):
    """1 shared + 3 routed experts cut from one FFN; all routed active with g = 1/3 and s = 3: y = FFN(x)."""
    dense = tiny_dense()
    moe = dense_to_moe(
        dense,
        random_split(128, 4, seed=3, num_layers=2),
        top_k=3,
        router_type="softmax_topk",
        gate_network="linear",
        balance_loss_weight=0.01,
        score_scale_factor=3.0,
        seed=0,
        num_shared_experts=1,
        dense_layers=dense_layers,
    )
    cfg = moe.config
    assert cfg.num_experts == 3 and cfg.num_shared_experts == 1
    assert cfg.shared_expert_sizes == [[32], [32]]
    assert cfg.moe_layer_indices == [i for i in range(2) if i not in dense_layers]
    assert type(moe.model.layers[0].mlp) is (LlamaMLP if dense_layers else LlamaMoESparseBlock)
    zero_routers_(moe)
    assert torch.allclose(moe(IDS).logits, dense(IDS).logits, atol=1e-4)
    out = moe(IDS, output_router_logits=True)
    assert len(out.router_logits) == len(cfg.moe_layer_indices)
    assert out.router_logits[-1].shape == (18, 3)


def test_shared_expert_scale_multiplies_only_the_shared_part():
    model = tiny_model(num_shared_experts=1, shared_expert_scale=[1.0, 2.5])
    block0, block1 = model.model.layers[0].mlp, model.model.layers[1].mlp
    block1.load_state_dict(block0.state_dict())
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    y0, _ = block0(x)
    y1, _ = block1(x)
    shared = block0.shared_experts(x)
    assert torch.allclose(y1 - y0, 1.5 * shared, atol=1e-6)
    assert shared.abs().max() > 1e-3


def test_per_layer_score_scale_factor_scales_the_routed_output():
    model = tiny_model(router_type="softmax_topk", score_scale_factor=[1.0, 3.0])
    block0, block1 = model.model.layers[0].mlp, model.model.layers[1].mlp
    assert (block0.score_scale_factor, block1.score_scale_factor) == (1.0, 3.0)
    block1.load_state_dict(block0.state_dict())
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(block1(x)[0], 3.0 * block0(x)[0], atol=1e-6)


def test_per_layer_num_experts_shapes_and_round_trip(tmp_path):
    model = tiny_model(
        num_experts_per_layer=[2, 8],
        expert_sizes=[[64, 64], [16] * 8],
        router_type="softmax_topk",
        num_shared_experts=[1, 0],
        shared_expert_sizes=[[48], []],
    )
    out = model(IDS, output_router_logits=True)
    assert [r.shape[1] for r in out.router_logits] == [2, 8]
    assert model.model.layers[0].mlp.shared_experts.down_proj.weight.shape == (64, 48)
    assert model.model.layers[1].mlp.shared_experts is None
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.num_experts_per_layer == [2, 8]
    assert torch.allclose(loaded(IDS).logits, out.logits, atol=1e-6)


def test_dropping_layers_slices_every_per_layer_field(tmp_path):
    """compress.drop_blocks + PER_LAYER_FIELDS keeps a model with per-layer fields loadable and equal."""
    model = tiny_model(
        num_hidden_layers=3,
        num_experts_per_layer=[2, 4, 8],
        mlp_layer_types=["dense", "moe", "moe"],
        score_scale_factor=[1.0, 2.0, 3.0],
        num_shared_experts=[0, 1, 0],
        shared_expert_scale=[1.0, 0.5, 1.0],
    )
    ref_layer = model.model.layers[2]
    drop_blocks(model, [1], PER_LAYER_FIELDS)
    cfg = model.config
    assert cfg.num_experts_per_layer == [2, 8] and cfg.mlp_layer_types == ["dense", "moe"]
    assert cfg.score_scale_factor == [1.0, 3.0] and cfg.num_shared_experts == [0, 0]
    assert model.model.layers[1] is ref_layer
    logits = model(IDS).logits
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(loaded(IDS).logits, logits, atol=1e-6)


# ---- ablation routers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("weighting", ["uniform", "softmax"])
def test_frozen_random_router_is_seeded_untrainable_and_balanced(weighting):
    router = FrozenRandomRouter(hidden_size=32, num_experts=4, top_k=2, weighting=weighting, seed=3)
    assert list(router.parameters()) == []
    same = FrozenRandomRouter(32, 4, 2, weighting, seed=3)
    other = FrozenRandomRouter(32, 4, 2, weighting, seed=4)
    assert torch.equal(router.projection, same.projection)
    assert not torch.equal(router.projection, other.projection)
    x = torch.randn(4000, 32, generator=torch.Generator().manual_seed(0))
    out = router(x)
    assert torch.equal(out.top_k_index, router(x).top_k_index)  # deterministic per token
    assert out.balance_loss.item() == 0.0
    assert torch.allclose(out.top_k_weights.sum(-1), torch.ones(4000))
    if weighting == "uniform":
        assert (out.top_k_weights == 0.5).all()
    else:
        assert (out.top_k_weights[:, 0] >= out.top_k_weights[:, 1]).all()
    assert out.load.sum().item() == 8000
    # random assignment over isotropic tokens: every expert gets ~1/4 of the slots (std ~ 1%)
    assert torch.allclose(out.load / 8000, torch.full((4,), 0.25), atol=0.05), out.load


@pytest.mark.parametrize("router_type", ["uniform", "random"])
def test_ablation_routers_in_the_model_round_trip_and_generate(router_type, tmp_path):
    model = tiny_model(seed=2, router_type=router_type, router_seed=7)
    proj = model.model.layers[1].mlp.router.projection
    assert torch.equal(proj, FrozenRandomRouter(64, 4, 2, "uniform", seed=8).projection)  # seed + layer
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.model.layers[1].mlp.router.projection, proj)
    assert torch.allclose(loaded(IDS).logits, model(IDS).logits, atol=1e-6)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(IDS, use_cache=True, **kw), model.generate(IDS, use_cache=False, **kw))
    model.train()
    out = model(IDS, labels=IDS)
    assert out.aux_loss.item() == 0.0
    out.loss.backward()
    assert model.model.layers[0].mlp.experts.gate_proj.grad.abs().sum() > 0
