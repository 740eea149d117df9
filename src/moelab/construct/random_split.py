"""Independent-Random expert construction (LLaMA-MoE, arXiv 2406.16554, sec. 3.1, method 1).

Each FFN's neuron indices are shuffled and cut into `num_experts` equal parts; expert e owns neurons S_e.
"""

import torch


def random_split(
    intermediate_size: int, num_experts: int, seed: int, num_layers: int
) -> list[list[torch.Tensor]]:
    """Partition the FFN neurons of every layer into `num_experts` equal random sets.

    Args:
        intermediate_size: FFN width I (neurons per layer).
        num_experts: N, must divide I.
        seed: RNG seed; the same seed gives the same partition on every machine (CPU generator).
        num_layers: number of decoder layers; layer l uses the generator state after layers 0..l-1.
    Returns:
        partition[layer][expert] = sorted LongTensor of I / N neuron indices; per layer the sets are an
        exact cover of range(I) (disjoint, union = everything).
    Raises:
        ValueError: if num_experts does not divide intermediate_size, or a size is not positive.
    Source: LLaMA-MoE sec. 3.1 "Independent-Random".
    """
    if intermediate_size < 1 or num_experts < 1 or num_layers < 1:
        raise ValueError(
            f"intermediate_size={intermediate_size}, num_experts={num_experts} and num_layers={num_layers} "
            "must all be positive"
        )
    if intermediate_size % num_experts != 0:
        raise ValueError(
            f"num_experts={num_experts} does not divide intermediate_size={intermediate_size} "
            f"(remainder {intermediate_size % num_experts}); random_split makes equal-sized experts"
        )
    size = intermediate_size // num_experts
    gen = torch.Generator().manual_seed(int(seed))
    partition = []
    for _ in range(num_layers):
        perm = torch.randperm(intermediate_size, generator=gen)
        partition.append([perm[e * size : (e + 1) * size].sort().values for e in range(num_experts)])
    return partition
