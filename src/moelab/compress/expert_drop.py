"""Expert Drop: remove the routed experts that receive the least routing probability mass.

Source: "A unified framework for MoE compression" (arXiv 2406.02500), Expert Trimming, Expert Drop:
the importance of routed expert e of MoE layer l is its softmax routing-probability mass over calibration
tokens, M_l[e] = sum_t softmax(z_l(x_t))[e] (z_l = the router logits over that layer's N_l experts, eval
mode, no noise; padding tokens excluded). Two selections:
    "layer_wise": every MoE layer keeps its `keep` highest-mass experts.
    "global":     the experts of all MoE layers are ranked together on per-layer normalised mass
                  M_l[e] / sum_e' M_l[e'] and the lowest are dropped until `keep` * (number of MoE layers)
                  remain. Floor rule (clamp, never raise): a layer never drops below top_k experts; each
                  layer's top_k highest-mass experts are exempt from the global ranking, so the dropped set is
                  the globally lowest among the non-exempt experts.
Dropping removes the expert's neurons (gate_proj/up_proj rows, down_proj columns), the router's per-expert
rows (last Linear of the gate network, W_noise of the noisy router, the frozen projection of the ablation
routers) and updates the config (num_experts_per_layer, expert_sizes). Shared experts are never dropped;
top_k stays. Decisions (explicit so behaviour never changes silently on reload):
    score_scale_factor is written per layer with the parent's value (a None config means N_l / top_k, which
        would otherwise shrink with N_l): the paper removes experts without re-scaling.
    gate_hidden_sizes pins the hidden width of an "mlp" gate network to the parent's N_l (only its last
        Linear loses rows), so the kept experts' logits are unchanged.
Deviation: none from the paper's definition; upstream code's exact tie-breaking is not reproduced (ties go to
the lower expert id, and in "global" mode to the lower layer).

Shape legend: B batch, T sequence length, N_l routed experts of decoder layer l, H hidden, I_l = sum of the
layer's expert widths.
"""

from __future__ import annotations

import torch
from torch import nn

from moelab.models.routers import FrozenRandomRouter, NoisyTopKRouter

EXPERT_DROP_MODES = ("layer_wise", "global")


@torch.no_grad()
def expert_routing_mass(model, batches) -> dict[int, torch.Tensor]:
    """Softmax routing-probability mass of every routed expert over the calibration tokens.

    M_l[e] = sum over non-padding tokens t of softmax(router_logits_l[t])[e] (arXiv 2406.02500, Expert
    Trimming, Expert Drop). The model runs in eval mode (no router noise; Switch capacity not applied); its
    training mode is restored afterwards.

    Args:
        model: a LlamaMoEForCausalLM (returns `router_logits` with `output_router_logits=True`).
        batches: iterable of dicts with ``input_ids`` LongTensor [B, T] and optional ``attention_mask``
            [B, T] (1 = token, 0 = padding).
    Returns:
        {decoder layer index l: FloatTensor [N_l] float64 (accumulated in float64)}, in units of tokens:
        each layer's masses sum to the number of calibration tokens.
    Raises:
        ValueError: the model has no MoE layer, or the batches hold no non-padding token.
    """
    layers = model.config.moe_layer_indices
    if not layers:
        raise ValueError("expert drop needs a model with MoE layers (config.mlp_layer_types has no 'moe')")
    masses = {
        layer: torch.zeros(model.config.layer_num_experts(layer), dtype=torch.float64) for layer in layers
    }
    tokens, was_training = 0, model.training
    model.eval()
    try:
        for batch in batches:
            ids, mask = batch["input_ids"], batch.get("attention_mask")
            out = model(input_ids=ids, attention_mask=mask, use_cache=False, output_router_logits=True)
            keep = (mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)).reshape(-1)
            for layer, logits in zip(layers, out.router_logits, strict=True):  # logits [B*T, N_l]
                masses[layer] += torch.softmax(logits[keep].double(), dim=-1).sum(dim=0).cpu()
            tokens += int(keep.sum())
    finally:
        model.train(was_training)
    if not tokens:
        raise ValueError("expert drop needs at least one calibration token (batches / attention_mask)")
    return masses


