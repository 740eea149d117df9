"""Binary masks on adapter weights, applied in forward as ``W * M``, and one global pruning threshold.

A mask is a ``torch.nn.utils.parametrize`` parametrization of a Linear's ``weight``: the module keeps the
trainable tensor as ``<module>.parametrizations.weight.original`` and every forward reads
``weight = original * mask`` (``mask`` a float buffer of 0/1, same shape). A pruned entry therefore contributes
nothing to the output and receives a zero gradient; :func:`set_masks` also zeroes the pruned entries of
``original``, so AdamW (zero gradient, zero moments, decoupled weight decay of a zero) keeps them exactly zero
through training. Biases and norms are never masked (SparseAdapter, He et al., Findings of EMNLP 2022,
arXiv 2210.04284: the masks sit on the adapter's projection weights only).

Vocabulary: ``sparsity`` is the fraction of weights REMOVED and ``density = 1 - sparsity`` the fraction kept.
The upstream SparseAdapter CLI's ``--sparsity`` meant the fraction kept; ours does not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from moelab.adapters.options import check_sparsity

log = logging.getLogger(__name__)


class WeightMask(nn.Module):
    """Parametrization ``W -> W * M`` with ``M`` a 0/1 buffer of the weight's shape (float, the weight's dtype)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def is_masked(module: nn.Module) -> bool:
    """Whether ``module.weight`` carries a :class:`WeightMask`."""
    return parametrize.is_parametrized(module, "weight") and any(
        isinstance(p, WeightMask) for p in module.parametrizations.weight
    )


def attach_masks(modules: Mapping[str, nn.Module]) -> None:
    """Give every module in ``modules`` (name -> Linear) an all-ones mask, unless it has one already."""
    for module in modules.values():
        if not is_masked(module):
            w = module.weight
            parametrize.register_parametrization(module, "weight", WeightMask(torch.ones_like(w.detach())))


def mask_of(module: nn.Module) -> torch.Tensor:
    """The mask buffer of a masked module, [out, in]."""
    return next(p for p in module.parametrizations.weight if isinstance(p, WeightMask)).mask


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The trainable leaf behind a module's weight: ``original`` when masked, else ``weight``, [out, in]."""
    return module.parametrizations.weight.original if is_masked(module) else module.weight


@torch.no_grad()
def set_masks(modules: Mapping[str, nn.Module], masks: Mapping[str, torch.Tensor]) -> None:
    """Install ``masks`` (name -> bool or 0/1 tensor of the weight's shape) and zero the pruned weights.

    Raises:
        KeyError: a module of ``modules`` has no mask in ``masks`` (names it).
        ValueError: a mask's shape differs from its weight's.
    """
    attach_masks(modules)
    for name, module in modules.items():
        if name not in masks:
            raise KeyError(f"no mask for {name}")
        buf = mask_of(module)
        m = masks[name]
        if tuple(m.shape) != tuple(buf.shape):
            raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, weight {tuple(buf.shape)}")
        buf.copy_(m.to(buf))
        raw_weight(module).mul_(buf)


def global_masks(
    scores: Mapping[str, torch.Tensor], sparsity: float, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict]:
    """Keep the highest-scoring weights over ALL tensors at once: one global threshold.

    Of the ``N`` scores (all tensors together) exactly ``N - round(sparsity * N)`` are kept, the highest
    ones, so a tensor whose scores are small as a whole loses more of its weights than one whose scores are
    large (SparseAdapter prunes with one global threshold over all adapters, as SNIP, GraSP and SynFlow
    rank all weights of a network together). Ties are broken at random with ``seed`` (deterministic), so equal
    scores (e.g. the zero SNIP scores of a zero-initialised up-projection) do not prune whole tensors in
    index order. A score of ``-inf`` marks a weight that must stay pruned (SynFlow's iterations).

    Args:
        scores: name -> score tensor of the weight's shape; higher = more important (kept first).
        sparsity: fraction removed, in [0, 1).

    Returns:
        ``(masks, info)``: name -> bool mask (True = kept), and ``{"total", "kept", "threshold",
        "tied_at_threshold"}`` (the lowest kept score and how many scores equal it).

    Raises:
        ConfigError (a ValueError): ``sparsity`` outside [0, 1) (names it). ValueError: no scores, or a NaN
            score (names the tensor).
    """
    sparsity = check_sparsity(sparsity)
    if not scores:
        raise ValueError("no weights to prune (scores is empty): does the model have adapters?")
    for name, s in scores.items():
        if torch.isnan(s).any():
            raise ValueError(f"NaN pruning score in {name}")
    flat = torch.cat([s.detach().flatten().to(torch.float64).cpu() for s in scores.values()])
    total = flat.numel()
    keep = total - round(sparsity * total)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=gen)
    order = torch.sort(flat[perm], descending=True, stable=True).indices
    kept_idx = perm[order[:keep]]
    kept = torch.zeros(total, dtype=torch.bool)
    kept[kept_idx] = True
    threshold = float(flat[kept_idx].min()) if keep else math.inf
    tied = int((flat == threshold).sum()) if keep else 0
    if tied > 1 and keep < total and tied > 0.01 * total:
        log.warning(
            "%d of %d pruning scores tie at the threshold %g: ties broken at random", tied, total, threshold
        )
    masks, start = {}, 0
    for name, s in scores.items():
        n = s.numel()
        masks[name] = kept[start : start + n].view(s.shape).to(s.device)
        start += n
    return masks, {"total": total, "kept": keep, "threshold": threshold, "tied_at_threshold": tied}


def mask_summary(modules: Mapping[str, nn.Module]) -> dict:
    """Counts of masked weights: ``{"total", "kept", "sparsity", "per_tensor": {name: density}}``.

    Unmasked modules count as fully kept.
    """
    total = kept = 0
    per = {}
    for name, module in modules.items():
        n = module.weight.numel()
        k = int(mask_of(module).sum()) if is_masked(module) else n
        total, kept = total + n, kept + k
        per[name] = k / n
    return {"total": total, "kept": kept, "sparsity": 1 - kept / total if total else 0.0, "per_tensor": per}


def bake_masks(model: nn.Module) -> int:
    """Replace every mask parametrization by a plain weight holding ``W * M``; returns how many were removed.

    For export (``save_pretrained``): the baked weights are the masked ones, the masks are gone, so further
    training would no longer keep the zeros.
    """
    n = 0
    for module in list(model.modules()):
        if is_masked(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            n += 1
    return n
