"""Dense LLaMA -> LLaMA-MoE weight surgery (LLaMA-MoE, arXiv 2406.16554, sec. 2-3).

Expert e of layer l owns neurons S_e of the dense FFN: rows S_e of gate_proj and up_proj, columns S_e of
down_proj. Everything else (embeddings, attention, norms, lm_head, tying) is copied unchanged.
"""

import torch
from transformers import LlamaForCausalLM

from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM, dense_layer_types

from .partition import check_partition
from .router_init import init_router_

# Keys of the dense config that describe the checkpoint, not the architecture.
_DROP_KEYS = (
    "model_type",
    "architectures",
    "transformers_version",
    "_name_or_path",
    "auto_map",
    "quantization_config",  # a GGUF-loaded dense model carries one; the MoE weights are plain tensors
)


def _check_partition(partition, num_layers: int, intermediate_size: int) -> list[list[torch.Tensor]]:
    """Validate partition[layer][expert] -> neuron ids (any int sequence, any order); return int64 tensors.

    The shape checks (one row per layer, the same number of experts in each) are made here; the per-expert ones
    (non-empty, unique, in range) by `partition.check_partition`, the one validator of neuron sets. Sets may
    overlap (shared neurons) and need not cover the FFN. Raises ValueError naming the layer and expert.
    """
    if len(partition) != num_layers:
        raise ValueError(
            f"partition has {len(partition)} layers, the dense model has num_hidden_layers={num_layers}"
        )
    num_experts = len(partition[0])
    for layer, experts in enumerate(partition):
        if len(experts) != num_experts:
            raise ValueError(f"partition[{layer}] has {len(experts)} experts, partition[0] has {num_experts}")
    out = [[torch.as_tensor(idx, dtype=torch.long).reshape(-1) for idx in experts] for experts in partition]
    check_partition([[idx.sort().values for idx in row] for row in out], intermediate_size, exact_cover=False)
    return out


