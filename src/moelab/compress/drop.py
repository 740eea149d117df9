"""Block Drop: remove whole transformer blocks whose output is most similar to their input.

Source: "A unified framework for MoE compression" (arXiv 2406.02500), Expert Trimming, Block Drop:
S_i = mean over calibration tokens of cos(h_i, h_{i+1}), h_i the residual stream entering block i and
h_{i+1} the one leaving it; the blocks with the highest S change the stream least and are dropped
("discrete", one-shot). The "consecutive" variant drops the most similar contiguous window of n blocks,
S_{i..i+n-1} = mean cos(h_i, h_{i+n}) (upstream compared with an off-by-one window; we use the paper's
definition). Scores are computed once (one-shot); LLM-Drop's iterative re-scoring is a variant left for later.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DROP_MODES = ("discrete", "consecutive")


@torch.no_grad()
def block_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list:
    """Residual stream before every block and after the last one, at non-padding positions.

    Args:
        model: an HF decoder (``model.model.layers`` is the block list).
        input_ids: LongTensor [B, T]; attention_mask: [B, T] (1 = token) or None.
    Returns:
        list of L+1 tensors [N, H] (N = number of non-padding tokens), float32.
    """
    layers = model.model.layers
    captured: list[torch.Tensor | None] = [None] * (len(layers) + 1)

    def hook(i):
        def fn(module, args, kwargs, output):
            inp = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            if i == 0:
                captured[0] = inp.detach().float()
            captured[i + 1] = out.detach().float()

        return fn

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    keep = (
        attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    )
    return [h[keep] for h in captured]


def block_similarity(hidden: list[torch.Tensor], n: int = 1) -> torch.Tensor:
    """S_i = mean_t cos(h_i[t], h_{i+n}[t]) for i = 0..L-n (2406.02500, Block Drop).

    Args:
        hidden: L+1 tensors [N, H] from :func:`block_hidden_states`.
        n: window length (1 = single blocks).
    Returns:
        FloatTensor [L - n + 1]: one similarity per block (window start).
    """
    L = len(hidden) - 1
    if not 1 <= n <= L:
        raise ValueError(f"block drop window n={n} must lie in [1, {L}] (the model has {L} blocks)")
    return torch.stack(
        [F.cosine_similarity(hidden[i], hidden[i + n], dim=-1).mean() for i in range(L - n + 1)]
    )


def choose_blocks(scores: torch.Tensor, n_drop: int, mode: str = "discrete") -> list[int]:
    """Indices of blocks to drop: top-``n_drop`` single-block scores, or the best window of ``n_drop``.

    For mode "consecutive", ``scores`` must be the window scores computed with ``n = n_drop``.
    """
    if mode not in DROP_MODES:
        raise ValueError(f"unknown block drop mode {mode!r}; valid: {', '.join(DROP_MODES)}")
    if mode == "discrete":
        if not 0 <= n_drop < len(scores):
            raise ValueError(
                f"compress.n_drop={n_drop} must lie in [0, {len(scores) - 1}] for {len(scores)} blocks"
            )
        return sorted(torch.topk(scores, n_drop).indices.tolist()) if n_drop else []
    start = int(torch.argmax(scores))
    return list(range(start, start + n_drop))


def drop_blocks(model, indices: list[int], per_layer_fields: tuple[str, ...] = ()) -> None:
    """Remove decoder blocks ``indices`` in place and keep the config consistent.

    Updates ``num_hidden_layers``, ``layer_types`` and every per-layer list field named in
    ``per_layer_fields`` (e.g. LlamaMoE's expert sizes), and renumbers ``self_attn.layer_idx`` so the KV
    cache still indexes contiguously.
    """
    layers = model.model.layers
    L = len(layers)
    bad = [i for i in indices if not 0 <= i < L]
    if bad or len(set(indices)) != len(indices) or len(indices) >= L:
        raise ValueError(f"cannot drop blocks {indices} from a model with {L} blocks")
    keep = [i for i in range(L) if i not in set(indices)]
    model.model.layers = torch.nn.ModuleList(layers[i] for i in keep)
    for new_idx, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = new_idx
    cfg = model.config
    cfg.num_hidden_layers = len(keep)
    for name in ("layer_types", *per_layer_fields):
        value = getattr(cfg, name, None)
        if isinstance(value, (list, tuple)) and len(value) == L:
            setattr(cfg, name, [value[i] for i in keep])


@torch.no_grad()
def block_drop_scores(model, batches, n: int = 1) -> torch.Tensor:
    """Token-weighted mean of :func:`block_similarity` over calibration batches.

    Args:
        batches: iterable of dicts with ``input_ids`` [B, T] and optional ``attention_mask`` [B, T].
    Returns:
        FloatTensor [L - n + 1].
    """
    model.eval()
    total, count = None, 0
    for batch in batches:
        hidden = block_hidden_states(model, batch["input_ids"], batch.get("attention_mask"))
        tokens = hidden[0].shape[0]
        scores = block_similarity(hidden, n) * tokens
        total = scores if total is None else total + scores
        count += tokens
    if not count:
        raise ValueError("block drop needs at least one calibration token")
    return total / count


def block_drop(
    model, batches, n_drop: int, mode: str = "discrete", per_layer_fields: tuple[str, ...] = ()
) -> dict:
    """Score blocks on calibration ``batches``, drop ``n_drop`` of them in place; returns what was done.

    Returns:
        {"mode", "n_drop", "scores": [S_i ...] (window scores for "consecutive"), "dropped": [indices]}.
    """
    if mode not in DROP_MODES:
        raise ValueError(f"unknown block drop mode {mode!r}; valid: {', '.join(DROP_MODES)}")
    window = n_drop if mode == "consecutive" and n_drop > 0 else 1
    scores = block_drop_scores(model, batches, n=window)
    dropped = choose_blocks(scores, n_drop, mode) if n_drop else []
    drop_blocks(model, dropped, per_layer_fields)
    return {
        "mode": mode,
        "n_drop": n_drop,
        "scores": [round(float(s), 6) for s in scores],
        "dropped": dropped,
    }
