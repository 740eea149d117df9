"""The activated-width dense baseline equals the MoE with its router pinned to the chosen experts."""

import pytest
import torch
from conftest import tiny_llama
from transformers import LlamaForCausalLM

from moelab.construct import dense_to_moe, moe_to_activated_dense, random_split
from moelab.models.routers import RouterOutput


def tiny_moe(num_experts=4, top_k=2, score_scale_factor=None, **kw):
    return dense_to_moe(
        tiny_llama(),
        random_split(128, num_experts, seed=5, num_layers=2),
        top_k=top_k,
        router_type="noisy_topk",
        gate_network="mlp",
        balance_loss_weight=0.01,
        score_scale_factor=score_scale_factor,
        seed=1,
        **kw,
    )


def pin_routers(moe, experts):
    """Replace every router by one that sends each token to `experts` with equal gates."""
    k = len(experts)
    n = moe.config.num_experts

    def pinned(x):
        t = x.shape[0]
        index = torch.tensor(experts).expand(t, k)
        return RouterOutput(
            logits=torch.zeros(t, n),
            top_k_weights=torch.full((t, k), 1.0 / k),
            top_k_index=index,
            balance_loss=torch.zeros(()),
            importance=torch.zeros(n),
            load=torch.zeros(n),
        )

    for layer in moe.model.layers:
        layer.mlp.router.forward = pinned


@pytest.mark.parametrize("experts,scale", [(None, None), ([3, 1], None), ([2], 3.0)])
def test_activated_dense_equals_the_pinned_moe(experts, scale):
    moe = tiny_moe(score_scale_factor=scale)
    dense = moe_to_activated_dense(moe, experts)
    chosen = [0, 1] if experts is None else experts
    assert isinstance(dense, LlamaForCausalLM)
    assert dense.config.intermediate_size == 32 * len(chosen)  # 128 neurons / 4 experts each
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    pin_routers(moe, chosen)
    with torch.no_grad():
        want = moe(ids).logits
        got = dense(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_activated_dense_keeps_attention_embeddings_and_tying():
    moe = tiny_moe()
    dense = moe_to_activated_dense(moe)
    assert dense.lm_head.weight.data_ptr() == dense.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(
        dense.model.layers[1].self_attn.q_proj.weight, moe.model.layers[1].self_attn.q_proj.weight
    )
    # hand check: scale s/k = (4/2)/2 = 1 on expert 0's first neuron, which sits at column 0
    e0 = moe.model.layers[0].mlp.experts.expert_slice(0)
    torch.testing.assert_close(
        dense.model.layers[0].mlp.down_proj.weight[:, 0],
        moe.model.layers[0].mlp.experts.down_proj[:, e0.start],
    )
    n_moe_ffn = 3 * 64 * 128 * 2
    n_dense_ffn = sum(p.numel() for n, p in dense.named_parameters() if ".mlp." in n)
    assert n_dense_ffn == n_moe_ffn // 2  # top-2 of 4 experts


@pytest.mark.parametrize(
    "kw,experts,match",
    [
        ({}, [0, 0], "distinct"),
        ({}, [4], "distinct ids in \\[0, 4\\)"),
        ({}, [], "distinct"),
        ({"dense_layers": [0]}, None, "keep a dense FFN"),
    ],
)
def test_activated_dense_rejects_what_it_cannot_cut(kw, experts, match):
    moe = tiny_moe(**kw)
    with pytest.raises(ValueError, match=match):
        moe_to_activated_dense(moe, experts)
