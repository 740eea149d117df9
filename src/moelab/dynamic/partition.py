"""Mode partition: which kernel entries stay dynamic (PAD-Net, arXiv 2211.05528, section 3, Iterative Mode
Partition).

IMP: M = 1 at start; for t = 1..T:
    S = |dL/dM|                 (SNIP, Lee et al. 2019, applied to the mask; L summed over n batches),
    keep dynamic the top round(kappa^(t/T) * N) entries of S under ONE threshold over all layers' masks
    (N = all mask entries of the model); the others become static (M = 0).
So after round T exactly round(kappa * N) entries are dynamic; per-layer ratios may differ (global threshold).
Entries already static keep M = 0 (their score is not ranked): the dynamic sets shrink monotonically.
Ties are broken by position (the order of :func:`model_partitions`, then flat index), so a partition is
deterministic. ``method="random"`` (the ablation) ranks by uniform random scores from a seeded generator
instead, with the same schedule (its final masks are a uniform random subset of size round(kappa * N)).

Shape legend: every mask M has its kernel's shape S; N = sum over partitions of numel(M).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from moelab.dynamic.options import PARTITION_METHODS, check_choice, check_kappa, check_positive_int
from moelab.dynamic.partial import PartiallyDynamic, Partition


def model_partitions(model: nn.Module) -> dict[str, Partition]:
    """{"<module path>.<tensor name>": Partition} of every PAD layer in `model` (model.named_modules order).

    Raises: ValueError if `model` has no PAD layer (nothing to partition).
    """
    parts = {
        f"{path}.{p.name}" if path else p.name: p
        for path, module in model.named_modules()
        if isinstance(module, PartiallyDynamic)
        for p in module.partitions()
    }
    if not parts:
        raise ValueError("model has no partially dynamic layer (PADConv2d / PADExperts) to partition")
    return parts


def dynamic_fraction(t: int, rounds: int, kappa: float) -> float:
    """kappa^(t/T): the fraction of all mask entries kept dynamic after round t of T (t = 0: 1).

    Raises: ValueError naming kappa / rounds / t.
    """
    kappa = check_kappa(kappa)
    check_positive_int(rounds, "rounds")
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= rounds:
        raise ValueError(f"t={t!r} must be an int in [0, rounds={rounds}]")
    return kappa ** (t / rounds)


def target_count(fraction: float, total: int) -> int:
    """round(fraction * total) mask entries (Python's round: half to even), at least 1."""
    return max(1, round(fraction * total))


def dynamic_ratio(model: nn.Module) -> float:
    """Fraction of all mask entries of `model` that are dynamic (M = 1)."""
    parts = model_partitions(model).values()
    return sum(float(p.mask.sum()) for p in parts) / sum(p.mask.numel() for p in parts)


def reset_masks(model: nn.Module) -> None:
    """M = 1 everywhere (fully dynamic): IMP's starting point."""
    for p in model_partitions(model).values():
        p.mask.fill_(1.0)


def mask_saliency(
    model: nn.Module, loss_fn: Callable[[nn.Module, object], torch.Tensor], batches: Iterable
) -> dict[str, torch.Tensor]:
    """S = |dL/dM| for every mask, L = sum over `batches` of loss_fn(model, batch) (SNIP on the mask).

    The gradient is taken with torch.autograd.grad with respect to the masks only: parameter .grad fields
    are left untouched; the model's train / eval mode is the caller's.
    Args: loss_fn(model, batch) -> scalar loss tensor; batches: a non-empty iterable of batches.
    Returns: {name (as model_partitions): S [*S] float32, >= 0}.
    Raises: ValueError if `batches` is empty.
    """
    parts = model_partitions(model)
    masks = [p.mask for p in parts.values()]
    grads = [torch.zeros_like(m) for m in masks]
    seen = 0
    try:
        for m in masks:
            m.requires_grad_(True)
        for batch in batches:
            loss = loss_fn(model, batch)
            for acc, g in zip(grads, torch.autograd.grad(loss, masks, allow_unused=True), strict=True):
                if g is not None:
                    acc += g
            seen += 1
    finally:
        for m in masks:
            m.requires_grad_(False)
    if not seen:
        raise ValueError("batches is empty: mask_saliency needs at least one batch")
    return {name: g.abs().float() for name, g in zip(parts, grads, strict=True)}


@torch.no_grad()
def partition_round(model: nn.Module, scores: dict[str, torch.Tensor], fraction: float) -> int:
    """Keep dynamic the top round(fraction * N) currently dynamic entries of `scores` (one global threshold).

    Args: scores: {name: [*S]} for every partition of the model (from :func:`mask_saliency`, or random);
        fraction in (0, 1], of ALL N mask entries.
    Returns: the number of dynamic entries after the round (== round(fraction * N), at least 1).
    Raises: ValueError naming fraction if it is outside (0, 1] or asks for more entries than are dynamic now,
        or naming scores if its names or shapes differ from the model's partitions.
    """
    fraction = check_kappa(fraction, "fraction")
    parts = model_partitions(model)
    if set(scores) != set(parts) or any(scores[n].shape != p.mask.shape for n, p in parts.items()):
        raise ValueError(f"scores must have one tensor per partition with its mask's shape: {sorted(parts)}")
    flat_mask = torch.cat([p.mask.reshape(-1) for p in parts.values()])  # [N]
    flat_score = torch.cat([scores[n].reshape(-1).float().cpu() for n in parts])  # [N]
    total, live = flat_mask.numel(), int(flat_mask.sum())
    keep = target_count(fraction, total)
    if keep > live:
        raise ValueError(
            f"fraction={fraction} keeps {keep} of {total} entries but only {live} are dynamic now"
        )
    ranked = torch.where(flat_mask.cpu() > 0, flat_score, torch.tensor(float("-inf")))
    order = torch.sort(ranked, descending=True, stable=True).indices[:keep]
    new = torch.zeros(total)
    new[order] = 1.0
    start = 0
    for p in parts.values():
        n = p.mask.numel()
        p.mask.copy_(new[start : start + n].view_as(p.mask))
        start += n
    return keep


def iterative_mode_partition(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, object], torch.Tensor] | None,
    batches: Iterable | None,
    kappa: float,
    rounds: int = 5,
    num_batches: int = 10,
    method: str = "imp",
    seed: int = 0,
    between_rounds: Callable[[int], None] | None = None,
) -> list[dict]:
    """Partition `model`'s PAD layers so that a fraction kappa of all mask entries stays dynamic.

    Args:
        model: a module containing PADConv2d / PADExperts layers; masks are reset to 1 first.
        loss_fn, batches: for method "imp", loss_fn(model, batch) -> scalar and a re-iterable of batches;
            each round scores the next `num_batches` batches (restarting the iterable when it runs out).
            Unused (may be None) for "random".
        kappa: the final dynamic ratio, in (0, 1].
        rounds: T >= 1; round t keeps kappa^(t/T).
        num_batches: n >= 1 batches per SNIP score (~10 in PAD-Net).
        method: "imp" (|dL/dM|) or "random" (uniform scores, generator seeded with `seed`).
        between_rounds: optional callback(t) after round t < T (e.g. train some steps between rounds).
    Returns: one dict per round: {"round": t, "fraction": kappa^(t/T), "dynamic": count, "total": N,
        "layers": {name: dynamic ratio of that partition}}.
    Raises: ValueError naming kappa / rounds / num_batches / method / batches.
    """
    kappa = check_kappa(kappa)
    check_positive_int(rounds, "rounds")
    check_positive_int(num_batches, "num_batches")
    check_choice("method", method, PARTITION_METHODS)
    if method == "imp" and (loss_fn is None or batches is None):
        raise ValueError("method='imp' needs loss_fn and batches (SNIP scores on the mask)")
    reset_masks(model)
    total = sum(p.mask.numel() for p in model_partitions(model).values())
    generator = torch.Generator().manual_seed(seed)
    stream = _batch_stream(batches) if method == "imp" else None
    history = []
    for t in range(1, rounds + 1):
        parts = model_partitions(model)
        if method == "imp":
            scores = mask_saliency(model, loss_fn, [next(stream) for _ in range(num_batches)])
        else:
            scores = {n: torch.rand(p.mask.shape, generator=generator) for n, p in parts.items()}
        fraction = dynamic_fraction(t, rounds, kappa)
        kept = partition_round(model, scores, fraction)
        history.append(
            {
                "round": t,
                "fraction": fraction,
                "dynamic": kept,
                "total": total,
                "layers": {n: float(p.mask.mean()) for n, p in parts.items()},
            }
        )
        if between_rounds is not None and t < rounds:
            between_rounds(t)
    return history


def _batch_stream(batches: Iterable):
    """Endless batches: iterate `batches`, restart it when exhausted; ValueError if it yields nothing."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("batches yielded no batch (give a re-iterable such as a list or a DataLoader)")
