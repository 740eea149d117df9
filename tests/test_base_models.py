"""Released checkpoints a stage starts from (config <section>.base_model): LLaMA-MoE v1 import, Mixtral compression.

The upstream LLaMA-MoE v1 folder is built here from the upstream layout (tensor names and config fields as the
released checkpoints store them); the converted model is checked against the upstream MoE formula written out
below, independently of our modules.
"""

import csv
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from test_workflow import copy_workflow, snakemake
from tiny_folders import tiny_tokenizer
from transformers import MixtralConfig, MixtralForCausalLM

from moelab.compress import block_drop
from moelab.data.chat import IGNORE_INDEX, encode_chat
from moelab.io import load_model
from moelab.models import LlamaMoEForCausalLM
from moelab.models.materialise import materialise_llama_moe_v1, materialise_pretrained

H, INTER, LAYERS, HEADS, KV = 32, 64, 2, 4, 2
SIZES = [[10, 22, 16, 16], [16, 16, 16, 16]]  # uneven experts in layer 0 (size_experts)
TOP_K, SCALE = 2, 2.0


def upstream_config(vocab: int, **overrides) -> dict:
    cfg = {
        "model_type": "llama_moe",
        "architectures": ["LlamaMoEForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_llama_moe.LlamaMoEConfig"},
        "vocab_size": vocab, "hidden_size": H, "intermediate_size": INTER, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV, "hidden_act": "silu",
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "pad_token_id": 2, "bos_token_id": 0,
        "eos_token_id": 1, "tie_word_embeddings": False, "pretraining_tp": 1, "rope_scaling": None,
        "num_experts": 4, "num_selects": TOP_K, "size_experts": SIZES,
        "gate_type": "TopKBalancedNoisyGate", "gate_network": "mlp", "gate_use_softmax": True,
        "gate_use_balance": True, "gate_balance_loss_weight": 0.01, "gate_add_noise": True,
        "gate_noise_epsilon": 0.01, "calculator_type": "UniversalCalculator", "multiply_gate_scores": True,
        "score_scale_factor": SCALE, "add_weight_norm": False, "drop_tokens": True, "capacity_factor": 1.25,
    }  # fmt: skip
    return {**cfg, **overrides}


