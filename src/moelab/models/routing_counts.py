"""Counting an MoE's routing: which experts the routers choose for each non-padding token, per MoE layer.

Shared by the routing analysis (``moelab.evaluate.routing``: LLaMA-MoE's expert-load heatmaps) and MoE-SFT's
dynamic mixture (``moelab.train.sft``: the gate load of each instruction data set's dev split, arXiv 2406.11256
Sec. 3). The choices are read from the routers' own outputs (forward hooks), in eval mode (no router noise).

Shape legend: B batch, L sequence length, T = non-padding tokens, K = top_k, N = num_experts of the layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def moe_routers(model) -> dict[int, torch.nn.Module]:
    """{decoder layer index: router module} of a LlamaMoE model's MoE FFN layers (dense layers skipped).

    Raises:
        ValueError: the model has no MoE layer (e.g. a dense LLaMA).
    """
    base = model.base_model
    routers = {
        i: layer.mlp.router
        for i, layer in enumerate(base.layers)
        if hasattr(layer, "mlp") and hasattr(layer.mlp, "router")
    }
    if not routers:
        raise ValueError(f"{type(model).__name__} has no MoE layer with a router: routing needs an MoE model")
    return routers


@torch.no_grad()
def count_routing(model, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[int, dict]:
    """Count the experts chosen for the non-padding tokens of `batches`.

    Args:
        model: LlamaMoEForCausalLM (or its base model's owner: anything with `.base_model.layers`).
        batches: (input_ids [B, L] int64, attention_mask [B, L] 0/1) pairs; mask 0 = padding, not counted.
    Returns:
        {decoder layer: {"tokens": T (int), "top_k": K, "load": int64 [N] tokens per expert,
                         "pairs": int64 [N, N] co-selection counts, diagonal = load}}.
    Raises:
        ValueError: no MoE layer; a batch whose mask shape differs from its ids.
    """
    routers = moe_routers(model)
    captured: dict[int, torch.Tensor] = {}
    handles = [
        router.register_forward_hook(
            lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out.top_k_index)
        )
        for layer, router in routers.items()
    ]
    stats = {
        layer: {"tokens": 0, "top_k": None, "load": None, "pairs": None, "num_experts": r.num_experts}
        for layer, r in routers.items()
    }
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for input_ids, attention_mask in batches:
            if input_ids.shape != attention_mask.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} != input_ids {tuple(input_ids.shape)}"
                )
            captured.clear()
            model.base_model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
            keep = attention_mask.reshape(-1).bool().to(device)  # [B*L]
            for layer, index in captured.items():
                s, n = stats[layer], stats[layer]["num_experts"]
                index = index[keep]  # [T, K]
                chosen = torch.zeros(index.shape[0], n, dtype=torch.float64, device=index.device)
                chosen.scatter_(1, index, 1.0)  # [T, N] multi-hot top-k membership
                load = chosen.sum(0).round().long().cpu()  # [N]
                pairs = (chosen.T @ chosen).round().long().cpu()  # [N, N], exact below 2**53 tokens
                s["tokens"] += int(index.shape[0])
                s["top_k"] = int(index.shape[1])
                s["load"] = load if s["load"] is None else s["load"] + load
                s["pairs"] = pairs if s["pairs"] is None else s["pairs"] + pairs
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for s in stats.values():
        if s["load"] is None:
            raise ValueError("count_routing got no batch")
        del s["num_experts"]
    return stats
