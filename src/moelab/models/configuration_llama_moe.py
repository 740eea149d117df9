"""Configuration of the LLaMA-MoE model family: a LLaMA decoder whose FFNs are Mixture-of-Experts layers.

Every MoE field is documented below. Fields that hold one value per decoder layer are listed in
`PER_LAYER_FIELDS`, so that dropping decoder layers (compression stage) only needs slicing those lists.
"""

from transformers import LlamaConfig

from .experts import MOE_IMPLEMENTATIONS

ROUTER_TYPES = ("noisy_topk", "softmax_topk", "switch_top1")
GATE_NETWORKS = ("mlp", "linear")

# Config fields that are lists indexed by decoder layer (None means "same default for every layer").
PER_LAYER_FIELDS = ("expert_sizes",)


class LlamaMoEConfig(LlamaConfig):
    """`LlamaConfig` plus the Mixture-of-Experts fields of LLaMA-MoE (arXiv 2406.16554, sec. 2).

    MoE fields:
        num_experts: number of routed experts N per MoE layer.
        top_k: experts activated per token (k; `num_selects` upstream), 1 <= top_k <= num_experts.
        expert_sizes: per layer, per expert, the number of FFN neurons of that expert; a list of
            `num_hidden_layers` lists of `num_experts` positive ints. None means
            `intermediate_size // num_experts` for every expert of every layer.
        router_type: "noisy_topk" (Shazeer et al. 2017, LLaMA-MoE), "softmax_topk"
            (softmax -> top-k -> renormalise, Mixtral / LLaMA-MoE v2) or "switch_top1" (Switch Transformer:
            top-1 with capacity factor and token dropping; needs top_k = 1).
        gate_network: "mlp" = Linear(h, N) -> tanh -> Linear(N, N) (LLaMA-MoE upstream default)
            or "linear" = Linear(h, N).
        balance_loss_weight: w in loss = LM loss + w * sum over MoE layers of the balance loss.
        score_scale_factor: s in y = s * sum_{i in top-k} g_i E_i(x); None means num_experts / top_k
            (LLaMA-MoE sec. 2.2, so a converted model starts close to the dense one).
        capacity_factor: Switch router only; each expert processes at most
            ceil(capacity_factor * tokens / num_experts) tokens per forward, the rest are dropped.
        noise_epsilon: floor added to the noise std of the noisy router, std = softplus(W_noise x) + eps.
        moe_implementation: expert compute, "auto" | "eager" | "fused" | "grouped_mm" (see
            moelab.models.experts); changes speed only, never results beyond float rounding.

    Raises:
        ValueError: naming the offending field when a value is out of range or inconsistent.
    """

    model_type = "llama_moe"

    num_experts: int = 8
    top_k: int = 2
    expert_sizes: list | None = None
    router_type: str = "noisy_topk"
    gate_network: str = "mlp"
    balance_loss_weight: float = 1e-2
    score_scale_factor: float | None = None
    noise_epsilon: float = 1e-2
    capacity_factor: float = 1.25
    moe_implementation: str = "auto"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_moe()

    def validate_moe(self) -> None:
        """Check the MoE fields; raise ValueError naming the offending field."""
        n, k = self.num_experts, self.top_k
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_experts must be a positive int, got {n!r}")
        if not isinstance(k, int) or not 1 <= k <= n:
            raise ValueError(f"top_k must be an int in [1, num_experts={n}], got {k!r}")
        if self.router_type not in ROUTER_TYPES:
            raise ValueError(f"router_type must be one of {ROUTER_TYPES}, got {self.router_type!r}")
        if self.router_type == "switch_top1" and k != 1:
            raise ValueError(
                f"router_type 'switch_top1' routes each token to one expert; set top_k=1, got {k}"
            )
        if self.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")
        if self.gate_network not in GATE_NETWORKS:
            raise ValueError(f"gate_network must be one of {GATE_NETWORKS}, got {self.gate_network!r}")
        if self.balance_loss_weight < 0:
            raise ValueError(f"balance_loss_weight must be >= 0, got {self.balance_loss_weight}")
        if self.score_scale_factor is not None and self.score_scale_factor <= 0:
            raise ValueError(f"score_scale_factor must be > 0 or None, got {self.score_scale_factor}")
        if self.moe_implementation not in MOE_IMPLEMENTATIONS:
            raise ValueError(
                f"moe_implementation must be one of {MOE_IMPLEMENTATIONS}, got {self.moe_implementation!r}"
            )
        if self.noise_epsilon < 0:
            raise ValueError(f"noise_epsilon must be >= 0, got {self.noise_epsilon}")
        if self.expert_sizes is None:
            if self.intermediate_size % n != 0:
                raise ValueError(
                    f"expert_sizes is None but intermediate_size={self.intermediate_size} is not divisible "
                    f"by num_experts={n}; give expert_sizes explicitly"
                )
            return
        sizes = self.expert_sizes
        if not isinstance(sizes, list) or len(sizes) != self.num_hidden_layers:
            raise ValueError(
                f"expert_sizes must be a list of num_hidden_layers={self.num_hidden_layers} lists, "
                f"got {type(sizes).__name__} of length {len(sizes) if hasattr(sizes, '__len__') else '?'}"
            )
        for layer, row in enumerate(sizes):
            if not isinstance(row, list | tuple) or len(row) != n:
                raise ValueError(f"expert_sizes[{layer}] must list num_experts={n} sizes, got {row!r}")
            if any(not isinstance(s, int) or s < 1 for s in row):
                raise ValueError(f"expert_sizes[{layer}] must hold positive ints, got {row!r}")

    def layer_expert_sizes(self, layer_idx: int) -> list[int]:
        """Expert widths (neurons per expert) of decoder layer `layer_idx`."""
        if self.expert_sizes is None:
            return [self.intermediate_size // self.num_experts] * self.num_experts
        return [int(s) for s in self.expert_sizes[layer_idx]]

    @property
    def resolved_score_scale_factor(self) -> float:
        """The output scale s: `score_scale_factor`, or num_experts / top_k when it is None."""
        if self.score_scale_factor is None:
            return self.num_experts / self.top_k
        return float(self.score_scale_factor)


__all__ = ["LlamaMoEConfig", "PER_LAYER_FIELDS", "ROUTER_TYPES", "GATE_NETWORKS"]
