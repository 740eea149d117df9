"""Layer Drop: remove the FFNs (with their pre-FFN norm) that change the residual stream least.

Source: "A unified framework for MoE compression" (arXiv 2406.02500), Expert Trimming, Layer Drop:
S_l = mean over calibration tokens of cos(x, x + f_l(LN_l(x))), x = the residual stream entering the FFN of
decoder layer l (after the attention residual), LN_l its pre-FFN norm (post_attention_layernorm), f_l the FFN;
the layers with the highest S are dropped, FFN and norm together; the attention stays. Scores are computed
once (one-shot, the paper); ``iterative=True`` re-scores after every single drop (LLM-Drop's variant).

Representation: a dropped layer gets ``config.mlp_layer_types[l] = "none"``; LlamaMoEDecoderLayer then builds
no FFN and no pre-FFN norm (``mlp`` and ``post_attention_layernorm`` are None) and returns the attention
residual, so the result saves and loads with ``from_pretrained`` with no extra weights.
Scope: by default only MoE FFN layers are candidates (the paper drops Mixtral's MoE layers);
``layer_types=("moe", "dense")`` also scores and drops the dense FFN layers of a partly-MoE model.
Numerics: cos is computed in float64 as dot(x, y) / sqrt(|x|^2 |y|^2), so an FFN with f = 0 scores exactly 1.

Shape legend: B batch, T sequence length, H hidden, N non-padding calibration tokens.
"""

from __future__ import annotations

import torch

