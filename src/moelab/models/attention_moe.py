"""Attention Mixture-of-Experts (LLaMA-MoE v2, arXiv 2411.15708, sec. 2 "Attention MoE").

An attention expert is one GQA group (its query heads, its K and V head, and the matching o_proj columns), or,
with `attention_expert_split` = m > 1, one of m equal slices of the query heads of a group (the slices of a group
share its K/V head). A router picks top-k experts per token:
    p = softmax(W_r x), g = top-k of p renormalised, y_t = s * sum_{e in top-k(t)} g_e o_proj_e(Attn_e(t))
and expert e attends only among the tokens routed to it, which keep their original RoPE positions:
    Attn_e(t) = softmax_{u <= t, u routed to e}(q_t^e . k_u^e / sqrt(d)) v_u^e.

Exact dense-masked formulation (what this file computes). Every head's q/k/v is computed for every token and
head h of expert e(h) uses the mask "key u is causal-visible to t AND u is routed to e(h)". For a token t routed
to e this is exactly Attn_e(t) over e's routed tokens; tokens not routed to e get gate 0 so their masked rows
(which may be empty: filled with finfo.min, they give a finite uniform softmax) contribute nothing. The result
equals running each expert on its own token subset; it does not save attention FLOPs (all heads run on all
tokens), which is fine for quality experiments and keeps batching and generate() simple.

KV cache. The cache keeps the usual K/V of all KV heads plus, for each past token, which experts it was routed
to: the m routing flags of group g are stored as m extra channels appended to the value vector of KV head g
(values [B, n_kv, S, head_dim + m], flags exactly 0.0 / 1.0). So the routing history is cropped, reordered
(beam search) and batched with the cache for free; it needs a cache that accepts any value width
(DynamicCache, the generate() default; not StaticCache). This is equivalent to one KV cache per expert.

Shape legend: B batch, L new tokens, S = past + L keys, nh query heads, nkv KV heads, D head_dim,
E = nkv * m experts, K = attention_top_k, T = B * L.
"""

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaAttention, apply_rotary_pos_emb, repeat_kv

from .routers import RouterOutput, SoftmaxTopKRouter


class LlamaMoEAttention(LlamaAttention):
    """Llama attention split into routed experts (see module docstring); q/k/v/o weights keep Llama's names.

    forward(hidden_states [B, L, H], position_embeddings (cos, sin), attention_mask, cache)
        -> (output [B, L, H], attention probabilities [B, nh, L, S], RouterOutput over the E experts)
    attention_mask: a boolean [B, 1, L, S] mask (True = may attend) or an additive float one (0 = may attend),
        as built by `create_causal_mask(..., allow_is_causal_skip=False)`; None means plain causal.
    Raises: ValueError if the cache returns values without the routing channels (e.g. a StaticCache).
    """

    def __init__(self, config, layer_idx: int):
        super().__init__(config, layer_idx)
        self.num_experts = config.num_attention_experts
        self.top_k = config.attention_top_k
        self.expert_split = config.attention_expert_split
        self.score_scale_factor = config.resolved_attention_score_scale_factor
        self.num_heads = config.num_attention_heads
        self.router = SoftmaxTopKRouter(config.hidden_size, self.num_experts, self.top_k, "linear")

    def head_expert(self, device) -> torch.Tensor:
        """[nh] expert id of every query head: heads are contiguous per group, groups split into m slices."""
        return torch.arange(self.num_heads, device=device) // (self.num_heads // self.num_experts)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor, RouterOutput]:
        B, L, H = hidden_states.shape
        D, E, m = self.head_dim, self.num_experts, self.expert_split
        routing = self.router(hidden_states.reshape(B * L, H))
        selected = torch.zeros(B * L, E, dtype=torch.bool, device=hidden_states.device)
        selected.scatter_(1, routing.top_k_index, True)  # [T, E]
        gate = torch.zeros(B * L, E, dtype=torch.float32, device=hidden_states.device)
        gate.scatter_(1, routing.top_k_index, routing.top_k_weights * self.score_scale_factor)  # [T, E]

        q = self.q_proj(hidden_states).view(B, L, -1, D).transpose(1, 2)  # [B, nh, L, D]
        k = self.k_proj(hidden_states).view(B, L, -1, D).transpose(1, 2)  # [B, nkv, L, D]
        v = self.v_proj(hidden_states).view(B, L, -1, D).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        n_kv = k.shape[1]
        flags = selected.view(B, L, n_kv, m).transpose(1, 2).to(v.dtype)  # [B, nkv, L, m]
        if cache is not None:
            k, v_aug = cache.update(k, torch.cat([v, flags], dim=-1), self.layer_idx, kwargs=kwargs)
            if v_aug.shape[-1] != D + m:
                raise ValueError(
                    "attention MoE needs a cache that stores its routing channels (DynamicCache); got values of "
                    f"width {v_aug.shape[-1]}, expected head_dim + attention_expert_split = {D + m}"
                )
            v, flags = v_aug.split([D, m], dim=-1)
        S = k.shape[2]
        key_routed = flags.permute(0, 1, 3, 2).reshape(B, E, S) > 0.5  # [B, E, S], expert id = g * m + j
        allowed = key_routed[:, self.head_expert(q.device)].unsqueeze(2)  # [B, nh, 1, S]
        if attention_mask is None:
            past = S - L
            pos_q = torch.arange(L, device=q.device)[:, None] + past
            allowed = allowed & (torch.arange(S, device=q.device)[None, :] <= pos_q)
        elif attention_mask.dtype == torch.bool:
            allowed = allowed & attention_mask[..., :S]
        else:
            allowed = allowed & (attention_mask[..., :S] == 0)

        k, v = repeat_kv(k, self.num_key_value_groups), repeat_kv(v, self.num_key_value_groups)
        scores = torch.matmul(q, k.transpose(2, 3)).float() * self.scaling  # [B, nh, L, S]
        scores = scores.masked_fill(~allowed, torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1).to(q.dtype)
        probs = nn.functional.dropout(
            probs, p=self.attention_dropout if self.training else 0.0, training=self.training
        )
        out = torch.matmul(probs, v)  # [B, nh, L, D]
        head_gate = gate.view(B, L, E)[:, :, self.head_expert(q.device)]  # [B, L, nh]
        out = out * head_gate.transpose(1, 2).unsqueeze(-1).to(out.dtype)
        out = self.o_proj(out.transpose(1, 2).reshape(B, L, -1))
        return out, probs, routing


__all__ = ["LlamaMoEAttention"]
