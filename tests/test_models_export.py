"""Export of LlamaMoE to the Mixtral layout: plain transformers MixtralForCausalLM loads it with equal logits."""

import json

import pytest
import torch
from conftest import TINY
from safetensors import safe_open
from transformers import MixtralForCausalLM

from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM, export_mixtral

IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))


def mixtral_ready(seed: int = 0, **kw) -> LlamaMoEForCausalLM:
    torch.manual_seed(seed)
    cfg = {"num_experts": 4, "top_k": 2, "router_type": "softmax_topk", "gate_network": "linear", **kw}
    return LlamaMoEForCausalLM(LlamaMoEConfig(**TINY, **cfg)).eval()


@pytest.mark.parametrize(
    "kw",
    [
        dict(score_scale_factor=[1.5, 3.0], tie_word_embeddings=False),
        dict(tie_word_embeddings=True),  # scale None -> N / k = 2, folded into w2
    ],
)
def test_export_mixtral_loads_in_plain_transformers_with_equal_logits(kw, tmp_path):
    model = mixtral_ready(**kw)
    export_mixtral(model, tmp_path)
    mixtral, info = MixtralForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    mixtral.eval()
    assert mixtral.config.num_local_experts == 4 and mixtral.config.intermediate_size == 32
    assert torch.allclose(mixtral(IDS).logits, model(IDS).logits, atol=1e-5)
    # on-disk layout is the per-expert Mixtral one, w2 carries the folded scale
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        w2 = f.get_tensor("model.layers.1.block_sparse_moe.experts.3.w2.weight")
    assert "model.layers.1.block_sparse_moe.experts.3.w1.weight" in keys
    assert not any(".mlp." in k for k in keys)
    experts = model.model.layers[1].mlp.experts
    scale = model.config.layer_score_scale_factor(1)
    assert torch.equal(w2, experts.down_proj[:, experts.expert_slice(3)] * scale)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "mixtral"
    # greedy generation agrees too
    kw_gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(mixtral.generate(IDS, **kw_gen), model.generate(IDS, **kw_gen))


@pytest.mark.parametrize(
    "kw, reason",
    [
        (dict(router_type="noisy_topk"), "router_type"),
        (dict(gate_network="mlp"), "gate_network"),
        (dict(num_shared_experts=1), "shared experts"),
        (dict(expert_sizes=[[16, 48, 32, 32]] * 2), "unequal expert sizes"),
        (dict(mlp_layer_types=["dense", "moe"]), "dense FFN layers"),
        (dict(attention_moe=True), "attention_moe"),
    ],
)
def test_export_mixtral_rejects_what_mixtral_cannot_express(kw, reason, tmp_path):
    model = mixtral_ready(**kw)
    with pytest.raises(ValueError, match=reason):
        export_mixtral(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