def choose_experts(
    masses: dict[int, torch.Tensor], keep: int, mode: str = "global", top_k: int = 1
) -> dict[int, list[int]]:
    """The experts each MoE layer keeps, from :func:`expert_routing_mass` (arXiv 2406.02500, Expert Drop).

    Args:
        masses: {layer l: [N_l] routing mass}.
        keep: experts kept per layer ("layer_wise") or on average per layer ("global": `keep` * len(masses)
            experts are kept in total, layers may keep different counts).
        mode: "layer_wise" | "global" (see the module docstring; "global" clamps every layer at top_k).
        top_k: the model's experts per token; the floor of every layer.
    Returns:
        {layer l: sorted list of kept expert ids}.
    Raises:
        ValueError: unknown `mode`; `keep` < top_k, or `keep` > N_l for some layer ("layer_wise"), or
            `keep` * layers > sum of N_l ("global").
    """
    if mode not in EXPERT_DROP_MODES:
        raise ValueError(f"unknown expert drop mode={mode!r}; valid: {', '.join(EXPERT_DROP_MODES)}")
    if not masses:
        raise ValueError("masses is empty: the model has no MoE layer to drop experts from")
    sizes = [m.numel() for m in masses.values()]
    most = min(sizes) if mode == "layer_wise" else sum(sizes) // len(sizes)
    if not isinstance(keep, int) or not top_k <= keep <= most:
        raise ValueError(
            f"expert drop keep={keep!r} must be an int in [top_k={top_k}, {most}] for mode {mode!r} "
            f"(experts per MoE layer: {sizes})"
        )
    order = {layer: torch.argsort(m.double(), descending=True, stable=True) for layer, m in masses.items()}
    if mode == "layer_wise":
        return {layer: sorted(o[:keep].tolist()) for layer, o in order.items()}
    kept = {layer: o[:top_k].tolist() for layer, o in order.items()}  # floor: top_k per layer are exempt
    cand_layer = torch.cat([torch.full((len(o) - top_k,), layer) for layer, o in order.items()])
    cand_expert = torch.cat([o[top_k:] for o in order.values()])
    cand_share = torch.cat(
        [(masses[layer].double() / masses[layer].double().sum())[o[top_k:]] for layer, o in order.items()]
    )
    budget = keep * len(masses) - top_k * len(masses)
    best = torch.argsort(cand_share, descending=True, stable=True)[:budget]
    for layer, e in zip(cand_layer[best].tolist(), cand_expert[best].tolist(), strict=True):
        kept[layer].append(e)
    return {layer: sorted(k) for layer, k in kept.items()}


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    """Keep only output rows `rows` of a bias-free Linear (its weight [out, in] -> [len(rows), in])."""
    linear.weight = nn.Parameter(linear.weight[rows], requires_grad=linear.weight.requires_grad)
    linear.out_features = len(rows)


def _slice_router(router: nn.Module, kept: list[int]) -> None:
    """Remove the per-expert parameters of the dropped experts from any router of moelab.models.routers."""
    rows = torch.as_tensor(kept, dtype=torch.long)
    gate = getattr(router, "gate_network", None)
    if gate is not None:  # Linear(H, N) or Linear(H, W) -> tanh -> Linear(W, N): the last Linear's rows
        _keep_rows(gate if isinstance(gate, nn.Linear) else gate[-1], rows)
    if isinstance(router, NoisyTopKRouter):
        _keep_rows(router.weight_noise, rows)
    if isinstance(router, FrozenRandomRouter):
        router.projection = router.projection[rows.to(router.projection.device)]  # [N, H] buffer
    router.num_experts = len(kept)