def upstream_tensors(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the upstream names (the layout of the released LLaMA-MoE v1 checkpoints)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    hd = H // HEADS
    t = {
        "model.embed_tokens.weight": r(vocab, H),
        "model.norm.weight": 1 + r(H),
        "lm_head.weight": r(vocab, H),
    }
    for layer, sizes in enumerate(SIZES):
        p = f"model.layers.{layer}"
        t |= {
            f"{p}.self_attn.q_proj.weight": r(H, H),
            f"{p}.self_attn.k_proj.weight": r(KV * hd, H),
            f"{p}.self_attn.v_proj.weight": r(KV * hd, H),
            f"{p}.self_attn.o_proj.weight": r(H, H),
            f"{p}.self_attn.rotary_emb.inv_freq": 1.0 / 10000 ** (torch.arange(0, hd, 2) / hd),
            f"{p}.input_layernorm.weight": 1 + r(H),
            f"{p}.post_attention_layernorm.weight": 1 + r(H),
            f"{p}.mlp.gate.gate_network.0.weight": r(len(sizes), H) * 5,
            f"{p}.mlp.gate.gate_network.2.weight": r(len(sizes), len(sizes)) * 5,
            f"{p}.mlp.gate.weight_noise.weight": r(len(sizes), H),
        }
        for e, m in enumerate(sizes):
            t[f"{p}.mlp.calculator.experts.weight_gate.{e}"] = r(m, H)
            t[f"{p}.mlp.calculator.experts.weight_up.{e}"] = r(m, H)
            t[f"{p}.mlp.calculator.experts.weight_down.{e}"] = r(H, m)
    return t


def write_upstream(folder, tensors, config, weights="bin"):
    """A hub-shaped folder: config.json, weights (2 .bin shards + index, or one safetensors), tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    tiny_tokenizer().save_pretrained(folder)
    names = sorted(tensors)
    if weights == "safetensors":
        save_file({k: tensors[k].contiguous() for k in names}, str(folder / "model.safetensors"))
        return folder
    shards = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for shard, keys in shards.items():
        torch.save({k: tensors[k] for k in keys}, folder / shard)
    index = {"weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    return folder


def upstream_moe(t: dict, layer: int, x: torch.Tensor) -> torch.Tensor:
    """LLaMA-MoE sec. 2.2 on the upstream tensors, eval mode: x [T, H] -> [T, H].

    logits = W2 tanh(W1 x); top-k; g = softmax(top-k logits); y = s * sum_j g_j down_j(silu(gate_j x) * up_j x).
    """
    p = f"model.layers.{layer}.mlp"
    logits = torch.tanh(x @ t[f"{p}.gate.gate_network.0.weight"].T) @ t[f"{p}.gate.gate_network.2.weight"].T
    vals, idx = logits.topk(TOP_K, dim=-1)
    g = vals.softmax(dim=-1)
    y = torch.zeros_like(x)
    for tok in range(x.shape[0]):
        for j in range(TOP_K):
            e = int(idx[tok, j])
            gate, up, down = (t[f"{p}.calculator.experts.weight_{n}.{e}"] for n in ("gate", "up", "down"))
            y[tok] += SCALE * g[tok, j] * (down @ (F.silu(gate @ x[tok]) * (up @ x[tok])))
    return y


@pytest.mark.parametrize("weights", ["bin", "safetensors"])
def test_llama_moe_v1_import_matches_the_upstream_formula(tmp_path, weights):
    vocab = len(tiny_tokenizer())
    tensors = upstream_tensors(vocab)
    src = write_upstream(tmp_path / "upstream", tensors, upstream_config(vocab), weights)
    materialise_llama_moe_v1(str(src), tmp_path / "ours")
    model, tokenizer = load_model(tmp_path / "ours")
    assert isinstance(model, LlamaMoEForCausalLM)
    cfg = model.config
    assert (cfg.top_k, cfg.expert_sizes, cfg.score_scale_factor, cfg.router_type) == (
        TOP_K, SIZES, SCALE, "noisy_topk"
    )  # fmt: skip
    model.eval()
    x = torch.randn(7, H, generator=torch.Generator().manual_seed(1))
    for layer in range(LAYERS):
        ours, routing = model.model.layers[layer].mlp(x[None])
        torch.testing.assert_close(ours[0], upstream_moe(tensors, layer, x), rtol=1e-5, atol=1e-5)
    state = model.state_dict()
    for name in ("model.layers.1.self_attn.k_proj.weight", "model.norm.weight", "lm_head.weight"):
        assert torch.equal(state[name], tensors[name])
    # LLaMA-2's tokenizer has no chat template: upstream SFT's Vicuna v1.1 format is given
    chat = [{"role": "user", "content": "the a of"}, {"role": "assistant", "content": "and to"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text.endswith("questions. USER: the a of ASSISTANT: and to</s>")
    enc = encode_chat(chat, tokenizer, 64)
    learned = tokenizer.decode(enc["input_ids"][enc["labels"] != IGNORE_INDEX])
    assert learned.split() == ["and", "to", "</s>"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda c, t: c.update(gate_use_softmax=False), "gate_use_softmax=False"),
        (lambda c, t: c.update(gate_type="SwitchBalancedGate"), "gate_type='SwitchBalancedGate'"),
        (lambda c, t: c.pop("num_selects"), "num_selects"),
        (
            lambda c, t: t.pop("model.layers.1.mlp.calculator.experts.weight_up.3"),
            r"weight_up: experts \[0, 1, 2\]",
        ),
        (
            lambda c, t: t.update({"model.layers.0.mlp.calculator.experts.bias_up.0": torch.zeros(10)}),
            "bias_up",
        ),
        (lambda c, t: t.update({"model.layers.0.extra.weight": torch.zeros(1)}), "unexpected.*extra"),
        (lambda c, t: t.pop("model.layers.0.input_layernorm.weight"), "missing.*input_layernorm"),
    ],
    ids=["no-softmax", "switch-gate", "not-upstream", "missing-expert", "expert-bias", "extra", "missing"],
)
def test_llama_moe_v1_import_refuses_what_it_cannot_convert(tmp_path, change, match):
    vocab = len(tiny_tokenizer())
    cfg, tensors = upstream_config(vocab), upstream_tensors(vocab)
    change(cfg, tensors)
    src = write_upstream(tmp_path / "upstream", tensors, cfg)
    with pytest.raises(ValueError, match=match):
        materialise_llama_moe_v1(str(src), tmp_path / "ours")
    assert not (tmp_path / "ours").exists()  # nothing left that looks complete


def save_tiny_mixtral(folder, seed=0):
    """A hub-shaped Mixtral folder (4 blocks, 4 experts top-2)."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = MixtralConfig(
        vocab_size=len(tokenizer), hidden_size=H, intermediate_size=48, num_hidden_layers=4,
        num_attention_heads=HEADS, num_key_value_heads=KV, num_local_experts=4, num_experts_per_tok=2,
        max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    MixtralForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_block_drop_on_a_mixtral_checkpoint(tmp_path):
    """A Mixtral checkpoint re-saved as it is (materialise_pretrained; rule download_base_model converts it to our
    LlamaMoE instead, tests/test_models_import_mixtral.py): Block Drop works on MixtralForCausalLM too."""
    hub = str(save_tiny_mixtral(tmp_path / "hub"))
    assert materialise_pretrained(hub, tmp_path / "base") == {"source": hub, "commit": None}  # provenance
    model, _ = load_model(tmp_path / "base")
    ids = torch.randint(3, 20, (2, 16), generator=torch.Generator().manual_seed(0))
    result = block_drop(model, [{"input_ids": ids}], n_drop=2)
    assert len(result["scores"]) == 4 and len(result["dropped"]) == 2
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    model.save_pretrained(tmp_path / "dropped")
    again = MixtralForCausalLM.from_pretrained(tmp_path / "dropped")
    torch.testing.assert_close(again(ids).logits, model(ids).logits)


COMPRESSED = "results/compress/block_drop/model"  # stage compress: the headline recipe


@pytest.mark.slow
def test_base_models_through_the_download_rule(tmp_path):
    """sft.base_model / compress.base_model given as local folders shaped like the hub's: the download rule
    converts them, SFT starts from the LLaMA-MoE v1 import and compression from the Mixtral import."""
    vocab = len(tiny_tokenizer())
    up = write_upstream(tmp_path / "hub/llama-moe", upstream_tensors(vocab), upstream_config(vocab))
    mixtral = save_tiny_mixtral(tmp_path / "hub/mixtral")
    (tmp_path / "wf").mkdir()
    wf = copy_workflow(tmp_path / "wf")
    overlay = {
        "sft": {"base_model": {"pretrained": str(up), "format": "llama_moe_v1"}},
        "compress": {
            "base_model": {"pretrained": str(mixtral), "format": "hf"},
            "recipes": {"block_drop": [{"method": "block_drop", "n_drop": 1}]},
        },
    }
    (wf / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    configs = ["--configfile", "config/smoke.yaml", "overlay.yaml"]
    dry = snakemake("results/models/sft", COMPRESSED, "-n", "--cores", "2", *configs, cwd=wf)
    jobs = dry.stdout
    assert "download_base_model" in jobs and "rule pretrain:" not in jobs and "rule construct:" not in jobs
    snakemake("results/models/sft", COMPRESSED, "--cores", "2", *configs, cwd=wf)
    sft_base, _ = load_model(wf / "resources/models/sft_base")
    assert isinstance(sft_base, LlamaMoEForCausalLM) and sft_base.config.expert_sizes == SIZES
    tuned, _ = load_model(
        wf / "results/models/sft"
    )  # SFT ran on the import (Vicuna template, uneven experts)
    assert tuned.config.expert_sizes == SIZES
    assert not torch.equal(tuned.state_dict()["lm_head.weight"], sft_base.state_dict()["lm_head.weight"])
    compressed, _ = load_model(wf / COMPRESSED)  # the Mixtral base was imported as our LlamaMoE
    assert compressed.config.model_type == "llama_moe" and compressed.config.num_hidden_layers == 3
    report = json.loads((wf / "results/compress/block_drop/recipe.json").read_text())
    (step,) = report["steps"]  # the smoke recipe: one Block Drop step
    assert (
        step["method"] == "block_drop"
        and len(step["report"]["scores"]) == 4
        and len(step["report"]["dropped"]) == 1
    )
    meta = json.loads((wf / "resources/models/sft_base/meta.json").read_text())
    checksums = meta["extra"].pop("checksums")  # re-verified by every later step (verify_inputs)
    assert meta["config"]["format"] == "llama_moe_v1" and meta["extra"] == {"source": str(up), "commit": None}
    meta = json.loads((wf / "resources/models/compress_base/meta.json").read_text())
    assert meta["extra"]["converted_from"] == "mixtral"
    assert "config.json" in checksums and all(set(c) == {"sha256", "bytes"} for c in checksums.values())


@pytest.mark.slow
def test_two_stage_sft_continues_stage_one(tmp_path):
    """sft.stage1 (LLaMA-MoE v2's two-stage post-training): rule sft_stage1 trains on its own mixture from the
    constructed MoE (sft.from_stage moe, no CPT), and rule sft continues from its model with the sft: mixture."""
    (tmp_path / "wf").mkdir()
    wf = copy_workflow(tmp_path / "wf")
    overlay = {
        "sft": {
            "from_stage": "moe",
            "stage1": {
                "steps": 2,
                "warmup_steps": 0,
                "domain_weights": {"general": 0, "math": 1, "code": 0, "explain": 0},
            },
            "domain_weights": {"general": 0, "math": 0, "code": 1, "explain": 0},
        }
    }
    (wf / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    configs = ["--configfile", "config/smoke.yaml", "overlay.yaml"]
    snakemake("results/models/sft", "--cores", "2", *configs, cwd=wf)
    assert not (wf / "results/models/pretrain").exists()

    def drawn(log):
        with open(wf / log, newline="") as fh:
            rows = list(csv.DictReader(fh))
        return len(rows), {d for r in rows for d in r["domains"].split()}

    assert drawn("results/sft_stage1/log.csv") == (2, {"math"})
    summary = json.loads((wf / "results/models/sft_stage1/train_summary.json").read_text())
    assert set(summary["examples"]) == {"math"}  # the stage's zero-weight sets are not even read
    assert drawn("results/sft/log.csv") == (4, {"code"})
    meta = json.loads((wf / "results/models/sft/meta.json").read_text())
    assert any("results/models/sft_stage1" in str(i) for i in meta["inputs"])


def test_base_model_mistakes_fail_naming_the_cause(tmp_path, monkeypatch):
    """The usual wrong inputs: each fails naming the folder and what to change, and writes no output."""
    vocab = len(tiny_tokenizer())
    upstream = write_upstream(tmp_path / "v1", upstream_tensors(vocab), upstream_config(vocab), "safetensors")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="released LLaMA-MoE v1 checkpoint.*format llama_moe_v1"):
        materialise_pretrained(str(upstream), out)  # format hf on the remote-code layout
    (tmp_path / "empty").mkdir()
    for materialise in (materialise_pretrained, materialise_llama_moe_v1):
        with pytest.raises(FileNotFoundError, match="empty has no config.json"):
            materialise(str(tmp_path / "empty"), out)
    weights = upstream / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(ValueError, match=r"cannot read the weights file .*model.safetensors"):
        materialise_llama_moe_v1(str(upstream), out)
    monkeypatch.chdir(tmp_path)  # "mymodels/llama-moe": a mistyped relative folder reads as a hub id
    with pytest.raises(ValueError, match=r"read as a hub id; there is no local folder .*mymodels/llama-moe"):
        materialise_llama_moe_v1("mymodels/llama-moe", out)
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))
