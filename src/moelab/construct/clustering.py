"""Independent-Clustering expert construction (LLaMA-MoE, arXiv 2406.16554, sec. 3.1, method 2).

The rows of each layer's up_proj (one per neuron) are L2-normalised and clustered by balanced k-means into
N clusters of equal size; expert e owns the neurons of cluster e, and gate_proj/down_proj reuse the labels.
The size-constrained assignment step is solved as a min-cost flow by the `k-means-constrained` package
(Bradley, Bennett & Demiriz 2000, "Constrained k-means clustering"), not by a home-made solver.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from .partition import split_sizes


def balanced_kmeans(
    x: torch.Tensor,
    num_clusters: int,
    seed: int,
    remainder: str = "error",
    n_init: int = 3,
    max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced k-means: every cluster gets n / num_clusters points (or floor/ceil with "spread").

    Args:
        x: [n, d] float points (any dtype; computed in float64).
        num_clusters: C.
        seed: random_state of the k-means++ initialisations (same seed -> same labels).
        remainder: "error" (C must divide n) or "spread" (sizes differ by at most one).
        n_init, max_iter: restarts (best inertia kept) and Lloyd iterations per restart.
    Returns: (labels [n] int64 in [0, C), centroids [C, d] float32). Clusters are renumbered by their
        smallest member index, so the output does not depend on the solver's label order.
    Raises: ValueError if n and C do not fit (see `split_sizes`).
    Source: Bradley et al. 2000 (size-constrained k-means as min-cost flow); package k-means-constrained.
    """
    from k_means_constrained import KMeansConstrained

    n = x.shape[0]
    sizes = split_sizes(n, num_clusters, remainder, what="number of points")
    km = KMeansConstrained(
        n_clusters=num_clusters,
        size_min=min(sizes),
        size_max=max(sizes),
        n_init=n_init,
        max_iter=max_iter,
        random_state=int(seed),
    )
    raw = km.fit_predict(x.detach().double().cpu().numpy())
    first = [int(np.flatnonzero(raw == c).min()) for c in range(num_clusters)]
    order = np.argsort(first)  # new label i = old label order[i]
    remap = np.empty(num_clusters, dtype=np.int64)
    remap[order] = np.arange(num_clusters)
    labels = torch.from_numpy(remap[raw])
    centroids = torch.from_numpy(km.cluster_centers_[order]).float()
    return labels, centroids


def labels_to_experts(labels: torch.Tensor, num_experts: int) -> list[torch.Tensor]:
    """Cluster labels [I] -> list of N sorted LongTensors of the neuron ids with that label."""
    return [torch.nonzero(labels == e).flatten() for e in range(num_experts)]


@torch.no_grad()
def clustering_split(
    model, num_experts: int, seed: int, remainder: str = "error", progress: bool = True
) -> list[list[torch.Tensor]]:
    """Independent-Clustering: balanced k-means on the L2-normalised up_proj rows of every layer.

    Args:
        model: a dense LlamaForCausalLM (reads model.model.layers[l].mlp.up_proj.weight, [I, H]).
        num_experts: N clusters = experts per layer.
        seed: k-means seed; layer l uses seed + l.
        remainder: see `split_sizes`.
    Returns: partition[layer][expert], an exact cover with equal sizes (I / N).
    Raises: ValueError if N does not divide I under remainder "error".
    Source: LLaMA-MoE sec. 3.1 "Independent-Clustering".
    """
    split_sizes(model.config.intermediate_size, num_experts, remainder)  # names I and N if they do not fit
    partition = []
    layers = model.model.layers
    for layer_idx, layer in enumerate(tqdm(layers, desc="clustering", disable=not progress)):
        rows = torch.nn.functional.normalize(layer.mlp.up_proj.weight.float(), dim=1)  # [I, H]
        labels, _ = balanced_kmeans(rows, num_experts, seed + layer_idx, remainder)
        partition.append(labels_to_experts(labels, num_experts))
    return partition
