"""Import of Mixtral-format checkpoints into LlamaMoE (moelab.models.import_mixtral; the paper-scale compression
base, Mixtral-8x7B): equal logits to transformers' MixtralForCausalLM, exact round trip with export_mixtral,
the materialise path (local folder and hub cache), and named errors."""

import json

import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file, save_file
from tiny_folders import tiny_tokenizer
from transformers import LlamaConfig, MixtralConfig, MixtralForCausalLM

from moelab.io import load_model
from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM, export_mixtral, import_mixtral
from moelab.models.import_mixtral import (
    convert_mixtral_state_dict,
    llama_moe_config_from_mixtral,
    write_mixtral_as_ours,
)
from moelab.models.materialise import materialise_base_model, materialise_mixtral

IDS = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
GREEDY = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)


def tiny_mixtral(seed: int = 0, vocab: int = 256, **kw) -> MixtralForCausalLM:
    """A seeded random MixtralForCausalLM (hidden 64, 2 layers, 4 experts of width 32, top-2), eval mode."""
    torch.manual_seed(seed)
    cfg = MixtralConfig(
        **{**TINY, "vocab_size": vocab, "intermediate_size": 32},
        num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256, router_aux_loss_coef=0.02, **kw,
    )  # fmt: skip
    return MixtralForCausalLM(cfg).eval()


def mixtral_ready(seed: int = 0, **kw) -> LlamaMoEForCausalLM:
    """A seeded LlamaMoE that Mixtral can express (softmax -> top-k, linear gate, equal experts)."""
    torch.manual_seed(seed)
    cfg = {"num_experts": 4, "top_k": 2, "router_type": "softmax_topk", "gate_network": "linear", **kw}
    return LlamaMoEForCausalLM(LlamaMoEConfig(**TINY, **cfg)).eval()


def test_tiny_mixtral_imports_with_mixtrals_logits_in_both_layouts(tmp_path):
    mixtral = tiny_mixtral()
    want = mixtral(IDS).logits
    fused = mixtral.state_dict()  # transformers >= 5 in memory: mlp.experts.gate_up_proj [N, 2I, H]
    assert "model.layers.0.mlp.experts.gate_up_proj" in fused
    ours = import_mixtral(mixtral.config, fused)
    assert isinstance(ours, LlamaMoEForCausalLM) and not ours.training
    torch.testing.assert_close(ours(IDS).logits, want, atol=1e-5, rtol=0)
    assert torch.equal(ours.generate(IDS, **GREEDY), mixtral.generate(IDS, **GREEDY))
    c = ours.config
    assert (c.num_experts, c.top_k, c.router_type, c.gate_network) == (4, 2, "softmax_topk", "linear")
    assert c.intermediate_size == 4 * 32 and c.layer_expert_sizes(1) == [32] * 4
    assert c.layer_score_scale_factor(0) == 1.0  # Mixtral has no output scale (not the N/k default)
    assert c.balance_loss_weight == pytest.approx(0.02 * 2 / 2)  # c * K / L
    assert c.rope_parameters["rope_theta"] == mixtral.config.rope_parameters["rope_theta"]

    mixtral.save_pretrained(tmp_path)  # on disk: block_sparse_moe.experts.{e}.w1/w2/w3 (the hub's layout)
    on_disk = load_file(str(tmp_path / "model.safetensors"))
    assert "model.layers.0.block_sparse_moe.experts.3.w2.weight" in on_disk
    again = import_mixtral(json.loads((tmp_path / "config.json").read_text()), on_disk)
    for key, value in ours.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key  # both layouts give the same tensors
    # the expert layout: expert e owns neurons e*I:(e+1)*I
    experts = ours.model.layers[1].mlp.experts
    w2 = on_disk["model.layers.1.block_sparse_moe.experts.2.w2.weight"]
    assert torch.equal(experts.down_proj[:, experts.expert_slice(2)], w2)


