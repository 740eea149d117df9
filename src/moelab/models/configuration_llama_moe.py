"""Configuration of the LLaMA-MoE model family: a LLaMA decoder whose FFNs are Mixture-of-Experts layers.

Every MoE field is documented below. Fields that hold one value per decoder layer are listed in
`PER_LAYER_FIELDS`, so that dropping decoder layers (compression stage) only needs slicing those lists.
"""

from transformers import LlamaConfig

from .experts import MOE_IMPLEMENTATIONS

ROUTER_TYPES = ("noisy_topk", "softmax_topk", "switch_top1", "uniform", "random")
GATE_NETWORKS = ("mlp", "linear")
MLP_LAYER_TYPES = ("moe", "dense", "none")

# Decoder fields every LLaMA-family config shares (LLaMA, LLaMA-MoE, upstream LLaMA-MoE v1, Mixtral): what the
# checkpoint-format converters (export_mixtral, import_llama_moe_v1) copy as they are.
DECODER_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "tie_word_embeddings",
)

# Config fields that are lists indexed by decoder layer (None means "same default for every layer"; the scale
# fields may also be one float for all layers). Dropping decoder layers = slicing every such list.
PER_LAYER_FIELDS = (
    "expert_sizes",
    "num_experts_per_layer",
    "mlp_layer_types",
    "score_scale_factor",
    "num_shared_experts",
    "shared_expert_sizes",
    "shared_expert_scale",
    "gate_hidden_sizes",
)


