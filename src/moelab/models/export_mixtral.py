"""Export an MLP-MoE LlamaMoE model to the standard Mixtral checkpoint layout (served by vLLM, llama.cpp, ...).

Mixtral's MoE block computes y = sum_{i in top-k} g_i E_i(x) with p = softmax(W_g x), g = top-k of p
renormalised, E_i(x) = w2_i (silu(w1_i x) * w3_i x), every expert of width I (Jiang et al. 2024, arXiv 2401.04088,
sec. 2.1). A LlamaMoE layer with router_type "softmax_topk" and a linear gate computes exactly this up to the
output scale s; since E_i is linear in w2_i, s * g_i E_i(x) = g_i E_i'(x) with w2_i' = s * w2_i: the scale is
folded into the down projections (exact up to float rounding of the multiplication).

On-disk layout written (the original Mixtral one; transformers >= 5 fuses it at load time into
mlp.experts.gate_up_proj / down_proj through its conversion mapping):
    model.layers.{l}.block_sparse_moe.gate.weight            [N, H]
    model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight  [I, H]   (gate_proj of expert e)
    model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight  [H, I]   (down_proj, times s)
    model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight  [I, H]   (up_proj)
    everything else under its Llama name (embed_tokens, self_attn.{q,k,v,o}_proj, norms, lm_head).

Balance loss: our weight w and Mixtral's router_aux_loss_coef c are mapped by `mixtral_aux_loss_coef` (the
inverse, for the import, is `balance_loss_weight_from_mixtral`). moelab.models.import_mixtral is the inverse.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import MixtralConfig

from .configuration_llama_moe import DECODER_FIELDS

# Config fields Mixtral and LlamaMoE share, copied as they are in both directions (export and import).
MIXTRAL_SHARED_FIELDS = (*DECODER_FIELDS, "head_dim", "rope_parameters", "attention_dropout")


def mixtral_aux_loss_coef(balance_loss_weight: float, top_k: int, num_moe_layers: int) -> float:
    """Mixtral's router_aux_loss_coef c for our balance_loss_weight w: c = w * L / K.

    Ours adds w * sum_l N sum_i f_li P_li (`moelab.models.routers.switch_balance_loss` per MoE layer l,
    f_li = share of the T*K routed slots sent to expert i, P_li = mean router probability); transformers'
    `load_balancing_loss_func` adds c * N sum_i (K mean_l f_li)(mean_l P_li) (counts over T only, averaged over
    the L layers before the product). The two terms are equal when every layer routes alike (in particular at
    perfect balance, where both are w * L = c * K); otherwise the cross-layer product differs from our sum of
    per-layer products, so a trained model's gradients differ slightly. Mixtral adds its term only with
    output_router_logits=True; ours whenever labels are given and w > 0.
    Source: Fedus et al. 2021 (arXiv 2101.03961) eq. 4-6; transformers 5 models/mixtral load_balancing_loss_func.
    """
    return balance_loss_weight * num_moe_layers / top_k


def balance_loss_weight_from_mixtral(aux_loss_coef: float, top_k: int, num_moe_layers: int) -> float:
    """Our balance_loss_weight w for Mixtral's router_aux_loss_coef c: w = c * K / L (`mixtral_aux_loss_coef`)."""
    return aux_loss_coef * top_k / num_moe_layers


def mixtral_export_problems(config) -> list[str]:
    """Reasons why a LlamaMoE config cannot be written as Mixtral (empty list = exportable)."""
    problems = []
    if config.router_type != "softmax_topk":
        problems.append(
            f"router_type={config.router_type!r}: Mixtral routes softmax -> top-k -> renormalise "
            "('softmax_topk'); noisy/switch/ablation routers have no Mixtral equivalent"
        )
    if config.gate_network != "linear":
        problems.append(f"gate_network={config.gate_network!r}: Mixtral's gate is one Linear(H, N)")
    if config.mlp_layer_types is not None and "dense" in config.mlp_layer_types:
        problems.append(f"dense FFN layers {config.dense_layer_indices}: every Mixtral layer is MoE")
    if config.mlp_layer_types is not None and "none" in config.mlp_layer_types:
        problems.append(
            "FFN layers removed by Layer Drop (mlp_layer_types 'none'): every Mixtral layer is MoE"
        )
    layers = range(config.num_hidden_layers)
    if any(config.layer_shared_expert_sizes(i) for i in layers):
        problems.append("shared experts (num_shared_experts > 0): Mixtral has no always-on expert")
    if len({config.layer_num_experts(i) for i in layers}) > 1:
        problems.append(f"num_experts_per_layer={config.num_experts_per_layer}: Mixtral has one expert count")
    widths = {w for i in layers for w in config.layer_expert_sizes(i)}
    if len(widths) > 1:
        problems.append(f"unequal expert sizes {sorted(widths)}: Mixtral experts share one intermediate_size")
    if config.attention_moe:
        problems.append("attention_moe=True: Mixtral attention is dense")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("attention_bias/mlp_bias: Mixtral projections have no bias")
    if config.hidden_act != "silu":
        problems.append(f"hidden_act={config.hidden_act!r}: Mixtral experts use silu")
    return problems


