"""Pruning adapters at initialisation (SparseAdapter): five scores, one global threshold, masks in forward.

SparseAdapter (He et al., Findings of EMNLP 2022, arXiv 2210.04284, Section 2.2) prunes every adapter once, at
initialisation, with one of five pruning-at-initialisation methods, and trains the sparse adapters.

:func:`prune` scores every adapter projection weight once, before training, keeps the highest scores over
all adapters together (:func:`moelab.adapters.masks.global_masks`) and installs the masks. Scores (higher =
kept first; ``w`` a weight, ``g = dL/dw`` the gradient of the mean training loss over the pruning batches):

- ``random``: i.i.d. uniform [0, 1) from a seeded generator, one tensor after the other in module order.
- ``magnitude``: ``|w|``.
- ``snip``: ``|g * w|``, the connection sensitivity of SNIP (Lee et al. 2019, ICLR, Section 4.1, eq. 6;
  their normalisation by the sum over all weights does not change a global ranking and is omitted).
- ``grasp``: ``w * (H g)``, ``H`` the Hessian of the loss, ``Hg`` by double back-propagation. GraSP (Wang
  et al. 2020, ICLR, Section 4, eq. 8) scores ``S(-w) = -w * Hg`` and removes the weights with the LARGEST
  ``S``, i.e. keeps the largest ``-S = w * Hg``: our score is ``-S`` so that every pruner keeps its highest.
- ``synflow``: data-free and iterative (Tanaka et al. 2020, NeurIPS, Section 6 and Algorithm 1): replace
  every parameter ``p`` of the model by ``|p|``, feed an all-ones input, ``R = sum(output)``, score
  ``|dR/dw * w|``; repeat ``iterations`` times (100 in their paper), pruning to density ``rho^(k/n)`` after
  iteration ``k`` of ``n`` (the exponential schedule, ``rho`` = final density), so the last iteration lands on
  the requested sparsity exactly. Computed in float64 against overflow. Deviation: the encoder's LayerNorms,
  softmax attention and GELUs make ``R`` a score of the whole network rather than the path norm of the
  linear-ReLU networks of their analysis; the all-ones input is ``inputs_embeds = 1`` [1, T, d] (T = 4
  tokens, so that queries get a gradient) and the adapters' own ReLU is the identity while scoring (as every
  ReLU is on the positive paths of their analysis), so that no adapter weight scores zero.

The data-dependent scores run with dropout off (``model.eval()``) so they are deterministic; GraSP switches a
transformers model to eager attention while it runs (CPU SDPA has no double backward) and back afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from moelab.adapters.masks import attach_masks, global_masks, is_masked, mask_of, raw_weight, set_masks
from moelab.adapters.modules import BottleneckAdapter, adapter_linears
from moelab.adapters.options import DATA_PRUNERS, PRUNERS, check_choice, check_positive_int, check_sparsity

LossFn = Callable[[nn.Module, Mapping], torch.Tensor]
log = logging.getLogger(__name__)


def zero_score_tensors(scores: Mapping[str, torch.Tensor], pruner: str) -> list[str]:
    """Names of the tensors whose scores are all zero, with a warning: their weights are pruned at random.

    Expected for the gradient-based scores of a ``zero_up`` adapter (a zero up-projection passes no gradient
    and scores zero itself; see :mod:`moelab.adapters.modules`), and a hint that ``init`` is the wrong one."""
    zero = [n for n, s in scores.items() if not bool((s != 0).any())]
    if zero:
        log.warning(
            "%s: %d of %d adapter weight tensors score zero everywhere (e.g. %s), so their weights are pruned "
            "at random; a zero_up adapter (LoRA's default) does this, init='near_identity' does not",
            pruner, len(zero), len(scores), zero[0],
        )  # fmt: skip
    return zero


def default_loss(model: nn.Module, batch: Mapping) -> torch.Tensor:
    """The mean loss of a transformers model on a batch holding ``labels`` (``model(**batch).loss``)."""
    return model(**batch).loss


def batch_size(batch: Mapping) -> int:
    """Examples in a batch: ``len(batch["labels"])``, else the length of its first value."""
    first = batch["labels"] if "labels" in batch else next(iter(batch.values()))
    return len(first)


def _effective(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The weights as the forward sees them, ``W * M`` when masked (``module.weight`` computes it)."""
    return {n: m.weight.detach() for n, m in modules.items()}


