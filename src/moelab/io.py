"""Load and save HF checkpoint folders (config.json + safetensors + tokenizer), our MoE classes included."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import moelab.models  # noqa: F401  (registers LlamaMoE with the Auto classes)
from moelab.files import verify_model_folder
from moelab.runtime import DTYPES


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu"):
    """Model and tokenizer from an HF folder (dense Llama or our LlamaMoE).

    Raises:
        FileNotFoundError: ``path`` has no config.json or no safetensors weights, or a listed shard is missing.
        DamagedFileError: a weights file (the shard, by name), config.json or the shard index is damaged
            (:func:`moelab.files.verify_model_folder`, checked before anything is loaded).
        ValueError: the folder verifies but does not load; names the folder and its files.
    """
    path = Path(path)
    verify_model_folder(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype]).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:  # safetensors/transformers errors do not name the file
        files = ", ".join(sorted(p.name for p in path.iterdir()))
        raise ValueError(f"cannot load the model folder {path} ({files}): {err}") from err
    return model, tokenizer


def save_model(model, tokenizer, out: str | Path) -> Path:
    """``save_pretrained`` model + tokenizer into ``out`` atomically (temp folder, then rename)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def count_parameters(model) -> dict[str, int]:
    """Total parameters and parameters activated per token (the papers' "activated parameters").

    For LlamaMoE, routed MLP experts count ``top_k / num_experts`` of their parameters in each layer (shared
    experts and dense layers count fully). With attention MoE (LLaMA-MoE v2 sec. 2) the query and output
    projections count ``attention_top_k / E_a`` (E_a attention experts), and so do the key/value projections
    when every expert owns its KV head (attention_expert_split 1); with split > 1 the experts of a group share
    its KV head, which then counts fully. Routers count fully.
    """
    total = sum(p.numel() for p in model.parameters())
    cfg = model.config
    if not hasattr(cfg, "layer_num_experts"):
        return {"total": total, "active": total}
    inactive = 0.0
    attn_projs = ("q_proj", "o_proj") + (("k_proj", "v_proj") if cfg.attention_expert_split == 1 else ())
    for name, p in model.named_parameters():
        if ".mlp.experts." in name:
            layer = int(name.split(".layers.")[1].split(".")[0])
            inactive += p.numel() * (1 - cfg.top_k / cfg.layer_num_experts(layer))
        elif cfg.attention_moe and any(f".self_attn.{proj}." in name for proj in attn_projs):
            inactive += p.numel() * (1 - cfg.attention_top_k / cfg.num_attention_experts)
    return {"total": total, "active": int(total - inactive)}


def lm_loss(model, out) -> float:
    """The LM part of ``out.loss``: LlamaMoE adds ``balance_loss_weight * aux_loss``, which is removed here."""
    weight = float(getattr(model.config, "balance_loss_weight", 0.0) or 0.0)
    return float(out.loss.detach()) - weight * aux_value(out)


def aux_value(out) -> float:
    """``out.aux_loss`` as a float (0.0 for dense models)."""
    aux = getattr(out, "aux_loss", None)
    return float(aux.detach()) if torch.is_tensor(aux) else float(aux or 0.0)


@torch.no_grad()
def mean_loss(model, batches) -> float:
    """Token-weighted mean LM loss (nats/token) of ``model`` over batches of ``input_ids`` (+ labels)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        labels = batch.get("labels", batch["input_ids"])
        out = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), labels=labels)
        n = int((labels[:, 1:] != -100).sum())
        total += lm_loss(model, out) * n
        count += n
    return total / max(count, 1)
