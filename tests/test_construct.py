"""Dense -> MoE construction: Independent-Random split and weight surgery (tiny random Llama)."""

import pytest
import torch
from conftest import TINY
from transformers import LlamaConfig, LlamaForCausalLM

from moelab.construct import CONSTRUCT_METHODS, dense_to_moe, partition_for, random_split


def tiny_dense(tie: bool = True, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=tie)).eval()


# ---- random_split -----------------------------------------------------------------------------------------


def test_random_split_is_an_exact_cover_of_equal_sorted_parts():
    partition = random_split(128, 4, seed=7, num_layers=3)
    assert len(partition) == 3
    for layer in partition:
        assert [len(p) for p in layer] == [32] * 4
        assert all(torch.equal(p, p.sort().values) for p in layer)
        assert torch.equal(torch.cat(layer).sort().values, torch.arange(128))
    assert not torch.equal(partition[0][0], partition[1][0])  # layers are shuffled independently


def test_random_split_is_deterministic_per_seed():
    a, b, c = random_split(128, 4, 1, 2), random_split(128, 4, 1, 2), random_split(128, 4, 2, 2)
    assert all(torch.equal(x, y) for la, lb in zip(a, b, strict=True) for x, y in zip(la, lb, strict=True))
    assert not all(
        torch.equal(x, y) for la, lc in zip(a, c, strict=True) for x, y in zip(la, lc, strict=True)
    )


def test_random_split_errors_name_the_sizes():
    with pytest.raises(ValueError, match=r"num_experts=3 does not divide intermediate_size=128"):
        random_split(128, 3, seed=0, num_layers=2)
    with pytest.raises(ValueError, match="must all be positive"):
        random_split(128, 0, seed=0, num_layers=2)


def test_partition_for_dispatches_and_rejects_unknown_methods():
    assert CONSTRUCT_METHODS["random"] is random_split
    p = partition_for("random", intermediate_size=64, num_experts=2, seed=0, num_layers=1)
    assert torch.equal(p[0][1], random_split(64, 2, 0, 1)[0][1])
    with pytest.raises(ValueError, match=r"'kmeans'.*'random'"):
        partition_for("kmeans", intermediate_size=64, num_experts=2, seed=0, num_layers=1)


# ---- dense_to_moe -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "router_type, gate_network",
    [("noisy_topk", "mlp"), ("noisy_topk", "linear"), ("softmax_topk", "linear")],
)
@pytest.mark.parametrize("tie", [True, False])
def test_all_experts_active_with_uniform_gate_equals_dense(router_type, gate_network, tie):
    """top_k = N, router weights 1/N each (zero logits) and scale N: sum_i (1/N) N E_i(x) = FFN(x)."""
    dense = tiny_dense(tie=tie)
    moe = dense_to_moe(
        dense,
        random_split(128, 4, seed=3, num_layers=2),
        top_k=4,
        router_type=router_type,
        gate_network=gate_network,
        balance_loss_weight=0.01,
        score_scale_factor=4.0,
        seed=0,
    )
    with torch.no_grad():
        for layer in moe.model.layers:
            last = layer.mlp.router.gate_network
            last = last[-1] if isinstance(last, torch.nn.Sequential) else last
            last.weight.zero_()
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(moe(ids).logits, dense(ids).logits, atol=1e-4)
    assert (moe.lm_head.weight.data_ptr() == moe.model.embed_tokens.weight.data_ptr()) == tie


def test_dense_to_moe_slices_ffn_weights_and_copies_the_rest():
    dense = tiny_dense()
    partition = random_split(128, 4, seed=5, num_layers=2)
    moe = dense_to_moe(
        dense,
        partition,
        top_k=2,
        router_type="noisy_topk",
        gate_network="mlp",
        balance_loss_weight=0.01,
        seed=1,
    )
    assert moe.config.num_experts == 4 and moe.config.top_k == 2 and moe.config.expert_sizes is None
    assert moe.config.resolved_score_scale_factor == 2.0
    for layer_idx in range(2):
        d, m = dense.model.layers[layer_idx], moe.model.layers[layer_idx]
        for e in range(4):
            s, idx = m.mlp.experts.expert_slice(e), partition[layer_idx][e]
            assert torch.equal(m.mlp.experts.gate_proj[s], d.mlp.gate_proj.weight[idx])
            assert torch.equal(m.mlp.experts.up_proj[s], d.mlp.up_proj.weight[idx])
            assert torch.equal(m.mlp.experts.down_proj[:, s], d.mlp.down_proj.weight[:, idx])
        assert torch.equal(m.self_attn.k_proj.weight, d.self_attn.k_proj.weight)
        assert torch.equal(m.mlp.router.weight_noise.weight, torch.zeros(4, 64))
    assert torch.equal(moe.model.norm.weight, dense.model.norm.weight)


def test_dense_to_moe_router_init_is_seeded():
    dense, partition = tiny_dense(), random_split(128, 4, seed=5, num_layers=2)
    kw = dict(top_k=2, router_type="softmax_topk", gate_network="linear", balance_loss_weight=0.0)
    a = dense_to_moe(dense, partition, seed=11, **kw).model.layers[1].mlp.router.gate_network.weight
    b = dense_to_moe(dense, partition, seed=11, **kw).model.layers[1].mlp.router.gate_network.weight
    c = dense_to_moe(dense, partition, seed=12, **kw).model.layers[1].mlp.router.gate_network.weight
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dense_to_moe_uneven_sizes_recorded_in_config():
    dense = tiny_dense()
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    partition = [[perm[:16], perm[16:64], perm[64:96], perm[96:]]] * 2
    moe = dense_to_moe(
        dense,
        partition,
        top_k=2,
        router_type="noisy_topk",
        gate_network="mlp",
        balance_loss_weight=0.01,
        seed=0,
    )
    assert moe.config.expert_sizes == [[16, 48, 32, 32], [16, 48, 32, 32]]


def test_dense_to_moe_rejects_bad_partitions():
    dense = tiny_dense()
    kw = dict(top_k=2, router_type="noisy_topk", gate_network="mlp", balance_loss_weight=0.01, seed=0)
    with pytest.raises(ValueError, match="num_hidden_layers=2"):
        dense_to_moe(dense, random_split(128, 4, 0, 3), **kw)
    bad = random_split(128, 4, 0, 2)
    bad[1][2] = torch.tensor([0, 200])
    with pytest.raises(ValueError, match=r"partition\[1\]\[2\].*intermediate_size=128"):
        dense_to_moe(dense, bad, **kw)
