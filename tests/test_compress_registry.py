"""Recipes run their steps in order: the registry binds every method the config check knows, a combined recipe
gives a model that saves, reloads and generates, and the steps compose (each sees the previous one's model)."""

import inspect

import pytest
import torch
from conftest import tiny_softmax_moe

from moelab.compress.recipe import STEP_PARAMS
from moelab.compress.registry import COMPRESS_METHODS, run_recipe
from moelab.models import LlamaMoEForCausalLM


def tiny_moe(num_layers=4):
    return tiny_softmax_moe(num_layers=num_layers)


def batches():
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 256, (4, 16), generator=g)} for _ in range(2)]


def test_registry_takes_every_parameter_the_config_check_allows():
    assert set(COMPRESS_METHODS) == set(STEP_PARAMS)
    for method, params in STEP_PARAMS.items():
        taken = inspect.signature(COMPRESS_METHODS[method]).parameters
        accepts_any = any(p.kind == p.VAR_KEYWORD for p in taken.values())
        assert accepts_any or set(params) <= set(taken), method


def test_combined_recipe_saves_reloads_and_generates(tmp_path):
    model = tiny_moe()
    steps = [
        {"method": "expert_drop", "keep": 3, "mode": "layer_wise"},
        {"method": "block_drop", "n_drop": 1},
        {"method": "wanda", "pattern": "2:4"},
        {"method": "rtn", "bits": 8, "group_size": 32},
    ]
    records = run_recipe(model, batches(), steps)
    assert [r["method"] for r in records] == ["expert_drop", "block_drop", "wanda", "rtn"]
    assert records[1]["params"] == {"n_drop": 1} and all(r["seconds"] >= 0 for r in records)
    cfg = model.config
    assert cfg.num_hidden_layers == 3 and cfg.num_experts_per_layer == [3, 3, 3]
    experts = model.model.layers[0].mlp.experts
    # 2:4 then 8-bit: every group of 4 inputs still holds at most 2 non-zeros (round-to-nearest keeps zeros)
    assert ((experts.gate_proj.reshape(-1, 4) != 0).sum(-1) <= 2).all()
    ids = torch.tensor([[5, 7, 9, 11]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "m")
    again = LlamaMoEForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, logits, rtol=1e-5, atol=1e-6)
    out = again.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 8)


def test_steps_compose_in_order():
    """Block Drop after Expert Drop scores the trimmed model: the same as running the two by hand."""
    a, b = tiny_moe(), tiny_moe()
    run_recipe(
        a,
        batches(),
        [{"method": "expert_drop", "keep": 2, "mode": "global"}, {"method": "block_drop", "n_drop": 2}],
    )
    run_recipe(b, batches(), [{"method": "expert_drop", "keep": 2, "mode": "global"}])
    run_recipe(b, batches(), [{"method": "block_drop", "n_drop": 2}])
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_bad_step_is_named_before_anything_changes():
    model = tiny_moe()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"step 1\.bits=3\.5 must be an integer in \[2, 8\]"):
        run_recipe(model, batches(), [{"method": "rtn", "bits": 8}, {"method": "gptq", "bits": 3.5}])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_recovery_of_quantised_experts_is_refused_before_anything_changes():
    model = tiny_moe()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(
        ValueError, match=r"steps\[1\]\.target_modules: lora_recovery adapts \['up_proj'\] after rtn"
    ):
        run_recipe(
            model,
            batches(),
            [{"method": "rtn", "bits": 8}, {"method": "lora_recovery", "target_modules": ["up_proj"]}],
            recovery=[torch.arange(64)],
        )
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
