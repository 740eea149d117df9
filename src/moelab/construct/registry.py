"""Registry of neuron-partition (expert construction) methods, looked up by the name used in the config.

Every method returns partition[layer][expert] = sorted LongTensor of neuron ids. Methods differ in what they
read (`METHOD_INPUTS`): nothing but sizes, the dense weights ("model"), calibration token blocks
("calibration"), or per-data-cluster neuron importance ("importance", [C, L, I]).
"""

import inspect
from collections.abc import Callable

import torch

from .clustering import clustering_split
from .coactivation import coactivation_split
from .random_split import random_split
from .sequential import sequential_split
from .sharing import sharing_inner_split, sharing_inter_split

# name -> function(...) -> partition[layer][expert]
CONSTRUCT_METHODS: dict[str, Callable[..., list[list[torch.Tensor]]]] = {
    "random": random_split,
    "sequential": sequential_split,
    "clustering": clustering_split,
    "coactivation": coactivation_split,
    "sharing_inner": sharing_inner_split,
    "sharing_inter": sharing_inter_split,
}
# what each method reads besides sizes and seed
METHOD_INPUTS: dict[str, tuple[str, ...]] = {
    "random": (),
    "sequential": (),
    "clustering": ("model",),
    "coactivation": ("model", "calibration"),
    "sharing_inner": ("importance",),
    "sharing_inter": ("importance",),
}
# methods whose partition is not an exact cover (experts overlap, some neurons unused)
OVERLAPPING_METHODS = ("sharing_inner",)
# methods whose first sets are always-on shared experts
SHARED_EXPERT_METHODS = ("sharing_inter",)


def partition_for(method: str, **kwargs) -> list[list[torch.Tensor]]:
    """Run the construction method registered as `method`, passing it the keyword arguments it accepts.

    Example: partition_for("random", intermediate_size=1536, num_experts=8, seed=1227, num_layers=30).
    Arguments the method does not take are ignored, so a caller may pass everything it has (model,
    calibration, importance, remainder, ...).
    Raises: ValueError naming the unknown method and the valid ones, or the missing required arguments.
    """
    if method not in CONSTRUCT_METHODS:
        raise ValueError(f"unknown construct method {method!r}; valid methods: {sorted(CONSTRUCT_METHODS)}")
    fn = CONSTRUCT_METHODS[method]
    params = inspect.signature(fn).parameters
    missing = [
        name
        for name, p in params.items()
        if p.default is inspect.Parameter.empty and name not in kwargs and p.kind != p.VAR_KEYWORD
    ]
    if missing:
        raise ValueError(f"construct method {method!r} needs argument(s) {missing}")
    return fn(**{k: v for k, v in kwargs.items() if k in params})
