"""Dense attention -> attention MoE (LLaMA-MoE v2, arXiv 2411.15708, sec. 2 "Attention MoE").

Expert = one GQA group: its query heads, its K and V head and the matching o_proj columns (or, with
expert_split m > 1, one of m slices of a group's query heads). The attention weights are not moved: the experts
are read off the existing q/k/v/o_proj layout (query heads of KV group g are g*G .. g*G + G - 1, G =
num_attention_heads / num_key_value_heads), so construction is: copy every weight, add a router per layer.
"""

import torch
from transformers import LlamaForCausalLM

from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM

from .convert import _DROP_KEYS
from .router_init import init_router_


@torch.no_grad()
def attention_moe_from_dense(
    model: LlamaForCausalLM | LlamaMoEForCausalLM,
    *,
    top_k: int,
    seed: int,
    expert_split: int = 1,
    score_scale_factor: float | None = None,
) -> LlamaMoEForCausalLM:
    """Split the attention of every layer into routed experts; everything else is copied unchanged.

    Args:
        model: a dense LlamaForCausalLM (its FFNs stay dense: `mlp_layer_types` all "dense") or a
            LlamaMoEForCausalLM without attention MoE (its MLP MoE is kept).
        top_k: attention experts per token (config `attention_top_k`).
        seed: seeds the routers' Kaiming-uniform initialisation (LLaMA-MoE v2 initialises routers randomly).
        expert_split: query-head slices per KV group (1 = one expert per GQA group).
        score_scale_factor: output scale of the attention experts; None = num_experts / top_k.
    Returns: LlamaMoEForCausalLM in eval mode, same dtype as `model`, `attention_moe=True`. With top_k = all
        experts, uniform router probabilities and scale = number of experts it computes the dense attention.
    Raises: ValueError if `model` already has attention MoE, if expert_split does not divide the group size or
        top_k is out of range (from LlamaMoEConfig), or if a weight has no same-shaped counterpart.
    """
    cfg = model.config
    if getattr(cfg, "attention_moe", False):
        raise ValueError("attention_moe_from_dense: the model already has attention MoE (attention_moe=True)")
    fields = {k: v for k, v in cfg.to_dict().items() if k not in _DROP_KEYS}
    if not isinstance(model, LlamaMoEForCausalLM):
        fields["mlp_layer_types"] = ["dense"] * cfg.num_hidden_layers
    moe_cfg = LlamaMoEConfig(
        **{
            **fields,
            "attention_moe": True,
            "attention_expert_split": expert_split,
            "attention_top_k": top_k,
            "attention_score_scale_factor": score_scale_factor,
        }
    )
    moe_cfg._attn_implementation = cfg._attn_implementation  # keep the dense model's attention kernel
    dtype = next(model.parameters()).dtype
    out = LlamaMoEForCausalLM(moe_cfg).to(dtype)
    src, dst = model.state_dict(), out.state_dict()
    for key, tensor in src.items():
        if key not in dst or dst[key].shape != tensor.shape:
            raise ValueError(f"weight {key} has no same-shaped counterpart in the attention-MoE model")
        dst[key].copy_(tensor)
    new = sorted(set(dst) - set(src))
    expected = sorted(
        f"model.layers.{i}.self_attn.router.gate_network.weight" for i in range(cfg.num_hidden_layers)
    )
    if new != expected:
        raise ValueError(f"unexpected new weights after attention-MoE conversion: {new}")
    generator = torch.Generator().manual_seed(int(seed))
    for layer in out.model.layers:
        init_router_(layer.self_attn.router, generator)
    out.eval()
    return out


__all__ = ["attention_moe_from_dense"]
