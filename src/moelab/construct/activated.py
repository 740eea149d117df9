"""A dense baseline with the MoE's activated FFN width (LLaMA-MoE, arXiv 2406.16554, sec. 4 / Table 2).

The paper's headline compares LLaMA-MoE-3.5B with dense models of similar *activated* size (OpenLLaMA-3B,
Sheared-LLaMA-2.7B). The demo analogue: cut every FFN of the dense model to the width one token activates in
the MoE, top_k x expert width, by a fixed expert choice, and continually pre-train it on the same token budget
with the same settings as the MoE.

Fixed expert choice: layer l keeps the neurons of routed experts ``experts`` (default 0 .. top_k-1) of the
constructed MoE, i.e. the same neuron split, and its down projection is scaled by s / k (s = the layer's output
scale, k = len(experts)). The result equals the MoE whose router is pinned to those experts with equal gates
1/k on every token:

    FFN_active(x) = s * sum_{e in experts} (1/k) E_e(x) = down[:, S] (s/k) (act(gate[S] x) * up[S] x),
    S = union of the chosen experts' neurons.

So the baseline differs from the MoE only in that it cannot route: same activated parameters, same
initialisation scale, same attention, embeddings and norms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moelab.models import LlamaMoEForCausalLM


@torch.no_grad()
def moe_to_activated_dense(
    moe: LlamaMoEForCausalLM, experts: Sequence[int] | None = None
) -> LlamaForCausalLM:
    """Cut a LLaMA-MoE to a dense LLaMA whose FFNs are the chosen experts (module docstring for the formula).

    Args:
        moe: a LlamaMoEForCausalLM with an MoE FFN in every layer, equal expert widths, no shared experts and
            dense attention (the demo construction).
        experts: the routed experts kept in every layer (default: 0 .. top_k-1); ids in [0, num_experts).
    Returns:
        LlamaForCausalLM in eval mode, same dtype, intermediate_size = sum of the chosen experts' widths
        (demo: 2 x 192 = 384 of SmolLM2's 1536); embeddings, attention, norms and lm_head copied (tying kept).
    Raises:
        ValueError: dense layers, shared experts, attention MoE, unequal widths across layers, or an expert id
            out of range / repeated.
    Source: LLaMA-MoE sec. 4 (comparison with dense models of similar activated size); the pinned-router
        identity above is ours and is tested (tests/test_construct_activated.py).
    """
    cfg = moe.config
    chosen = list(range(cfg.top_k)) if experts is None else [int(e) for e in experts]
    if getattr(cfg, "attention_moe", False):
        raise ValueError("moe_to_activated_dense: attention MoE models are not supported")
    if cfg.dense_layer_indices:
        raise ValueError(
            f"moe_to_activated_dense: layers {cfg.dense_layer_indices} keep a dense FFN; every layer must be MoE"
        )
    widths = set()
    for layer_idx in range(cfg.num_hidden_layers):
        if cfg.layer_shared_expert_sizes(layer_idx):
            raise ValueError(f"moe_to_activated_dense: layer {layer_idx} has shared experts (not supported)")
        n = cfg.layer_num_experts(layer_idx)
        if len(set(chosen)) != len(chosen) or not chosen or any(not 0 <= e < n for e in chosen):
            raise ValueError(f"experts must be distinct ids in [0, {n}), got {chosen}")
        sizes = cfg.layer_expert_sizes(layer_idx)
        widths.add(sum(sizes[e] for e in chosen))
    if len(widths) != 1:
        raise ValueError(
            f"the chosen experts' widths differ across layers ({sorted(widths)}); need one width"
        )
    width = widths.pop()
    llama_keys = set(LlamaConfig().to_dict())
    fields = {
        k: v for k, v in cfg.to_dict().items() if k in llama_keys and k not in ("model_type", "architectures")
    }
    fields["intermediate_size"] = width
    dense_cfg = LlamaConfig(**fields)
    dtype = next(moe.parameters()).dtype
    dense = LlamaForCausalLM(dense_cfg).to(dtype)
    src = moe.state_dict()
    dst = dense.state_dict()
    for key, tensor in src.items():
        if ".mlp." in key:
            continue
        if key not in dst or dst[key].shape != tensor.shape:
            raise ValueError(f"MoE key {key} has no same-shaped counterpart in the dense model")
        dst[key].copy_(tensor)
    for moe_layer, dense_layer in zip(moe.model.layers, dense.model.layers, strict=True):
        block = moe_layer.mlp
        idx = torch.cat(
            [
                torch.arange(block.experts.expert_slice(e).start, block.experts.expert_slice(e).stop)
                for e in chosen
            ]
        )
        scale = block.score_scale_factor / len(chosen)
        dense_layer.mlp.gate_proj.weight.copy_(block.experts.gate_proj[idx])
        dense_layer.mlp.up_proj.weight.copy_(block.experts.up_proj[idx])
        dense_layer.mlp.down_proj.weight.copy_(block.experts.down_proj[:, idx] * scale)
    if (
        dense_cfg.tie_word_embeddings
        and dense.lm_head.weight.data_ptr() != dense.model.embed_tokens.weight.data_ptr()
    ):
        raise ValueError("tie_word_embeddings is set but lm_head is not tied to embed_tokens after the cut")
    dense.eval()
    return dense
