"""Sharing-Inner and Sharing-Inter (residual) expert construction from per-cluster neuron importance.

LLaMA-MoE (arXiv 2406.16554, sec. 3.1, methods 3-4) and LLaMA-MoE v2 (arXiv 2411.15708, "gradient split"):
importance[c, l, j] = mean |h_j dL/dh_j| of neuron j of layer l on data cluster c (`moelab.construct.importance`).
- Sharing-Inner: expert c = the top-|S| neurons of cluster c. Experts may overlap and some neurons may
  belong to no expert (documented: not an exact cover).
- Sharing-Inter (residual): neurons in the top sets of the most clusters become the always-on shared
  expert(s); every other neuron goes to exactly one routed expert (an exact cover).
"""

from __future__ import annotations

import numpy as np
import torch

from .partition import split_sizes


def _check_importance(importance: torch.Tensor) -> tuple[int, int, int]:
    if importance.dim() != 3:
        raise ValueError(
            f"importance must be [clusters, layers, neurons], got shape {tuple(importance.shape)}"
        )
    return tuple(importance.shape)


def _top(v: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest entries of v (ties -> smaller index first), as a sorted LongTensor."""
    order = torch.from_numpy(np.argsort(-v.double().numpy(), kind="stable"))
    return order[:k].sort().values


def sharing_inner_split(importance: torch.Tensor, expert_size: int | None = None) -> list[list[torch.Tensor]]:
    """Sharing-Inner: expert c of layer l = the `expert_size` most important neurons for cluster c.

    Args:
        importance: [C, L, I] per-cluster neuron importance; C = number of experts.
        expert_size: neurons per expert; None = I // C (the size of an equal split).
    Returns: partition[layer][expert], sorted, experts may overlap (see `partition_stats` "overlap").
    Raises: ValueError if expert_size is not in [1, I].
    Source: LLaMA-MoE sec. 3.1 "Sharing-Inner".
    """
    C, L, size = _check_importance(importance)
    s = size // C if expert_size is None else int(expert_size)
    if not 1 <= s <= size:
        raise ValueError(f"expert_size={s} must lie in [1, intermediate_size={size}]")
    return [[_top(importance[c, layer], s) for c in range(C)] for layer in range(L)]


def shared_counts(importance: torch.Tensor, top_size: int) -> torch.Tensor:
    """In how many clusters' top-`top_size` sets each neuron appears: [L, I] int64."""
    C, L, size = _check_importance(importance)
    counts = torch.zeros(L, size, dtype=torch.long)
    for layer in range(L):
        for c in range(C):
            counts[layer, _top(importance[c, layer], top_size)] += 1
    return counts


def balanced_assignment(scores: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Assign each of n items to one of C groups, group c receiving exactly sizes[c] items, maximising the
    total score (a linear assignment over expert slots, solved by scipy's `linear_sum_assignment`).

    Args:
        scores: [C, n] float, score of putting item j into group c; sum(sizes) == n.
    Returns: labels [n] int64.
    Raises: ValueError if sum(sizes) != n.
    """
    from scipy.optimize import linear_sum_assignment

    C, n = scores.shape
    if sum(sizes) != n:
        raise ValueError(f"group sizes {sizes} sum to {sum(sizes)}, not to the {n} items")
    slot_group = np.repeat(np.arange(C), sizes)  # [n] group of each slot
    cost = -scores.double().numpy()[slot_group].T  # [n items, n slots]
    rows, cols = linear_sum_assignment(cost)
    labels = np.empty(n, dtype=np.int64)
    labels[rows] = slot_group[cols]
    return torch.from_numpy(labels)


def sharing_inter_split(
    importance: torch.Tensor,
    num_shared_experts: int = 1,
    shared_size: int | None = None,
    shared_threshold: int | None = None,
    top_size: int | None = None,
    remainder: str = "spread",
) -> list[list[torch.Tensor]]:
    """Sharing-Inter (residual split): shared expert(s) from the most-shared neurons, the rest routed.

    Args:
        importance: [C, L, I]; C = routed experts.
        num_shared_experts: S >= 1 always-on experts; they are the first S sets of every layer.
        shared_size: total shared neurons per layer; None = S * I // (C + S) (every expert the same size,
            as LLaMA-MoE v2 "1+7top1"). Ignored when `shared_threshold` is given.
        shared_threshold: if given, the shared neurons of layer l are those in the top sets of at least this
            many clusters, so the shared (and routed) sizes differ per layer.
        top_size: size of each cluster's top set used for counting; None = I // C.
        remainder: how the routed (and shared) neurons are split when sizes do not divide (`split_sizes`).
    Shared neurons: ranked by (number of clusters whose top set holds them, summed normalised importance).
    Routed neurons: each to exactly one of the C experts, maximising the sum of its importance for that
        expert's cluster (normalised by the cluster's mean importance) under equal expert sizes
        (`balanced_assignment`).
    Returns: partition[layer] = S shared sets, then C routed sets; an exact cover of range(I) per layer.
    Raises: ValueError naming the numbers if the shared or routed neurons cannot fill their experts.
    Source: LLaMA-MoE sec. 3.1 "Sharing-Inter"; LLaMA-MoE v2 sec. 3 (residual / gradient split).
    """
    C, L, size = _check_importance(importance)
    S = int(num_shared_experts)
    if S < 1:
        raise ValueError(f"num_shared_experts={S} must be >= 1 for Sharing-Inter")
    top = size // C if top_size is None else int(top_size)
    counts = shared_counts(importance, top)
    norm = importance.double() / importance.double().mean(dim=2, keepdim=True).clamp(min=1e-30)  # [C, L, I]
    total = norm.sum(0)  # [L, I]
    partition = []
    for layer in range(L):
        if shared_threshold is not None:
            n_shared = int((counts[layer] >= int(shared_threshold)).sum())
        else:
            n_shared = S * size // (C + S) if shared_size is None else int(shared_size)
        if not S <= n_shared <= size - C:
            raise ValueError(
                f"layer {layer}: {n_shared} shared neurons cannot fill num_shared_experts={S} and leave "
                f"num_experts={C} routed experts non-empty (intermediate_size={size})"
            )
        key = counts[layer].double() * (total[layer].max() + 1) + total[layer]  # count first, then importance
        shared = _top(key, n_shared)
        mask = torch.ones(size, dtype=torch.bool)
        mask[shared] = False
        rest = torch.nonzero(mask).flatten()
        labels = balanced_assignment(
            norm[:, layer, rest], split_sizes(len(rest), C, remainder, what="routed neurons")
        )
        s_sizes = split_sizes(n_shared, S, remainder, what="shared neurons")
        bounds = np.cumsum([0, *s_sizes])
        shared_sets = [shared[bounds[i] : bounds[i + 1]] for i in range(S)]
        partition.append(shared_sets + [rest[labels == c] for c in range(C)])
    return partition