def test_export_then_import_gives_the_same_model(tmp_path):
    model = mixtral_ready(score_scale_factor=1.0, tie_word_embeddings=False, balance_loss_weight=0.01)
    export_mixtral(model, tmp_path / "mixtral")
    info = write_mixtral_as_ours(tmp_path / "mixtral", tmp_path / "ours")
    assert info == {"converted_from": "mixtral"}
    back = LlamaMoEForCausalLM.from_pretrained(tmp_path / "ours").eval()
    state, back_state = model.state_dict(), back.state_dict()
    assert set(back_state) == set(state)
    for key, value in state.items():
        assert torch.equal(back_state[key], value), key  # bitwise: renaming and concatenation only
    assert torch.equal(back(IDS).logits, model(IDS).logits)
    fields = ("num_experts", "top_k", "router_type", "gate_network", "intermediate_size", "rope_parameters")
    for field in fields:
        assert getattr(back.config, field) == getattr(model.config, field), field
    assert back.config.balance_loss_weight == pytest.approx(0.01)  # w -> c = w L / K -> c K / L


@pytest.mark.parametrize("tied", [True, False])
def test_export_then_import_folds_the_output_scale(tied, tmp_path):
    model = mixtral_ready(tie_word_embeddings=tied)  # scale None -> N / k = 2, folded into w2 by the export
    export_mixtral(model, tmp_path / "mixtral")
    write_mixtral_as_ours(tmp_path / "mixtral", tmp_path / "ours")
    back = LlamaMoEForCausalLM.from_pretrained(tmp_path / "ours").eval()
    torch.testing.assert_close(back(IDS).logits, model(IDS).logits, atol=1e-5, rtol=0)
    assert back.config.layer_score_scale_factor(0) == 1.0 and back.config.tie_word_embeddings == tied
    down = model.model.layers[0].mlp.experts.down_proj
    assert torch.equal(back.model.layers[0].mlp.experts.down_proj, down * 2.0)


