"""Dense -> MoE construction: neuron partition methods, router initialisation and weight surgery."""

from .activated import moe_to_activated_dense
from .attention import attention_moe_from_dense
from .build import VARIANT_KEYS, Construction, construct_moe, construct_variant, router_options
from .calibration import mlp_inputs
from .clustering import balanced_kmeans, clustering_split
from .coactivation import coactivation_counts, coactivation_split
from .convert import dense_to_moe
from .importance import cluster_importance, neuron_importance
from .partition import (
    check_partition,
    is_exact_cover,
    load_partition,
    partition_stats,
    save_partition,
    split_sizes,
)
from .random_split import random_split
from .registry import (
    CONSTRUCT_METHODS,
    METHOD_INPUTS,
    OVERLAPPING_METHODS,
    SHARED_EXPERT_METHODS,
    partition_for,
)
from .router_init import ROUTER_INITS, init_router_, init_routers
from .sequential import sequential_split
from .sharing import balanced_assignment, sharing_inner_split, sharing_inter_split
from .text_clusters import cluster_blocks, embed_texts, kmeans_labels

__all__ = [
    "attention_moe_from_dense",
    "moe_to_activated_dense",
    "balanced_assignment",
    "balanced_kmeans",
    "check_partition",
    "cluster_blocks",
    "cluster_importance",
    "clustering_split",
    "coactivation_counts",
    "coactivation_split",
    "construct_moe",
    "construct_variant",
    "Construction",
    "CONSTRUCT_METHODS",
    "dense_to_moe",
    "embed_texts",
    "init_router_",
    "init_routers",
    "is_exact_cover",
    "kmeans_labels",
    "load_partition",
    "METHOD_INPUTS",
    "mlp_inputs",
    "neuron_importance",
    "OVERLAPPING_METHODS",
    "partition_for",
    "partition_stats",
    "random_split",
    "router_options",
    "ROUTER_INITS",
    "save_partition",
    "SHARED_EXPERT_METHODS",
    "sequential_split",
    "sharing_inner_split",
    "sharing_inter_split",
    "split_sizes",
    "VARIANT_KEYS",
]
