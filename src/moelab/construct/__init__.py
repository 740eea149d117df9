"""Dense -> MoE construction: neuron partition methods and weight surgery."""

from .convert import dense_to_moe, init_router_
from .random_split import random_split
from .registry import CONSTRUCT_METHODS, partition_for

__all__ = ["CONSTRUCT_METHODS", "dense_to_moe", "init_router_", "partition_for", "random_split"]