def test_folder_import_writes_one_shard_per_layer_in_the_stored_dtype(tmp_path):
    tiny_mixtral().to(torch.bfloat16).save_pretrained(tmp_path / "mixtral")
    write_mixtral_as_ours(tmp_path / "mixtral", tmp_path / "ours")
    index = json.loads((tmp_path / "ours/model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]  # 2 layers + the rest
    assert index["weight_map"]["model.layers.1.mlp.experts.gate_proj"] == shards[1]
    assert index["weight_map"]["model.embed_tokens.weight"] == shards[2]
    back = LlamaMoEForCausalLM.from_pretrained(tmp_path / "ours", dtype="auto")
    assert back.dtype == torch.bfloat16
    gen = json.loads((tmp_path / "ours/generation_config.json").read_text())
    assert "top_k" not in gen  # the MoE top_k is not a sampling setting


def save_tiny_mixtral_folder(folder, **kw):
    """A hub-shaped Mixtral folder: config.json, model.safetensors (per-expert layout), tokenizer files."""
    tokenizer = tiny_tokenizer()
    mixtral = tiny_mixtral(vocab=len(tokenizer), eos_token_id=tokenizer.eos_token_id, **kw)
    mixtral.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return mixtral


def test_materialised_mixtral_base_loads_and_generates(tmp_path):
    """compress.base_model as a local Mixtral folder: rule download_base_model's call writes our LlamaMoE."""
    mixtral = save_tiny_mixtral_folder(tmp_path / "hub")
    info = materialise_base_model({"pretrained": str(tmp_path / "hub"), "format": "hf"}, tmp_path / "base")
    assert info == {"source": str(tmp_path / "hub"), "commit": None, "converted_from": "mixtral"}
    model, tokenizer = load_model(tmp_path / "base")
    assert isinstance(model, LlamaMoEForCausalLM) and model.config.model_type == "llama_moe"
    ids = tokenizer(["the a of and to in"], return_tensors="pt").input_ids
    torch.testing.assert_close(model(ids).logits, mixtral(ids).logits, atol=1e-5, rtol=0)
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(out, mixtral.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=2))


def test_materialise_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """The hub path (snapshot_download of one repo id) on a local hub cache with HF_HUB_OFFLINE=1."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache/models--tiny-org--tiny-mixtral"
    save_tiny_mixtral_folder(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    info = materialise_base_model(
        {"pretrained": "tiny-org/tiny-mixtral", "revision": None}, tmp_path / "base"
    )
    assert info == {"source": "tiny-org/tiny-mixtral", "commit": commit, "converted_from": "mixtral"}
    model, _ = load_model(tmp_path / "base")
    assert isinstance(model, LlamaMoEForCausalLM)
    with pytest.raises(ValueError, match="tiny-org/not-there.*hub id"):
        materialise_base_model({"pretrained": "tiny-org/not-there"}, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_a_plain_llama_base_is_resaved_not_converted(tmp_path):
    from tiny_folders import save_tiny_checkpoint

    save_tiny_checkpoint(tmp_path / "llama")
    materialise_base_model({"pretrained": str(tmp_path / "llama")}, tmp_path / "base")
    assert json.loads((tmp_path / "base/config.json").read_text())["model_type"] == "llama"


@pytest.mark.parametrize(
    "config, named",
    [
        (LlamaConfig(**TINY).to_dict(), "model_type='llama': not a Mixtral config"),
        ({"model_type": "llama_moe", **TINY}, "model_type='llama_moe'"),
        ({"model_type": "mixtral", **TINY, "num_experts_per_tok": 2}, "num_local_experts is missing"),
        ({"model_type": "mixtral", **TINY, "num_local_experts": 4, "num_experts_per_tok": 5}, "num_experts_per_tok=5"),
        (
            {"model_type": "mixtral", **TINY, "num_local_experts": 4, "num_experts_per_tok": 2,
             "sliding_window": 64, "max_position_embeddings": 256},
            "sliding_window=64",
        ),
        ({"model_type": "mixtral", **TINY, "num_local_experts": "4", "num_experts_per_tok": 2}, "num_local_experts"),
    ],
    ids=["llama", "llama_moe", "no-experts", "top-k", "sliding-window", "wrong-type"],
)  # fmt: skip
def test_a_config_that_is_not_mixtral_fails_naming_the_key(config, named):
    with pytest.raises(ValueError, match=named):
        llama_moe_config_from_mixtral(config)


def test_router_jitter_is_dropped_with_a_warning(tmp_path, caplog):
    save_tiny_mixtral_folder(tmp_path / "hub", router_jitter_noise=0.1)
    with caplog.at_level("WARNING"):
        info = materialise_mixtral(str(tmp_path / "hub"), tmp_path / "base")
    assert info["dropped"] == {"router_jitter_noise": 0.1}
    assert "router_jitter_noise=0.1 dropped" in caplog.text


@pytest.mark.parametrize(
    "change, match",
    [
        (
            lambda t: t.pop("model.layers.1.block_sparse_moe.experts.3.w3.weight"),
            r"experts \[0, 1, 2\] found",
        ),
        (lambda t: t.pop("model.layers.0.input_layernorm.weight"), "missing.*input_layernorm"),
        (
            lambda t: t.update({"model.layers.0.block_sparse_moe.experts.0.b1": torch.zeros(32)}),
            "no counterpart",
        ),
        (
            lambda t: t.update({"model.layers.2.self_attn.q_proj.weight": torch.zeros(64, 64)}),
            r"layers \[2\]",
        ),
        (
            lambda t: t.update({"model.layers.0.mlp.experts.down_proj": torch.zeros(4, 64, 32)}),
            "both the per-expert .* and the fused",
        ),
    ],
    ids=["missing-expert", "missing-norm", "expert-bias", "extra-layer", "both-layouts"],
)
def test_tensors_that_do_not_fit_fail_naming_them_and_leave_no_folder(tmp_path, change, match):
    save_tiny_mixtral_folder(tmp_path / "hub")
    tensors = load_file(str(tmp_path / "hub/model.safetensors"))
    change(tensors)
    save_file(tensors, str(tmp_path / "hub/model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=match):
        materialise_mixtral(str(tmp_path / "hub"), tmp_path / "base")
    assert not (tmp_path / "base").exists()  # nothing that looks complete


def test_convert_state_dict_handles_a_subset_of_layers():
    mixtral = tiny_mixtral()
    cfg = llama_moe_config_from_mixtral(mixtral.config)
    layer1 = {k: v for k, v in mixtral.state_dict().items() if k.startswith("model.layers.1.")}
    out = convert_mixtral_state_dict(layer1, cfg)
    assert out["model.layers.1.mlp.experts.gate_proj"].shape == (4 * 32, 64)
    assert out["model.layers.1.mlp.experts.down_proj"].shape == (64, 4 * 32)
    assert out["model.layers.1.mlp.router.gate_network.weight"].shape == (4, 64)
    assert all(k.startswith("model.layers.1.") for k in out)