@torch.no_grad()
def dense_to_moe(
    dense_model: LlamaForCausalLM,
    partition: list[list[torch.Tensor]],
    *,
    top_k: int,
    router_type: str,
    gate_network: str,
    balance_loss_weight: float,
    score_scale_factor: float | list | None = None,
    seed: int,
    num_shared_experts: int = 0,
    shared_expert_scale: float = 1.0,
    dense_layers: tuple[int, ...] | list[int] = (),
) -> LlamaMoEForCausalLM:
    """Build a LLaMA-MoE model from a dense LLaMA by splitting every FFN along its neuron axis.

    Args:
        dense_model: a transformers LlamaForCausalLM (any size; SwiGLU FFN without bias).
        partition: partition[layer][expert] = LongTensor of neuron ids of that expert (e.g. from
            `random_split`); all layers must have the same number of experts N; sets may differ in size
            (they need not be disjoint, as in Sharing-Inner).
        top_k, router_type, gate_network, balance_loss_weight, score_scale_factor: LlamaMoEConfig fields.
        seed: seeds the router initialisation (`init_router_`).
        num_shared_experts: the first `num_shared_experts` sets of every layer's partition become always-on
            shared experts (LLaMA-MoE v2 "1+7top1"), the rest are routed (N = sets - num_shared_experts).
        shared_expert_scale: output scale of the shared experts (v2: 1.0, unscaled).
        dense_layers: decoder layers (indices, negative allowed) that keep their dense FFN unchanged
            (LLaMA-MoE v2: first/last layers); their partition entries are ignored.
    Returns: LlamaMoEForCausalLM in eval mode, same dtype as the dense model; expert e of layer l computes
        down[:, S_e] (act(gate[S_e] x) * up[S_e] x) exactly.
    Raises: ValueError for a partition that does not match the model, or an FFN with bias.
    Source: LLaMA-MoE sec. 2.2 (expert construction), sec. 3.1 (partition methods).
    """
    cfg = dense_model.config
    if getattr(cfg, "mlp_bias", False):
        raise ValueError("dense_to_moe: mlp_bias=True FFNs are not supported (LLaMA FFNs have no bias)")
    partition = _check_partition(partition, cfg.num_hidden_layers, cfg.intermediate_size)
    n_shared = int(num_shared_experts)
    if not 0 <= n_shared < len(partition[0]):
        raise ValueError(
            f"num_shared_experts={n_shared} must lie in [0, {len(partition[0])}) (experts in the partition)"
        )
    num_experts = len(partition[0]) - n_shared
    types = dense_layer_types(cfg.num_hidden_layers, dense_layers)
    sizes = [[int(idx.numel()) for idx in layer[n_shared:]] for layer in partition]
    shared_sizes = [[int(idx.numel()) for idx in layer[:n_shared]] for layer in partition]
    equal = cfg.intermediate_size % num_experts == 0 and all(
        s == cfg.intermediate_size // num_experts for layer in sizes for s in layer
    )
    fields = {k: v for k, v in cfg.to_dict().items() if k not in _DROP_KEYS}
    moe_cfg = LlamaMoEConfig(
        **fields,
        num_experts=num_experts,
        top_k=top_k,
        expert_sizes=None if equal else sizes,
        router_type=router_type,
        gate_network=gate_network,
        balance_loss_weight=balance_loss_weight,
        score_scale_factor=score_scale_factor,
        num_shared_experts=n_shared,
        shared_expert_sizes=shared_sizes if n_shared else None,
        shared_expert_scale=shared_expert_scale,
        mlp_layer_types=types if "dense" in types else None,
    )
    dtype = next(dense_model.parameters()).dtype
    moe = LlamaMoEForCausalLM(moe_cfg).to(dtype)

    dense_sd = dense_model.state_dict()
    moe_sd = moe.state_dict()
    copied = 0
    for key, tensor in dense_sd.items():
        if ".mlp." in key and not any(
            key.startswith(f"model.layers.{i}.mlp.") for i in moe_cfg.dense_layer_indices
        ):
            continue
        if key not in moe_sd or moe_sd[key].shape != tensor.shape:
            raise ValueError(f"dense key {key} has no same-shaped counterpart in the MoE model")
        moe_sd[key].copy_(tensor)
        copied += 1
    generator = torch.Generator().manual_seed(int(seed))
    for layer_idx, (dense_layer, moe_layer) in enumerate(
        zip(dense_model.model.layers, moe.model.layers, strict=True)
    ):
        if not moe_cfg.is_moe_layer(layer_idx):
            continue  # dense FFN copied above
        dense_mlp, block = dense_layer.mlp, moe_layer.mlp
        idx = torch.cat(partition[layer_idx][n_shared:])  # routed neuron ids in expert order
        block.experts.gate_proj.copy_(dense_mlp.gate_proj.weight[idx])
        block.experts.up_proj.copy_(dense_mlp.up_proj.weight[idx])
        block.experts.down_proj.copy_(dense_mlp.down_proj.weight[:, idx])
        if n_shared:
            idx = torch.cat(partition[layer_idx][:n_shared])
            block.shared_experts.gate_proj.weight.copy_(dense_mlp.gate_proj.weight[idx])
            block.shared_experts.up_proj.weight.copy_(dense_mlp.up_proj.weight[idx])
            block.shared_experts.down_proj.weight.copy_(dense_mlp.down_proj.weight[:, idx])
        init_router_(block.router, generator)
    n_mlp = sum(1 for k in dense_sd if ".mlp." in k)
    if n_mlp != 3 * cfg.num_hidden_layers:
        raise ValueError(
            f"expected 3 FFN weights per layer, found {n_mlp} for {cfg.num_hidden_layers} layers"
        )
    if cfg.tie_word_embeddings and moe.lm_head.weight.data_ptr() != moe.model.embed_tokens.weight.data_ptr():
        raise ValueError(
            "tie_word_embeddings is set but lm_head is not tied to embed_tokens after conversion"
        )
    moe.eval()
    return moe