class LlamaMoEConfig(LlamaConfig):
    """`LlamaConfig` plus the Mixture-of-Experts fields of LLaMA-MoE (arXiv 2406.16554, sec. 2).

    MoE fields (MLP MoE):
        num_experts: number of routed experts N per MoE layer (the default of `num_experts_per_layer`).
        top_k: experts activated per token (k; `num_selects` upstream), 1 <= top_k <= every layer's N.
        num_experts_per_layer: None, or a list of `num_hidden_layers` ints: routed experts of each layer
            (entries of dense layers are ignored).
        expert_sizes: per layer, per expert, the number of FFN neurons of that expert; a list of
            `num_hidden_layers` lists of N_l positive ints. None means `intermediate_size // N` for every
            expert of every layer.
        mlp_layer_types: None (all "moe"), or a list of `num_hidden_layers` entries "moe" | "dense" | "none"; a
            dense layer keeps the plain LLaMA SwiGLU FFN of width `intermediate_size` (LLaMA-MoE v2: first/last
            layers dense). `dense_layer_types(num_layers, dense_layers)` builds it from layer indices. "none" = the
            FFN and its pre-FFN norm were removed (Layer Drop, moelab.compress.layer_drop): the layer is attention
            only.
        num_shared_experts: always-on shared (residual) experts per layer, int or per-layer list (0 = none).
            They run on every token, outside the router (LLaMA-MoE v2 "1+7top1"; Qwen2-MoE shared expert).
            Several shared experts with one scale are one SwiGLU FFN whose width is the sum of their sizes,
            and are stored as such (`mlp.shared_experts`).
        shared_expert_sizes: None, or per layer a list of that layer's num_shared_experts widths.
            None means `intermediate_size // num_experts` per shared expert.
        shared_expert_scale: s_sh, float or per-layer list; the MoE output is
            s * sum_{i in top-k} g_i E_i(x) + s_sh * E_shared(x). LLaMA-MoE v2 leaves the shared expert unscaled.
        router_type: "noisy_topk" (Shazeer et al. 2017, LLaMA-MoE), "softmax_topk"
            (softmax -> top-k -> renormalise, Mixtral / LLaMA-MoE v2), "switch_top1" (Switch Transformer:
            top-1 with capacity factor and token dropping; needs top_k = 1), or the untrained ablation routers
            "uniform" (random expert choice, equal weights 1/k) and "random" (frozen random gate, softmax
            weights), see `moelab.models.routers.FrozenRandomRouter`.
        router_seed: seed of the frozen projection of the "uniform" / "random" routers (layer l uses seed + l).
        gate_network: "mlp" = Linear(h, N) -> tanh -> Linear(N, N) (LLaMA-MoE upstream default)
            or "linear" = Linear(h, N).
        gate_hidden_sizes: None, or per layer the hidden width of the "mlp" gate network (None entries = N_l):
            Linear(h, W) -> tanh -> Linear(W, N_l). Expert Drop sets it so the gate keeps its parent width W when
            routed experts are removed (moelab.compress.expert_drop).
        balance_loss_weight: w in loss = LM loss + w * sum over MoE layers of the balance loss.
        score_scale_factor: s in y = s * sum_{i in top-k} g_i E_i(x); a float, a per-layer list, or None =
            N_l / top_k (LLaMA-MoE sec. 2.2, so a converted model starts close to the dense one).
        capacity_factor: Switch router only; each expert processes at most
            ceil(capacity_factor * tokens / num_experts) tokens per forward, the rest are dropped.
        noise_epsilon: floor added to the noise std of the noisy router, std = softplus(W_noise x) + eps.
        moe_implementation: expert compute, "auto" | "eager" | "fused" | "grouped_mm" (see
            moelab.models.experts); changes speed only, never results beyond float rounding.

    Attention MoE fields (LLaMA-MoE v2, arXiv 2411.15708, sec. 2; see moelab.models.attention_moe):
        attention_moe: False, or True to split every layer's attention into experts (one per KV group, or
            `attention_expert_split` per group), routed per token.
        attention_expert_split: query-head groups per KV group (1 = expert is a whole GQA group); must divide
            num_attention_heads / num_key_value_heads. Attention experts E_a = num_key_value_heads * split.
        attention_top_k: attention experts per token, 1 <= attention_top_k <= E_a.
        attention_score_scale_factor: output scale of the attention experts; None means E_a / attention_top_k.

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
    score_scale_factor: float | list | None = None
    noise_epsilon: float = 1e-2
    capacity_factor: float = 1.25
    moe_implementation: str = "auto"
    num_experts_per_layer: list | None = None
    mlp_layer_types: list | None = None
    num_shared_experts: int | list = 0
    shared_expert_sizes: list | None = None
    shared_expert_scale: float | list = 1.0
    router_seed: int = 0
    gate_hidden_sizes: list | None = None
    attention_moe: bool = False
    attention_expert_split: int = 1
    attention_top_k: int = 2
    attention_score_scale_factor: float | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.validate_moe()

    # ---- per-layer accessors ----------------------------------------------------------------------------

    def _per_layer(self, name: str, layer_idx: int):
        """Value of field `name` for decoder layer `layer_idx` (the field is a scalar or a per-layer list)."""
        value = getattr(self, name)
        return value[layer_idx] if isinstance(value, list | tuple) else value

    def is_moe_layer(self, layer_idx: int) -> bool:
        """True if decoder layer `layer_idx` has an MoE FFN, False if it keeps the dense SwiGLU FFN."""
        return self.mlp_layer_types is None or self.mlp_layer_types[layer_idx] == "moe"

    def layer_mlp_type(self, layer_idx: int) -> str:
        """FFN kind of decoder layer `layer_idx`: "moe", "dense" or "none" (FFN removed by Layer Drop)."""
        return "moe" if self.mlp_layer_types is None else self.mlp_layer_types[layer_idx]

    @property
    def dense_layer_indices(self) -> list[int]:
        """Decoder layers that keep the dense SwiGLU FFN."""
        return [i for i in range(self.num_hidden_layers) if self.layer_mlp_type(i) == "dense"]

    @property
    def moe_layer_indices(self) -> list[int]:
        """Decoder layers with an MoE FFN, in order: entry j of the per-MoE-layer outputs (router_logits,
        gate_load, gate_importance) belongs to decoder layer moe_layer_indices[j]."""
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    def layer_num_experts(self, layer_idx: int) -> int:
        """Routed experts N_l of decoder layer `layer_idx`."""
        if self.num_experts_per_layer is None:
            return self.num_experts
        return int(self.num_experts_per_layer[layer_idx])

    def layer_expert_sizes(self, layer_idx: int) -> list[int]:
        """Expert widths (neurons per expert) of decoder layer `layer_idx`."""
        if self.expert_sizes is None:
            n = self.layer_num_experts(layer_idx)
            return [self.intermediate_size // n] * n
        return [int(s) for s in self.expert_sizes[layer_idx]]

    def layer_gate_hidden_size(self, layer_idx: int) -> int:
        """Hidden width of the "mlp" gate network of layer `layer_idx` (`gate_hidden_sizes`, None -> N_l)."""
        w = None if self.gate_hidden_sizes is None else self.gate_hidden_sizes[layer_idx]
        return self.layer_num_experts(layer_idx) if w is None else int(w)

    def layer_shared_expert_sizes(self, layer_idx: int) -> list[int]:
        """Widths of the shared experts of decoder layer `layer_idx` ([] when it has none)."""
        n = int(self._per_layer("num_shared_experts", layer_idx))
        if n == 0:
            return []
        if self.shared_expert_sizes is None:
            return [self.intermediate_size // self.num_experts] * n
        return [int(s) for s in self.shared_expert_sizes[layer_idx]]

    def layer_score_scale_factor(self, layer_idx: int) -> float:
        """Output scale s of the routed experts of layer `layer_idx` (None -> N_l / top_k)."""
        s = self._per_layer("score_scale_factor", layer_idx)
        return self.layer_num_experts(layer_idx) / self.top_k if s is None else float(s)

    def layer_shared_expert_scale(self, layer_idx: int) -> float:
        """Output scale of the shared experts of layer `layer_idx`."""
        return float(self._per_layer("shared_expert_scale", layer_idx))

    @property
    def resolved_score_scale_factor(self) -> float:
        """The output scale s: `score_scale_factor`, or num_experts / top_k when it is None.

        Raises: ValueError if score_scale_factor is a per-layer list (use `layer_score_scale_factor`).
        """
        if isinstance(self.score_scale_factor, list | tuple):
            raise ValueError(
                "score_scale_factor is a per-layer list; use layer_score_scale_factor(layer_idx)"
            )
        if self.score_scale_factor is None:
            return self.num_experts / self.top_k
        return float(self.score_scale_factor)

    @property
    def num_attention_experts(self) -> int:
        """Attention experts per layer: num_key_value_heads * attention_expert_split."""
        return self.num_key_value_heads * self.attention_expert_split

    @property
    def resolved_attention_score_scale_factor(self) -> float:
        """Output scale of the attention experts (None -> num_attention_experts / attention_top_k)."""
        if self.attention_score_scale_factor is None:
            return self.num_attention_experts / self.attention_top_k
        return float(self.attention_score_scale_factor)

    # ---- validation -------------------------------------------------------------------------------------

    def _check_per_layer_list(self, name: str) -> list | None:
        """Return field `name` if it is a list of num_hidden_layers entries, None if it is a scalar/None."""
        value = getattr(self, name)
        if not isinstance(value, list | tuple):
            return None
        if len(value) != self.num_hidden_layers:
            raise ValueError(
                f"{name} must be a scalar or a list of num_hidden_layers={self.num_hidden_layers} entries, "
                f"got {len(value)} entries"
            )
        return list(value)

    def validate_moe(self) -> None:
        """Check the MoE fields; raise ValueError naming the offending field."""
        L, n, k = self.num_hidden_layers, self.num_experts, self.top_k
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"num_experts must be a positive int, got {n!r}")
        if self.router_type not in ROUTER_TYPES:
            raise ValueError(f"router_type must be one of {ROUTER_TYPES}, got {self.router_type!r}")
        if self.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be > 0, got {self.capacity_factor}")
        if self.gate_network not in GATE_NETWORKS:
            raise ValueError(f"gate_network must be one of {GATE_NETWORKS}, got {self.gate_network!r}")
        if self.balance_loss_weight < 0:
            raise ValueError(f"balance_loss_weight must be >= 0, got {self.balance_loss_weight}")
        if self.moe_implementation not in MOE_IMPLEMENTATIONS:
            raise ValueError(
                f"moe_implementation must be one of {MOE_IMPLEMENTATIONS}, got {self.moe_implementation!r}"
            )
        if self.noise_epsilon < 0:
            raise ValueError(f"noise_epsilon must be >= 0, got {self.noise_epsilon}")

        types = self._check_per_layer_list("mlp_layer_types")
        if types is not None and any(t not in MLP_LAYER_TYPES for t in types):
            raise ValueError(f"mlp_layer_types entries must be one of {MLP_LAYER_TYPES}, got {types!r}")
        if self.mlp_layer_types is not None and types is None:
            raise ValueError(f"mlp_layer_types must be None or a list, got {self.mlp_layer_types!r}")
        moe_layers = self.moe_layer_indices

        counts = self._check_per_layer_list("num_experts_per_layer")
        if self.num_experts_per_layer is not None and counts is None:
            raise ValueError(
                f"num_experts_per_layer must be None or a list, got {self.num_experts_per_layer!r}"
            )
        if counts is not None and any(not isinstance(c, int) or c < 1 for c in counts):
            raise ValueError(f"num_experts_per_layer must hold positive ints, got {counts!r}")
        smallest = min((self.layer_num_experts(i) for i in moe_layers), default=n)
        if not isinstance(k, int) or not 1 <= k <= smallest:
            raise ValueError(f"top_k must be an int in [1, num_experts={smallest}], got {k!r}")
        if self.router_type == "switch_top1" and k != 1:
            raise ValueError(
                f"router_type 'switch_top1' routes each token to one expert; set top_k=1, got {k}"
            )

        widths = self._check_per_layer_list("gate_hidden_sizes")
        if self.gate_hidden_sizes is not None and (
            widths is None or any(w is not None and (not isinstance(w, int) or w < 1) for w in widths)
        ):
            raise ValueError(
                f"gate_hidden_sizes must be None or a per-layer list of positive ints / None, got "
                f"{self.gate_hidden_sizes!r}"
            )

        scales = self._check_per_layer_list("score_scale_factor")
        for s in scales if scales is not None else [self.score_scale_factor]:
            if s is not None and (not isinstance(s, int | float) or s <= 0):
                raise ValueError(f"score_scale_factor must be > 0 or None (per layer), got {s!r}")
        shared_scales = self._check_per_layer_list("shared_expert_scale")
        for s in shared_scales if shared_scales is not None else [self.shared_expert_scale]:
            if not isinstance(s, int | float) or s < 0:
                raise ValueError(f"shared_expert_scale must be a float >= 0 (per layer), got {s!r}")

        if self.expert_sizes is None:
            for i in moe_layers:
                if self.intermediate_size % self.layer_num_experts(i) != 0:
                    raise ValueError(
                        f"expert_sizes is None but intermediate_size={self.intermediate_size} is not "
                        f"divisible by num_experts={self.layer_num_experts(i)} (layer {i}); give expert_sizes"
                    )
        else:
            sizes = self.expert_sizes
            if not isinstance(sizes, list) or len(sizes) != L:
                raise ValueError(
                    f"expert_sizes must be a list of num_hidden_layers={L} lists, got {type(sizes).__name__}"
                    f" of length {len(sizes) if hasattr(sizes, '__len__') else '?'}"
                )
            for layer in moe_layers:
                row, n_l = sizes[layer], self.layer_num_experts(layer)
                if not isinstance(row, list | tuple) or len(row) != n_l:
                    raise ValueError(f"expert_sizes[{layer}] must list num_experts={n_l} sizes, got {row!r}")
                if any(not isinstance(s, int) or s < 1 for s in row):
                    raise ValueError(f"expert_sizes[{layer}] must hold positive ints, got {row!r}")

        shared = self._check_per_layer_list("num_shared_experts")
        for c in shared if shared is not None else [self.num_shared_experts]:
            if not isinstance(c, int) or c < 0:
                raise ValueError(f"num_shared_experts must be an int >= 0 (per layer), got {c!r}")
        if self.shared_expert_sizes is None:
            if any(self._per_layer("num_shared_experts", i) for i in moe_layers) and (
                self.intermediate_size % n != 0
            ):
                raise ValueError(
                    f"shared_expert_sizes is None but intermediate_size={self.intermediate_size} is not "
                    f"divisible by num_experts={n}; give shared_expert_sizes explicitly"
                )
        else:
            rows = self._check_per_layer_list("shared_expert_sizes")
            if rows is None:
                raise ValueError(f"shared_expert_sizes must be None or a per-layer list, got {rows!r}")
            for layer in moe_layers:
                c = int(self._per_layer("num_shared_experts", layer))
                row = rows[layer]
                if (
                    not isinstance(row, list | tuple)
                    or len(row) != c
                    or any(not isinstance(s, int) or s < 1 for s in row)
                ):
                    raise ValueError(
                        f"shared_expert_sizes[{layer}] must list num_shared_experts={c} positive ints, got {row!r}"
                    )

        if not isinstance(self.attention_moe, bool):
            raise ValueError(f"attention_moe must be a bool, got {self.attention_moe!r}")
        if self.attention_moe:
            kv, heads, split = self.num_key_value_heads, self.num_attention_heads, self.attention_expert_split
            if not isinstance(split, int) or split < 1 or (heads // kv) % split != 0:
                raise ValueError(
                    f"attention_expert_split must be a positive int dividing num_attention_heads / "
                    f"num_key_value_heads = {heads // kv}, got {split!r}"
                )
            e_a = self.num_attention_experts
            if not isinstance(self.attention_top_k, int) or not 1 <= self.attention_top_k <= e_a:
                raise ValueError(
                    f"attention_top_k must be an int in [1, {e_a}], got {self.attention_top_k!r}"
                )
            s = self.attention_score_scale_factor
            if s is not None and s <= 0:
                raise ValueError(f"attention_score_scale_factor must be > 0 or None, got {s!r}")


def dense_layer_types(num_layers: int, dense_layers) -> list[str]:
    """`mlp_layer_types` for a model whose layers `dense_layers` (indices, negative allowed) keep a dense FFN.

    Example: dense_layer_types(30, [0, -1]) -> ["dense", "moe", ..., "moe", "dense"].
    Raises: ValueError naming an index outside [-num_layers, num_layers).
    """
    types = ["moe"] * num_layers
    for i in dense_layers:
        if not -num_layers <= int(i) < num_layers:
            raise ValueError(f"dense_layers index {i} is outside a model with {num_layers} layers")
        types[int(i)] = "dense"
    return types


__all__ = [
    "GATE_NETWORKS",
    "LlamaMoEConfig",
    "MLP_LAYER_TYPES",
    "PER_LAYER_FIELDS",
    "ROUTER_TYPES",
    "dense_layer_types",
]