def _experts_param(p: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    return nn.Parameter(p.index_select(dim, index.to(p.device)), requires_grad=p.requires_grad)


@torch.no_grad()
def drop_experts(model, keep_map: dict[int, list[int]]) -> None:
    """Keep only the routed experts `keep_map[l]` of each listed MoE layer l, in place.

    Removes the dropped experts' neurons (gate_proj/up_proj [I_l, H] rows, down_proj [H, I_l] columns) and
    router rows (see :func:`_slice_router`); kept experts stay in their original order, so expert id j of the
    result is the j-th smallest kept id. Updates config.num_experts_per_layer / expert_sizes, pins
    score_scale_factor (per layer, the parent's value) and, for "mlp" gates, gate_hidden_sizes, so
    ``save_pretrained`` + ``from_pretrained`` rebuild the same model. Shared experts are untouched.
    Source: arXiv 2406.02500, Expert Trimming, Expert Drop.

    Raises:
        ValueError: a layer of `keep_map` is not an MoE layer, or its ids are not distinct ids in [0, N_l),
            or fewer than top_k.
    """
    cfg = model.config
    L, moe = cfg.num_hidden_layers, set(cfg.moe_layer_indices)
    for layer, kept in keep_map.items():
        if layer not in moe:
            raise ValueError(f"keep_map layer {layer} is not an MoE layer (MoE layers: {sorted(moe)})")
        n = cfg.layer_num_experts(layer)
        if len(set(kept)) != len(kept) or any(not 0 <= e < n for e in kept) or len(kept) < cfg.top_k:
            raise ValueError(
                f"keep_map[{layer}]={kept} must be distinct expert ids in [0, {n}), at least top_k={cfg.top_k}"
            )
    counts = [cfg.layer_num_experts(i) for i in range(L)]
    sizes = [
        cfg.layer_expert_sizes(i) if i in moe or cfg.expert_sizes is None else cfg.expert_sizes[i]
        for i in range(L)
    ]
    scales = [cfg.layer_score_scale_factor(i) for i in range(L)]
    widths = [cfg.layer_gate_hidden_size(i) for i in range(L)]
    for layer, kept in keep_map.items():
        kept = sorted(kept)
        block = model.model.layers[layer].mlp
        ex = block.experts
        neurons = torch.cat([torch.arange(ex.expert_slice(e).start, ex.expert_slice(e).stop) for e in kept])
        ex.gate_proj = _experts_param(ex.gate_proj, neurons, 0)  # [I_l', H]
        ex.up_proj = _experts_param(ex.up_proj, neurons, 0)  # [I_l', H]
        ex.down_proj = _experts_param(ex.down_proj, neurons, 1)  # [H, I_l']
        ex.expert_sizes = [ex.expert_sizes[e] for e in kept]
        ex.num_experts = len(kept)
        _slice_router(block.router, kept)
        counts[layer], sizes[layer] = len(kept), list(ex.expert_sizes)
    cfg.num_experts_per_layer = counts
    cfg.expert_sizes = sizes
    cfg.score_scale_factor = scales
    if cfg.gate_network == "mlp":
        cfg.gate_hidden_sizes = widths
    cfg.validate_moe()


def expert_drop(model, batches, keep: int, mode: str = "global") -> dict:
    """Score routed experts on calibration `batches` and keep `keep` per MoE layer (in place).

    Source: arXiv 2406.02500, Expert Trimming, Expert Drop (the official scripts keep 6 of 8, default
    "global"). See the module docstring for the two modes and the top_k floor of "global".

    Args:
        batches: iterable of dicts with ``input_ids`` [B, T] and optional ``attention_mask`` [B, T].
        keep: experts kept per MoE layer (on average per layer for "global").
        mode: "layer_wise" | "global".
    Returns:
        {"mode", "keep", "top_k", "tokens", "layers": {l: {"kept", "dropped", "kept_mass", "dropped_mass"}}},
        ids in the parent's numbering, masses in tokens (see :func:`expert_routing_mass`).
    Raises:
        ValueError: unknown `mode`, `keep` out of range (see :func:`choose_experts`), no calibration token.
    """
    cfg = model.config
    sizes = {layer: torch.zeros(cfg.layer_num_experts(layer)) for layer in cfg.moe_layer_indices}
    choose_experts(sizes, keep, mode, cfg.top_k)  # bad keep / mode fail before the calibration forward
    masses = expert_routing_mass(model, batches)
    keep_map = choose_experts(masses, keep, mode, cfg.top_k)
    drop_experts(model, keep_map)
    layers = {}
    for layer, kept in keep_map.items():
        dropped = [e for e in range(masses[layer].numel()) if e not in set(kept)]
        layers[layer] = {
            "kept": kept,
            "dropped": dropped,
            "kept_mass": [round(float(masses[layer][e]), 6) for e in kept],
            "dropped_mass": [round(float(masses[layer][e]), 6) for e in dropped],
        }
    tokens = round(float(next(iter(masses.values())).sum()))
    return {"mode": mode, "keep": keep, "top_k": cfg.top_k, "tokens": tokens, "layers": layers}
