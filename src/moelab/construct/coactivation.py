"""Co-activation graph partition (MoEfication, Zhang et al. 2022, arXiv 2110.01786, sec. 3.1).

Nodes are the FFN neurons of a layer; the weight of edge (i, j) is the number of calibration tokens on which
neurons i and j are active together. A balanced k-way partition of this graph by METIS (PyPI `pymetis`)
puts neurons that fire together into the same expert. LLaMA-MoE ships this method in its code, not its paper.

Deviations: (1) LLaMA's SwiGLU FFN has no ReLU; neuron j counts as active on a token when its gate
pre-activation is positive, gate_j(x) > 0, i.e. where SiLU behaves like ReLU. (2) Edge weights are rescaled to
integers in [0, 100] (METIS needs integer weights that do not overflow). (3) METIS allows a small imbalance;
a greedy pass then moves the neurons that lose the least co-activation until every expert has exactly its
size, so the result is an exact cover with the configured sizes.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .calibration import run_with_mlp_hooks
from .partition import split_sizes

EDGE_SCALE = 100


def coactivation_counts(
    model, blocks: torch.Tensor, batch_size: int = 8, progress: bool = True
) -> torch.Tensor:
    """Co-activation counts of every layer: C[l, i, j] = tokens with gate_i(x) > 0 and gate_j(x) > 0.

    Args:
        model: dense LlamaForCausalLM; blocks: calibration token ids [n, T].
    Returns: [L, I, I] float64 counts (symmetric; the diagonal holds each neuron's activation count).
    """
    num_layers, size = len(model.model.layers), model.config.intermediate_size
    counts = torch.zeros(num_layers, size, size, dtype=torch.float64)

    def hook(layer: int, gate: torch.Tensor) -> None:
        active = (gate > 0).float()  # [tokens, I]
        counts[layer] += (active.T @ active).double()

    run_with_mlp_hooks(
        model,
        blocks,
        hook,
        module="gate_proj",
        batch_size=batch_size,
        desc="co-activation",
        progress=progress,
    )
    return counts


def _rebalance(labels: np.ndarray, weights: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Move neurons between parts until part p has sizes[p] members, each move the one that keeps the most
    co-activation weight inside parts (greedy). weights: [I, I] symmetric, zero diagonal."""
    labels = labels.copy()
    parts = len(sizes)
    while True:
        counts = np.bincount(labels, minlength=parts)
        over = [p for p in range(parts) if counts[p] > sizes[p]]
        if not over:
            return labels
        under = [q for q in range(parts) if counts[q] < sizes[q]]
        p = over[0]
        members = np.flatnonzero(labels == p)
        link = weights[members] @ np.eye(parts)[labels]  # [m, parts] weight from each member to each part
        gain = link[:, under] - link[:, [p]]  # [m, |under|]
        j, q = np.unravel_index(np.argmax(gain), gain.shape)
        labels[members[j]] = under[q]


def metis_partition(counts: torch.Tensor, sizes: list[int], seed: int) -> np.ndarray:
    """Balanced partition of one layer's co-activation graph into len(sizes) parts of exactly those sizes.

    Args:
        counts: [I, I] co-activation counts (symmetric).
        sizes: target part sizes, summing to I.
        seed: METIS random seed.
    Returns: labels [I] int64 in [0, parts), part p of size sizes[p]; with equal sizes the parts are
        renumbered by their smallest member (independent of METIS's label order).
    """
    import pymetis

    w = counts.double().clone()
    w.fill_diagonal_(0)
    top = float(w.max()) if w.numel() else 0.0
    w = torch.round(w / top * EDGE_SCALE) if top > 0 else w
    wn = w.numpy().astype(np.int64)
    size = wn.shape[0]
    rows, cols = np.nonzero(wn)  # CSR order: row-major, so grouped by node
    xadj = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=size))]).tolist()
    adjncy, eweights = cols.tolist(), wn[rows, cols].tolist()
    parts = len(sizes)
    if parts == 1:
        return np.zeros(size, dtype=np.int64)
    opts = pymetis.Options(seed=int(seed), ufactor=1)
    tpwgts = [s / size for s in sizes]
    _, membership = pymetis.part_graph(
        parts, pymetis.CSRAdjacency(xadj, adjncy), eweights=eweights, tpwgts=tpwgts, options=opts
    )
    labels = _rebalance(np.asarray(membership, dtype=np.int64), wn.astype(np.float64), sizes)
    if len(set(sizes)) > 1:
        return labels  # part p must keep size sizes[p]
    first = [int(np.flatnonzero(labels == p).min()) for p in range(parts)]
    remap = np.empty(parts, dtype=np.int64)
    remap[np.argsort(first)] = np.arange(parts)
    return remap[labels]


def coactivation_split(
    model,
    calibration: torch.Tensor,
    num_experts: int,
    seed: int,
    remainder: str = "error",
    batch_size: int = 8,
    progress: bool = True,
) -> list[list[torch.Tensor]]:
    """MoEfication co-activation graph split of every layer's FFN.

    Args:
        model: dense LlamaForCausalLM.
        calibration: token blocks [n, T] (see `calibration_blocks`; the budget is n*T tokens).
        num_experts: N parts per layer.
        seed: METIS seed (layer l uses seed + l).
        remainder: see `split_sizes`.
    Returns: partition[layer][expert], an exact cover; expert sizes from `split_sizes(I, N, remainder)`.
    Raises: ValueError if I and N do not fit.
    Source: MoEfication sec. 3.1 (co-activation graph split); LLaMA-MoE code.
    """
    size = model.config.intermediate_size
    sizes = split_sizes(size, num_experts, remainder)
    counts = coactivation_counts(model, calibration, batch_size, progress)
    partition = []
    for layer in tqdm(range(counts.shape[0]), desc="metis", disable=not progress):
        labels = torch.from_numpy(metis_partition(counts[layer], sizes, seed + layer))
        partition.append([torch.nonzero(labels == e).flatten() for e in range(num_experts)])
    return partition
