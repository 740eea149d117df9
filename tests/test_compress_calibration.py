"""Per-expert calibration: each expert's captured inputs are exactly what its linear maps see in the forward."""

import pytest
import torch
from conftest import tiny_llama, tiny_softmax_moe

from moelab.compress.calibration import expert_linear_inputs, expert_token_index, routed_inputs


def tiny_moe():
    return tiny_softmax_moe()


def batches():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # three padding tokens
    return [{"input_ids": ids, "attention_mask": mask}, {"input_ids": ids[:1, :5]}]


def test_routed_inputs_count_only_tokens_and_match_the_router():
    moe = tiny_moe()
    routed = routed_inputs(moe, batches())
    assert sorted(routed) == [0, 1]
    r = routed[1]
    assert r.x.shape == (17 + 5, 64) and r.top_k_index.shape == (22, 2) and r.logits.shape == (22, 4)
    # the router, re-run on the captured inputs, picks the same experts
    again = moe.model.layers[1].mlp.router(r.x)
    assert torch.equal(again.top_k_index, r.top_k_index)


def test_expert_inputs_reproduce_the_layer_output():
    """sum over experts of s * g * down_e(a_e) rebuilt from the captured inputs equals the MoE FFN output."""
    moe = tiny_moe()
    block = moe.model.layers[0].mlp
    r = routed_inputs(moe, batches(), layers=[0])[0]
    routing = block.router(r.x)
    y = torch.zeros_like(r.x)
    for e in range(block.experts.num_experts):
        rows = expert_token_index(r, e)
        ins = expert_linear_inputs(block.experts, r, e)
        assert torch.equal(ins["gate_proj"], r.x[rows])
        down = block.experts.down_proj[:, block.experts.expert_slice(e)]
        gate = (routing.top_k_weights * (routing.top_k_index == e)).sum(-1)[rows, None]
        y[rows] += block.score_scale_factor * gate * (ins["down_proj"] @ down.T)
    expected, _ = block(r.x[None])
    torch.testing.assert_close(y, expected[0], atol=1e-5, rtol=1e-5)


def test_bad_calibration_input_is_named():
    moe = tiny_moe()
    with pytest.raises(ValueError, match=r"layers \[5\] have no MoE FFN"):
        routed_inputs(moe, batches(), layers=[5])
    with pytest.raises(ValueError, match="no .*token"):
        routed_inputs(
            moe, [{"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.zeros(1, 3)}]
        )
    with pytest.raises(ValueError, match="no MoE layer"):
        routed_inputs(tiny_llama(), batches())