def mixtral_config(config) -> MixtralConfig:
    """The MixtralConfig of an exportable LlamaMoE config (see `mixtral_export_problems`)."""
    d = config.to_dict()
    kept = {k: d[k] for k in MIXTRAL_SHARED_FIELDS if k in d}
    return MixtralConfig(
        **kept,
        intermediate_size=config.layer_expert_sizes(0)[0],
        num_local_experts=config.layer_num_experts(0),
        num_experts_per_tok=config.top_k,
        router_aux_loss_coef=mixtral_aux_loss_coef(
            config.balance_loss_weight, config.top_k, config.num_hidden_layers
        ),
        router_jitter_noise=0.0,
        sliding_window=None,
        architectures=["MixtralForCausalLM"],
    )


@torch.no_grad()
def export_mixtral(model, out_dir) -> Path:
    """Write `model` (a LlamaMoEForCausalLM) as a Mixtral checkpoint folder: config.json + model.safetensors.

    Args:
        model: LlamaMoEForCausalLM with router_type "softmax_topk", gate_network "linear", every layer MoE with
            the same number of equal-width experts, no shared experts, no attention MoE.
        out_dir: folder to create (parents too); existing files of the same names are overwritten.
    Returns: Path of the folder. `MixtralForCausalLM.from_pretrained(out_dir)` gives the same logits.
        The output scale s of each layer is folded into that layer's w2 (see module docstring).
        The tokenizer is not written (save it into the same folder if needed).
    Raises: ValueError listing every feature that Mixtral cannot express.
    Source: Mixtral of Experts (arXiv 2401.04088) sec. 2.1; layout of mistralai/Mixtral-8x7B-v0.1.
    """
    cfg = model.config
    problems = mixtral_export_problems(cfg)
    if problems:
        raise ValueError("cannot export to Mixtral: " + "; ".join(problems))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in model.state_dict().items():
        if ".mlp." in key or (key == "lm_head.weight" and cfg.tie_word_embeddings):
            continue
        tensors[key] = value.contiguous().clone()
    for layer_idx, layer in enumerate(model.model.layers):
        block = layer.mlp
        experts, scale = block.experts, block.score_scale_factor
        prefix = f"model.layers.{layer_idx}.block_sparse_moe"
        tensors[f"{prefix}.gate.weight"] = block.router.gate_network.weight.contiguous().clone()
        for e in range(experts.num_experts):
            sl = experts.expert_slice(e)
            tensors[f"{prefix}.experts.{e}.w1.weight"] = experts.gate_proj[sl].contiguous().clone()
            tensors[f"{prefix}.experts.{e}.w2.weight"] = (experts.down_proj[:, sl] * scale).contiguous()
            tensors[f"{prefix}.experts.{e}.w3.weight"] = experts.up_proj[sl].contiguous().clone()
    mcfg = mixtral_config(cfg)
    mcfg.dtype = next(model.parameters()).dtype
    mcfg.save_pretrained(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "moelab_export.json").write_text(
        json.dumps({"source_model_type": cfg.model_type, "folded_score_scale": True}, indent=2)
    )
    return out


__all__ = [
    "MIXTRAL_SHARED_FIELDS",
    "balance_loss_weight_from_mixtral",
    "export_mixtral",
    "mixtral_aux_loss_coef",
    "mixtral_config",
    "mixtral_export_problems",
]