def random_scores(modules: Mapping[str, nn.Module], seed: int = 0) -> dict[str, torch.Tensor]:
    """Uniform [0, 1) scores, float32, drawn with ``torch.Generator().manual_seed(seed)`` tensor by tensor."""
    gen = torch.Generator().manual_seed(int(seed))
    return {n: torch.rand(tuple(m.weight.shape), generator=gen) for n, m in modules.items()}


def magnitude_scores(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """``|w|`` of each (masked) weight [out, in]."""
    return {n: w.abs() for n, w in _effective(modules).items()}


class _Scoring:
    """Model in eval mode, the targets' raw weights requiring grad; restores both on exit."""

    def __init__(self, model: nn.Module, modules: Mapping[str, nn.Module], eager: bool = False):
        self.model, self.modules, self.eager = model, modules, eager

    def __enter__(self) -> dict[str, torch.Tensor]:
        self.training = self.model.training
        self.model.eval()
        self.leaves = {n: raw_weight(m) for n, m in self.modules.items()}
        self.grad_flags = {n: p.requires_grad for n, p in self.leaves.items()}
        for p in self.leaves.values():
            p.requires_grad_(True)
        self.attn = None
        if self.eager and hasattr(self.model, "set_attn_implementation"):
            self.attn = self.model.config._attn_implementation
            self.model.set_attn_implementation("eager")
        return self.leaves

    def __exit__(self, *exc):
        for n, p in self.leaves.items():
            p.requires_grad_(self.grad_flags[n])
        if self.attn is not None:
            self.model.set_attn_implementation(self.attn)
        self.model.train(self.training)


def _weighted(batches: list[Mapping]) -> list[tuple[Mapping, float]]:
    sizes = [batch_size(b) for b in batches]
    total = sum(sizes)
    if not batches or total == 0:
        raise ValueError("pruning batches are empty: snip and grasp need training examples")
    return [(b, n / total) for b, n in zip(batches, sizes, strict=True)]


def _gradient(model, leaves, batches, loss_fn) -> list[torch.Tensor]:
    """``dL/dw`` of the example-weighted mean loss over ``batches``, one tensor per leaf."""
    params = list(leaves.values())
    grads = [torch.zeros_like(p) for p in params]
    for batch, weight in _weighted(batches):
        g = torch.autograd.grad(loss_fn(model, batch) * weight, params, allow_unused=True)
        for acc, gi in zip(grads, g, strict=True):
            if gi is not None:
                acc.add_(gi)
    return grads


def snip_scores(
    model: nn.Module, modules: Mapping[str, nn.Module], batches: list[Mapping], loss_fn: LossFn = default_loss
) -> dict[str, torch.Tensor]:
    """SNIP ``|g * w|`` [out, in] per weight (Lee et al. 2019, eq. 6 without its normalisation).

    ``g`` is the gradient of the mean loss over ``batches`` (each batch weighted by its number of examples),
    taken w.r.t. the masked weight ``w * m`` (at initialisation the masks are all ones).
    """
    with _Scoring(model, modules) as leaves:
        grads = _gradient(model, leaves, batches, loss_fn)
    eff = _effective(modules)
    return {n: (g * eff[n]).abs() for n, g in zip(modules, grads, strict=True)}


def grasp_scores(
    model: nn.Module, modules: Mapping[str, nn.Module], batches: list[Mapping], loss_fn: LossFn = default_loss
) -> dict[str, torch.Tensor]:
    """GraSP keep-score ``w * (H g)`` [out, in] (Wang et al. 2020, eq. 8: ``S(-w) = -w * Hg``, largest removed).

    ``g`` as in :func:`snip_scores`; ``Hg = d(g_detached . dL/dw)/dw`` by double back-propagation, over the
    target weights only (the Hessian block of the adapter weights), accumulated batch by batch.
    """
    with _Scoring(model, modules, eager=True) as leaves:
        params = list(leaves.values())
        g = [gi.detach() for gi in _gradient(model, leaves, batches, loss_fn)]
        hg = [torch.zeros_like(p) for p in params]
        for batch, weight in _weighted(batches):
            grads = torch.autograd.grad(
                loss_fn(model, batch) * weight, params, create_graph=True, allow_unused=True
            )
            dot = sum((gi * gd).sum() for gi, gd in zip(grads, g, strict=True) if gi is not None)
            if not torch.is_tensor(dot) or not dot.requires_grad:
                continue  # no path from these weights to the loss
            for acc, h in zip(hg, torch.autograd.grad(dot, params, allow_unused=True), strict=True):
                if h is not None:
                    acc.add_(h)
    eff = _effective(modules)
    return {n: eff[n] * h for n, h in zip(modules, hg, strict=True)}


SYNFLOW_TOKENS = 4  # > 1, so that the attention's queries get a gradient (softmax over one key is constant)


def ones_forward(model: nn.Module) -> torch.Tensor:
    """SynFlow's all-ones input for a transformers encoder: ``inputs_embeds = 1`` [1, T, d] with
    ``T = min(SYNFLOW_TOKENS, max_position_embeddings)``; returns the model's first output (logits [1, C] for a
    classifier, hidden states [1, T, d] for a bare encoder).

    Several tokens, not one: with one token the attention's softmax is constant, so LoRA on the query
    projection would get no gradient and a SynFlow score of zero. The tokens differ only by their position
    embeddings (made positive by SynFlow, like every parameter)."""
    p = next(model.parameters())
    t = max(1, min(SYNFLOW_TOKENS, getattr(model.config, "max_position_embeddings", SYNFLOW_TOKENS)))
    x = torch.ones(1, t, model.config.hidden_size, dtype=p.dtype, device=p.device)
    out = model(inputs_embeds=x, attention_mask=torch.ones(1, t, dtype=torch.long, device=p.device))
    return out[0]


class _Linearised:
    """Every bottleneck adapter's nonlinearity replaced by the identity while SynFlow scores; restored on exit.

    Tanaka et al. 2020 (Section 6) score linear-ReLU networks with positive weights and a positive input, where
    every ReLU is active, i.e. the identity. Our adapters read LayerNorm outputs, which have negative entries
    even with positive parameters, so their ReLU would silence whole bottleneck units and give their weights a
    score of zero; replacing it by the identity restores the all-paths-active assumption inside the adapter.
    """

    def __init__(self, model: nn.Module):
        self.adapters = [m for m in model.modules() if isinstance(m, BottleneckAdapter)]

    def __enter__(self):
        self.acts = [a.act for a in self.adapters]
        for a in self.adapters:
            a.act = nn.Identity()

    def __exit__(self, *exc):
        for a, act in zip(self.adapters, self.acts, strict=True):
            a.act = act


@torch.no_grad()
def _signs(model: nn.Module) -> dict[str, torch.Tensor]:
    signs = {}
    for name, p in model.named_parameters():
        if p.is_floating_point():
            signs[name] = torch.sign(p)
            p.abs_()
    return signs


def synflow_scores(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    forward_fn: Callable[[nn.Module], torch.Tensor] = ones_forward,
) -> dict[str, torch.Tensor]:
    """One SynFlow scoring pass: ``|dR/dw * w|`` [out, in], float64, with every parameter ``p`` replaced by
    ``|p|``, the adapters' nonlinearity by the identity (:class:`_Linearised`) and
    ``R = forward_fn(model).sum()`` (Tanaka et al. 2020, Section 6: the synaptic-flow objective and
    Algorithm 1, one iteration). Data-free: it reads no training example.

    Runs in float64 (the product of all weights underflows in low precision) and restores the parameters'
    signs and dtype afterwards, exactly (``|p| * sign(p) = p``).
    """
    dtype = next(model.parameters()).dtype
    model.double()
    signs = _signs(model)
    try:
        with _Scoring(model, modules) as leaves, _Linearised(model):
            params = list(leaves.values())
            r = forward_fn(model).sum()
            grads = torch.autograd.grad(r, params, allow_unused=True)
        eff = _effective(modules)
        scores = {
            n: (torch.zeros_like(eff[n]) if g is None else (g * eff[n]).abs())
            for n, g in zip(modules, grads, strict=True)
        }
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in signs:
                    p.mul_(signs[name])
        model.to(dtype)
    return scores


def synflow_masks(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    sparsity: float,
    iterations: int = 100,
    forward_fn: Callable[[nn.Module], torch.Tensor] = ones_forward,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict]:
    """Iterative SynFlow (Tanaka et al. 2020, Algorithm 1): ``iterations`` rounds of scoring and pruning to
    density ``(1 - sparsity) ** (k / iterations)``; installs each round's masks. Returns the last round's
    ``global_masks`` output (weights pruned earlier score ``-inf`` and stay pruned) with ``zero_score_tensors``
    of the first round (:func:`zero_score_tensors`)."""
    density = 1.0 - sparsity
    masks, info = None, None
    for k in range(1, iterations + 1):
        scores = synflow_scores(model, modules, forward_fn)
        if k == 1:
            zero = zero_score_tensors(scores, "synflow")
        scores = {n: s.masked_fill(mask_of(modules[n]) == 0, -torch.inf) for n, s in scores.items()}
        target = sparsity if k == iterations else 1.0 - density ** (k / iterations)
        masks, info = global_masks(scores, target, seed=seed + k)
        set_masks(modules, masks)
    return masks, {**info, "zero_score_tensors": len(zero)}


def prune(
    model: nn.Module,
    pruner: str,
    sparsity: float,
    *,
    batches: Iterable[Mapping] | None = None,
    loss_fn: LossFn = default_loss,
    seed: int = 0,
    iterations: int = 100,
    forward_fn: Callable[[nn.Module], torch.Tensor] = ones_forward,
    modules: Mapping[str, nn.Module] | None = None,
) -> dict:
    """Prune the adapters of ``model`` once, at initialisation, with one global threshold; install the masks.

    Args:
        model: a model with adapters (``add_adapters``), or any module when ``modules`` is given.
        pruner: ``random``, ``magnitude``, ``snip``, ``grasp`` or ``synflow`` (formulas: module docstring).
        sparsity: fraction of the adapter projection weights REMOVED, in [0, 1) (the upstream SparseAdapter
            CLI's ``--sparsity`` was the fraction kept). 0 installs all-ones masks.
        batches: collated training batches (SparseAdapter: ~320 examples) for ``snip`` / ``grasp``; each a
            mapping ``loss_fn`` accepts (default: transformers keyword arguments with ``labels``).
        loss_fn: ``(model, batch) -> mean loss`` (scalar).
        seed: the random scores and the tie-breaking.
        iterations: SynFlow's number of prune-rescore rounds (>= 1; Tanaka et al. used 100).
        forward_fn: SynFlow's all-ones forward, ``model -> output tensor``.
        modules: name -> Linear to prune (default: :func:`moelab.adapters.modules.adapter_linears`).

    Returns:
        ``{"pruner", "sparsity", "total", "kept", "threshold", "tied_at_threshold", "zero_score_tensors",
        "per_tensor"}``: counts of projection weights (biases are never pruned), the lowest kept score, how
        many tensors scored zero everywhere (pruned at random; warned), and each tensor's density.

    Raises:
        ConfigError (a ValueError): unknown ``pruner``, ``sparsity`` outside [0, 1), ``iterations`` < 1;
            names the parameter. ValueError: no adapter weights, weights pruned already (prune once), no
            batches for a data pruner, a NaN score.
    """
    check_choice(pruner, PRUNERS, "pruner")
    sparsity = check_sparsity(sparsity)
    check_positive_int(iterations, "iterations")
    modules = dict(adapter_linears(model) if modules is None else modules)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no adapter weights to prune: call add_adapters first")
    pruned = [n for n, m in modules.items() if is_masked(m) and not bool(mask_of(m).all())]
    if pruned:
        raise ValueError(
            f"{pruned[0]} is pruned already: prune once, at initialisation (a second pass would rank the "
            "zeroed weights and could keep them); add fresh adapters to prune again"
        )
    attach_masks(modules)
    batches = None if batches is None else list(batches)
    if pruner in DATA_PRUNERS and not batches:
        raise ValueError(f"pruner={pruner!r} needs training batches (batches=...)")
    if pruner == "synflow":
        masks, info = synflow_masks(model, modules, sparsity, iterations, forward_fn, seed)
    else:
        if pruner == "random":
            scores = random_scores(modules, seed)
        elif pruner == "magnitude":
            scores = magnitude_scores(modules)
        elif pruner == "snip":
            scores = snip_scores(model, modules, batches, loss_fn)
        else:
            scores = grasp_scores(model, modules, batches, loss_fn)
        masks, info = global_masks(scores, sparsity, seed=seed)
        info["zero_score_tensors"] = len(zero_score_tensors(scores, pruner))
        set_masks(modules, masks)
    per = {n: float(m.float().mean()) for n, m in masks.items()}
    return {"pruner": pruner, "sparsity": sparsity, **info, "per_tensor": per}
