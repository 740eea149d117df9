"""Registry of neuron-partition (expert construction) methods, looked up by the name used in the config."""

from collections.abc import Callable

import torch

from .random_split import random_split

# name -> function(intermediate_size, num_experts, seed, num_layers, ...) -> partition[layer][expert]
CONSTRUCT_METHODS: dict[str, Callable[..., list[list[torch.Tensor]]]] = {"random": random_split}


def partition_for(method: str, **kwargs) -> list[list[torch.Tensor]]:
    """Run the construction method registered as `method` with keyword arguments `kwargs`.

    Example: partition_for("random", intermediate_size=1536, num_experts=8, seed=1227, num_layers=30).
    Raises: ValueError naming the unknown method and the valid ones.
    """
    if method not in CONSTRUCT_METHODS:
        raise ValueError(f"unknown construct method {method!r}; valid methods: {sorted(CONSTRUCT_METHODS)}")
    return CONSTRUCT_METHODS[method](**kwargs)
