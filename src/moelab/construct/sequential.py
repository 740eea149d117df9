"""Sequential (contiguous) expert construction (LLaMA-MoE v2, arXiv 2411.15708, sec. 3 "vanilla split").

Expert e of every layer owns the contiguous block of neurons [offset_e, offset_e + size_e): Llama-3-8B's
14336 neurons become 8 experts of 1792. No randomness.
"""

import torch

from .partition import split_sizes


def sequential_split(
    intermediate_size: int, num_experts: int, num_layers: int, remainder: str = "error"
) -> list[list[torch.Tensor]]:
    """Cut every layer's neuron axis into `num_experts` contiguous blocks.

    Args:
        intermediate_size: FFN width I.
        num_experts: N.
        num_layers: decoder layers L (every layer gets the same blocks).
        remainder: "error" (N must divide I) or "spread" (first I mod N experts one neuron larger).
    Returns: partition[layer][expert] = arange(offset_e, offset_e + size_e); an exact cover per layer.
    Raises: ValueError naming I and N when they do not fit (see `split_sizes`), or num_layers < 1.
    Source: LLaMA-MoE v2 sec. 3 (MLP MoE, vanilla construction).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be positive")
    sizes = split_sizes(intermediate_size, num_experts, remainder)
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    layer = [torch.arange(bounds[e], bounds[e + 1]) for e in range(num_experts)]
    return [[idx.clone() for idx in layer] for _ in range(num_layers)]