LAYER_DROP_TYPES = ("moe", "dense")


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row-wise cos(x, y) of [N, H] tensors in float64 -> [N]; exactly 1 where y == x != 0."""
    x, y = x.double(), y.double()
    denom = torch.sqrt((x * x).sum(dim=-1) * (y * y).sum(dim=-1))
    return (x * y).sum(dim=-1) / denom.clamp_min(torch.finfo(torch.float64).tiny)


def droppable_layers(config, layer_types=("moe",)) -> list[int]:
    """Decoder layers whose FFN is one of `layer_types` ("moe", "dense"; "none" = already dropped).

    Raises: ValueError for a layer type outside LAYER_DROP_TYPES or a config without per-layer FFN types.
    """
    bad = [t for t in layer_types if t not in LAYER_DROP_TYPES]
    if bad or not layer_types:
        raise ValueError(
            f"layer drop layer_types={layer_types!r} must be a non-empty subset of {LAYER_DROP_TYPES}"
        )
    if not hasattr(config, "layer_mlp_type"):
        raise ValueError("layer drop needs a LlamaMoE config (mlp_layer_types marks dropped FFNs as 'none')")
    return [layer for layer in range(config.num_hidden_layers) if config.layer_mlp_type(layer) in layer_types]


@torch.no_grad()
def layer_drop_scores(model, batches, layer_types=("moe",)) -> dict[int, float]:
    """S_l = mean over non-padding tokens of cos(x, x + f_l(LN_l(x))) for every droppable layer l.

    Token-weighted over all `batches` (arXiv 2406.02500, Expert Trimming, Layer Drop). x is captured at the
    input of post_attention_layernorm, x + f at the output of the decoder layer. The model runs in eval mode;
    its training mode is restored afterwards.

    Args:
        model: a LlamaMoEForCausalLM.
        batches: iterable of dicts with ``input_ids`` [B, T] and optional ``attention_mask`` [B, T] (1 = token).
        layer_types: FFN kinds that are candidates (see :func:`droppable_layers`).
    Returns:
        {decoder layer l: S_l} (float, in [-1, 1]; 1 = the FFN leaves the stream's direction unchanged).
    Raises:
        ValueError: bad `layer_types`, or no non-padding calibration token.
    """
    layers = droppable_layers(model.config, layer_types)
    sums = {layer: torch.zeros((), dtype=torch.float64) for layer in layers}
    state: dict = {}

    def save_x(layer):
        def fn(module, args):
            state[layer] = args[0][state["keep"]]  # [N, H]

        return fn

    def add_cos(layer):
        def fn(module, args, output):
            sums[layer] += _cosine(state.pop(layer), output[0][state["keep"]]).sum().cpu()

        return fn

    blocks = model.model.layers
    handles = [
        blocks[layer].post_attention_layernorm.register_forward_pre_hook(save_x(layer)) for layer in layers
    ]
    handles += [blocks[layer].register_forward_hook(add_cos(layer)) for layer in layers]
    tokens, was_training = 0, model.training
    model.eval()
    try:
        for batch in batches:
            ids, mask = batch["input_ids"], batch.get("attention_mask")
            state["keep"] = mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            tokens += int(state["keep"].sum())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if not tokens:
        raise ValueError("layer drop needs at least one calibration token (batches / attention_mask)")
    return {layer: float(s / tokens) for layer, s in sums.items()}


def choose_layers(scores: dict[int, float], n_drop: int) -> list[int]:
    """The `n_drop` layers with the highest S (ties: lower layer first), sorted.

    Raises: ValueError if not 0 <= n_drop < len(scores) (at least one candidate FFN must remain).
    """
    if not isinstance(n_drop, int) or not 0 <= n_drop < len(scores):
        raise ValueError(
            f"layer drop n_drop={n_drop!r} must be an int in [0, {len(scores) - 1}] for {len(scores)} "
            "droppable FFN layers"
        )
    ranked = sorted(scores, key=lambda layer: (-scores[layer], layer))
    return sorted(ranked[:n_drop])


def drop_layers(model, indices: list[int]) -> None:
    """Remove the FFN and pre-FFN norm of decoder layers `indices` in place; attention stays.

    Sets ``mlp`` and ``post_attention_layernorm`` to None and ``config.mlp_layer_types[l] = "none"`` (see the
    module docstring), so ``save_pretrained`` + ``from_pretrained`` rebuild the dropped model.
    Source: arXiv 2406.02500, Expert Trimming, Layer Drop.

    Raises: ValueError if an index is out of range, repeated, or its FFN was already dropped.
    """
    cfg = model.config
    L = cfg.num_hidden_layers
    types = list(cfg.mlp_layer_types) if cfg.mlp_layer_types is not None else ["moe"] * L
    bad = [layer for layer in indices if not 0 <= layer < L or types[layer] == "none"]
    if bad or len(set(indices)) != len(indices):
        raise ValueError(f"cannot drop FFN layers {indices}: out of range, repeated or already dropped {bad}")
    for layer in indices:
        block = model.model.layers[layer]
        block.mlp = None
        block.post_attention_layernorm = None
        types[layer] = "none"
    cfg.mlp_layer_types = types
    cfg.validate_moe()


def layer_drop(model, batches, n_drop: int, layer_types=("moe",), iterative: bool = False) -> dict:
    """Score FFN layers on calibration `batches` and drop the `n_drop` most redundant ones (in place).

    One-shot (paper): score once, drop the top `n_drop`. Iterative (LLM-Drop): `n_drop` rounds of score ->
    drop the single highest; `batches` is then read once per round (it is materialised as a list).
    Source: arXiv 2406.02500, Expert Trimming, Layer Drop (the official scripts drop 8 of Mixtral's 32).

    Returns:
        {"n_drop", "iterative", "layer_types", "rounds": [{layer: S} per scoring round], "order": layers in
        drop order, "dropped": sorted layers}; one-shot has one round and "order" sorted by score.
    Raises:
        ValueError: n_drop < 0 or >= the number of droppable layers; bad `layer_types`; no calibration token.
    """
    choose_layers(dict.fromkeys(droppable_layers(model.config, layer_types), 0.0), n_drop)  # validate first
    batches = list(batches)
    rounds, order = [], []
    if not iterative:
        scores = layer_drop_scores(model, batches, layer_types)
        rounds.append(scores)
        order = sorted(scores, key=lambda layer: (-scores[layer], layer))[:n_drop]
        drop_layers(model, sorted(order))
    else:
        for _ in range(max(n_drop, 1)):
            scores = layer_drop_scores(model, batches, layer_types)
            rounds.append(scores)
            if n_drop:
                order += choose_layers(scores, 1)
                drop_layers(model, order[-1:])
    rounds = [{layer: round(s, 8) for layer, s in r.items()} for r in rounds]
    return {
        "n_drop": n_drop,
        "iterative": iterative,
        "layer_types": list(layer_types),
        "rounds": rounds,
        "order": order,
        "dropped": sorted(order),
    }
