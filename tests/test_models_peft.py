"""peft LoRA on LlamaMoEForCausalLM: adapters train, base weights stay unchanged, merge is exact."""

import peft
import pytest
import torch
from conftest import TINY

from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM


def test_lora_trains_one_step_and_leaves_base_weights_unchanged():
    torch.manual_seed(0)
    cfg = LlamaMoEConfig(
        **TINY, num_experts=4, top_k=2, num_shared_experts=1, attention_moe=True, attention_top_k=1
    )
    model = LlamaMoEForCausalLM(cfg)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    targets = ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # shared experts are Linear
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0)
    )
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("shared_experts.down_proj.lora_B" in n for n in trainable)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    lora.train()
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    loss0 = lora(input_ids=ids, labels=ids).loss
    loss0.backward()
    opt.step()
    frozen = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): p
        for n, p in lora.named_parameters()
        if "lora_" not in n
    }
    assert len(frozen) == len(dict(model.named_parameters(remove_duplicate=True))) - len(trainable)
    assert all(torch.equal(p, base[n]) for n, p in frozen.items())  # base weights untouched by the step
    lora.eval()
    with torch.no_grad():
        loss1 = lora(input_ids=ids, labels=ids).loss
    assert loss1.item() != pytest.approx(loss0.item(), abs=1e-6)
    merged = lora.merge_and_unload()
    after = merged.state_dict()
    assert after.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], after[k])]
    # only the LoRA-targeted weights change, and only through the merged adapters
    assert changed and all(k.rsplit(".", 2)[-2] in targets for k in changed), changed
    assert torch.equal(
        after["model.layers.0.mlp.experts.gate_proj"], base["model.layers.0.mlp.experts.gate_proj"]
    )
    assert torch.equal(after["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    with torch.no_grad():
        assert merged(input_ids=ids, labels=ids).loss.item() == pytest.approx(loss1.item(), abs=1e-5)


def test_lora_base_weights_unchanged_before_merge():
    torch.manual_seed(0)
    model = LlamaMoEForCausalLM(LlamaMoEConfig(**TINY, num_experts=4, top_k=2))
    q0 = model.model.layers[1].self_attn.q_proj.weight.clone()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1)
    lora.train()
    lora(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    layer = lora.base_model.model.model.layers[1].self_attn.q_proj
    assert torch.equal(layer.base_layer.weight, q0)
    assert layer.base_layer.weight.grad is None
    assert layer.lora_B["default"].weight.abs().sum() > 0  # B starts at 0 and moved
