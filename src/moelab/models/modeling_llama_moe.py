"""LLaMA-MoE: a LLaMA decoder whose FFNs are sparse Mixture-of-Experts blocks (arXiv 2406.16554).

Attention, norms and rotary embeddings are transformers' Llama modules; the decoder layer's `mlp` is
`LlamaMoESparseBlock` = router + SwiGLU experts (+ optional always-on shared experts):
    y = s * sum_{i in top-k(x)} g_i(x) E_i(x) + s_sh * E_shared(x)   (LLaMA-MoE sec. 2.2; v2 "1+7top1")
or, in layers listed as "dense" in `mlp_layer_types`, the plain LlamaMLP ("none": no FFN and no pre-FFN norm,
removed by Layer Drop). With `attention_moe` the attention is `LlamaMoEAttention` (LLaMA-MoE v2 attention
experts, see attention_moe.py).
The causal-LM loss adds balance_loss_weight * (sum over MoE layers of the routers' balance losses, attention
routers included).

Shape legend: B batch, L sequence length, H hidden, T = B*L tokens, N experts, K top_k.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationConfig, GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from moelab.files import verify_model_folder

from .attention_moe import LlamaMoEAttention
from .configuration_llama_moe import LlamaMoEConfig
from .experts import LlamaMoEExperts
from .routers import FrozenRandomRouter, NoisyTopKRouter, RouterOutput, build_router


@dataclass
class LlamaMoEModelOutputWithPast(MoeModelOutputWithPast):
    """`MoeModelOutputWithPast` plus the MoE statistics of every MoE layer.

    aux_loss: [] sum over MoE layers of the un-weighted balance losses, attention routers included
        (always set when the model has a router).
    router_logits / gate_load / gate_importance: tuples over the MLP-MoE layers (in order, dense layers
        skipped; `config.moe_layer_indices` maps entry j to its decoder layer) of [T, N_l] / [N_l] / [N_l]
        tensors, set when `output_router_logits=True`.
    attention_router_logits / attention_gate_load: the same for the attention routers (attention MoE only).
    """

    aux_loss: torch.Tensor | None = None
    gate_load: tuple[torch.Tensor, ...] | None = None
    gate_importance: tuple[torch.Tensor, ...] | None = None
    attention_router_logits: tuple[torch.Tensor, ...] | None = None
    attention_gate_load: tuple[torch.Tensor, ...] | None = None


@dataclass
class LlamaMoECausalLMOutputWithPast(MoeCausalLMOutputWithPast):
    """`MoeCausalLMOutputWithPast` plus per-layer gate load and importance (see LlamaMoEModelOutputWithPast)."""

    gate_load: tuple[torch.Tensor, ...] | None = None
    gate_importance: tuple[torch.Tensor, ...] | None = None
    attention_router_logits: tuple[torch.Tensor, ...] | None = None
    attention_gate_load: tuple[torch.Tensor, ...] | None = None


class LlamaMoEGenerationConfig(GenerationConfig):
    """GenerationConfig that ignores the MoE fields of the model config when derived from it.

    The MoE field `top_k` (experts per token) shares its name with the sampling parameter `top_k`; without
    this, `generate(do_sample=True)` would silently sample from the top-2 tokens of a 2-expert model.
    """

    @classmethod
    def from_model_config(cls, model_config) -> GenerationConfig:
        d = model_config.to_dict() if not isinstance(model_config, dict) else dict(model_config)
        for key in ("num_experts", "top_k", "expert_sizes", "router_type", "gate_network"):
            d.pop(key, None)
        return GenerationConfig.from_model_config(d)


class LlamaMoESharedExperts(nn.Module):
    """Always-on shared experts of one layer, stored as one SwiGLU FFN of width sum(expert_sizes).

    Shared expert j owns neurons offsets[j] : offsets[j] + expert_sizes[j] of gate_proj/up_proj rows and
    down_proj columns; since all of them run on every token with one scale, their sum is this one FFN.
    forward: x [..., H] -> [..., H].
    """

    def __init__(self, hidden_size: int, expert_sizes: list[int], hidden_act: str = "silu"):
        super().__init__()
        self.expert_sizes = [int(s) for s in expert_sizes]
        width = sum(self.expert_sizes)
        self.gate_proj = nn.Linear(hidden_size, width, bias=False)
        self.up_proj = nn.Linear(hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, hidden_size, bias=False)
        self.act_fn = ACT2FN[hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaMoESparseBlock(nn.Module):
    """Router + routed experts (+ shared experts) of one layer: [B, L, H] -> ([B, L, H], RouterOutput).

    y = s * sum_{i in top-k} g_i E_i(x) + s_sh * E_shared(x), s = config.layer_score_scale_factor(layer_idx),
    s_sh = config.layer_shared_expert_scale(layer_idx); `shared_experts` is None without shared experts.
    """

    def __init__(self, config: LlamaMoEConfig, layer_idx: int):
        super().__init__()
        self.router = build_router(config, layer_idx)
        self.experts = LlamaMoEExperts(
            config.hidden_size,
            config.layer_expert_sizes(layer_idx),
            config.hidden_act,
            config.moe_implementation,
        )
        self.score_scale_factor = config.layer_score_scale_factor(layer_idx)
        shared = config.layer_shared_expert_sizes(layer_idx)
        self.shared_experts = (
            LlamaMoESharedExperts(config.hidden_size, shared, config.hidden_act) if shared else None
        )
        self.shared_expert_scale = config.layer_shared_expert_scale(layer_idx)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        B, L, H = hidden_states.shape
        x = hidden_states.reshape(B * L, H)  # [T, H]
        routing = self.router(x)
        weights = routing.top_k_weights * self.score_scale_factor  # [T, K]
        y = self.experts(x, routing.top_k_index, weights)  # [T, H]
        if self.shared_experts is not None:
            y = y + self.shared_expert_scale * self.shared_experts(x)
        return y.view(B, L, H), routing


class LlamaMoEDecoderLayer(GradientCheckpointingLayer):
    """Llama decoder layer with an MoE (or dense) FFN and dense (or MoE) attention.

    Returns (hidden_states [B, L, H], RouterOutput of the FFN or None for a dense FFN,
    RouterOutput of the attention router or None without attention MoE).
    """

    def __init__(self, config: LlamaMoEConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        attn_cls = LlamaMoEAttention if config.attention_moe else LlamaAttention
        self.self_attn = attn_cls(config=config, layer_idx=layer_idx)
        kind = config.layer_mlp_type(layer_idx)
        if kind == "moe":
            self.mlp = LlamaMoESparseBlock(config, layer_idx)
        else:
            self.mlp = LlamaMLP(config) if kind == "dense" else None
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        # "none": FFN and pre-FFN norm removed by Layer Drop; the layer is attention + residual only
        self.post_attention_layernorm = (
            None if kind == "none" else LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, RouterOutput | None, RouterOutput | None]:
        residual = hidden_states
        hidden_states, _, *attn_routing = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        if self.mlp is None:  # FFN removed by Layer Drop (mlp_layer_types "none")
            return hidden_states, None, (attn_routing[0] if attn_routing else None)
        x = self.post_attention_layernorm(hidden_states)
        if isinstance(self.mlp, LlamaMoESparseBlock):
            moe_out, routing = self.mlp(x)
        else:
            moe_out, routing = self.mlp(x), None
        return hidden_states + moe_out, routing, (attn_routing[0] if attn_routing else None)


class LlamaMoEPreTrainedModel(PreTrainedModel):
    """Weight init and HF capabilities shared by the LLaMA-MoE classes."""

    config: LlamaMoEConfig
    config_class = LlamaMoEConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaMoEDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": LlamaMoEDecoderLayer, "attentions": LlamaAttention}

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, LlamaMoEExperts):
            init.normal_(module.gate_proj, mean=0.0, std=std)
            init.normal_(module.up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, NoisyTopKRouter):
            init.zeros_(module.weight_noise.weight)  # LLaMA-MoE upstream: noise weights start at zero
        elif isinstance(module, FrozenRandomRouter):
            pass  # the seeded projection is set in __init__ and saved with the model; never re-drawn


class LlamaMoEModel(LlamaMoEPreTrainedModel):
    """Embeddings + MoE decoder layers + final norm; forward returns `LlamaMoEModelOutputWithPast`."""

    def __init__(self, config: LlamaMoEConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [LlamaMoEDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        **kwargs,
    ) -> LlamaMoEModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen = cache.get_seq_length() if cache is not None else 0
            position_ids = (
                torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen
            ).unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
            allow_is_causal_skip=not self.config.attention_moe,  # attention MoE needs an explicit mask
        )
        if self.config.attention_moe and not (
            isinstance(causal_mask, torch.Tensor) and causal_mask.dim() == 4
        ):
            raise ValueError(
                "attention_moe needs a 4-D attention mask; use attn_implementation 'sdpa' or 'eager', got "
                f"{self.config._attn_implementation!r}"
            )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        routings: list[RouterOutput] = []
        attn_routings: list[RouterOutput] = []
        for layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states, routing, attn_routing = layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
            if routing is not None:
                routings.append(routing)
            if attn_routing is not None:
                attn_routings.append(attn_routing)
        hidden_states = self.norm(hidden_states)

        losses = [r.balance_loss for r in routings + attn_routings]
        aux_loss = torch.stack(losses).sum() if losses else None
        out = LlamaMoEModelOutputWithPast(last_hidden_state=hidden_states, cache=cache, aux_loss=aux_loss)
        if output_router_logits:
            out.router_logits = tuple(r.logits for r in routings)
            out.gate_load = tuple(r.load for r in routings)
            out.gate_importance = tuple(r.importance for r in routings)
            if attn_routings:
                out.attention_router_logits = tuple(r.logits for r in attn_routings)
                out.attention_gate_load = tuple(r.load for r in attn_routings)
        return out


class LlamaMoEForCausalLM(LlamaMoEPreTrainedModel, GenerationMixin):
    """LLaMA-MoE causal LM: loss = LM loss + balance_loss_weight * aux_loss (when labels are given).

    forward(input_ids [B, L], attention_mask [B, L], labels [B, L], ..., output_router_logits=False)
        -> LlamaMoECausalLMOutputWithPast with logits [B, L, V], aux_loss [] (un-weighted sum of the
        per-layer balance losses), and router_logits / gate_load / gate_importance when asked.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    generation_config_class = LlamaMoEGenerationConfig

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, checking a local folder's weights first.

        Plain ``AutoModelForCausalLM.from_pretrained(folder)`` on one of our checkpoints lands here.

        Raises:
            FileNotFoundError / moelab.errors.DamagedFileError: a weights file of a local folder is missing or
                damaged (named, with what to do; ``moelab.files.verify_model_folder``).
        """
        if Path(str(pretrained_model_name_or_path)).is_dir() and not kwargs.get("gguf_file"):
            verify_model_folder(pretrained_model_name_or_path)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def __init__(self, config: LlamaMoEConfig):
        super().__init__(config)
        self.model = LlamaMoEModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def adjust_generation_fn(self, *args, **kwargs):
        """Load the generation config as transformers does, then drop the MoE fields if it was derived
        from config.json (no generation_config.json saved), see `LlamaMoEGenerationConfig`."""
        super().adjust_generation_fn(*args, **kwargs)
        if getattr(self.generation_config, "_from_model_config", False):
            self.generation_config = LlamaMoEGenerationConfig.from_model_config(self.config)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LlamaMoECausalLMOutputWithPast:
        return_dict = kwargs.pop("return_dict", None)
        out: LlamaMoEModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_router_logits=output_router_logits,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(out.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
            if out.aux_loss is not None and self.config.balance_loss_weight > 0:
                loss = loss + self.config.balance_loss_weight * out.aux_loss.to(loss.device)

        result = LlamaMoECausalLMOutputWithPast(
            loss=loss,
            aux_loss=out.aux_loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            router_logits=out.router_logits,
            gate_load=out.gate_load,
            gate_importance=out.gate_importance,
            attention_router_logits=out.attention_router_logits,
            attention_gate_load=out.attention_gate_load,
        )
        return result.to_tuple() if return_dict is False else result


__all__ = [
    "LlamaMoEForCausalLM",
    "LlamaMoEModel",
    "LlamaMoEPreTrainedModel",
    "LlamaMoESparseBlock",
    "LlamaMoESharedExperts",
    "LlamaMoEDecoderLayer",
    "LlamaMoEModelOutputWithPast",
    "LlamaMoECausalLMOutputWithPast",
]
