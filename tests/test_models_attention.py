"""Attention MoE (LLaMA-MoE v2): experts = KV groups (or query-head slices), routed tokens only, exact cache."""

import pytest
import torch
from conftest import TINY
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from moelab.construct import attention_moe_from_dense
from moelab.models import LlamaMoEAttention, LlamaMoEConfig, LlamaMoEForCausalLM

IDS = torch.randint(1, 256, (2, 9), generator=torch.Generator().manual_seed(1))


def tiny_dense(seed: int = 0, attn: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(**TINY)
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def tiny_attention_moe(seed: int = 0, **kw) -> LlamaMoEForCausalLM:
    torch.manual_seed(seed)
    cfg = {"num_experts": 4, "top_k": 2, "attention_moe": True, "attention_top_k": 1, **kw}
    return LlamaMoEForCausalLM(LlamaMoEConfig(**TINY, **cfg)).eval()


@pytest.mark.parametrize("split, attn", [(1, "sdpa"), (2, "sdpa"), (2, "eager")])
def test_all_experts_active_equals_dense_attention(split, attn):
    """top_k = E, zero router (g = 1/E) and scale E: sum_e o_proj_e Attn_e = the dense attention."""
    dense = tiny_dense(attn=attn)
    E = 2 * split
    moe = attention_moe_from_dense(dense, top_k=E, seed=0, expert_split=split, score_scale_factor=float(E))
    assert moe.config.num_attention_experts == E and moe.config.mlp_layer_types == ["dense", "dense"]
    assert moe.config._attn_implementation == attn
    with torch.no_grad():
        for layer in moe.model.layers:
            layer.self_attn.router.gate_network.weight.zero_()
    mask = torch.ones_like(IDS)
    mask[1, :3] = 0  # left padding in the second row
    a, b = moe(IDS, attention_mask=mask).logits, dense(IDS, attention_mask=mask).logits
    assert torch.allclose(a[mask.bool()], b[mask.bool()], atol=1e-5)


def naive_attention_moe(attn: LlamaMoEAttention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Definition, one sequence: y_t = s sum_{e in top-k(t)} g_e o_proj[:, cols_e] Attn_e(t), where Attn_e runs
    only over the tokens routed to e (u <= t), with their original RoPE positions. x [L, H] -> [L, H]."""
    L, _ = x.shape
    D, nh = attn.head_dim, attn.num_heads
    r = attn.router(x)
    q = attn.q_proj(x).view(L, nh, D).transpose(0, 1)[None]
    k = attn.k_proj(x).view(L, -1, D).transpose(0, 1)[None]
    v = attn.v_proj(x).view(L, -1, D).transpose(0, 1)  # [nkv, L, D]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    q, k = q[0], k[0]  # [nh, L, D], [nkv, L, D]
    heads_per_expert = nh // attn.num_experts
    group = nh // k.shape[0]
    y = torch.zeros_like(x)
    for t in range(L):
        for j in range(attn.top_k):
            e = int(r.top_k_index[t, j])
            routed = [u for u in range(t + 1) if e in r.top_k_index[u].tolist()]
            out = []
            for h in range(e * heads_per_expert, (e + 1) * heads_per_expert):
                kh, vh = k[h // group, routed], v[h // group, routed]
                p = torch.softmax(q[h, t] @ kh.T * attn.scaling, dim=-1)
                out.append(p @ vh)
            cols = slice(e * heads_per_expert * D, (e + 1) * heads_per_expert * D)
            y[t] += (
                attn.score_scale_factor
                * r.top_k_weights[t, j]
                * (attn.o_proj.weight[:, cols] @ torch.cat(out))
            )
    return y


@pytest.mark.parametrize("split", [1, 2])
def test_each_expert_attends_only_among_its_routed_tokens(split):
    model = tiny_attention_moe(attention_expert_split=split, attention_top_k=2)
    attn = model.model.layers[0].self_attn
    x = torch.randn(1, 10, 64, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(10)[None]
    cos, sin = model.model.rotary_emb(x, position_ids=pos)
    with torch.no_grad():
        y, probs, routing = attn(x, position_embeddings=(cos, sin), attention_mask=None)
        ref = naive_attention_moe(attn, x[0], cos, sin)
    assert torch.allclose(y[0], ref, atol=1e-5)
    assert probs.shape == (1, 4, 10, 10)
    assert len(set(routing.top_k_index.reshape(-1).tolist())) > 1  # several experts really used


@pytest.mark.parametrize("split", [1, 2])
def test_attention_moe_generate_with_cache_equals_without(split):
    model = tiny_attention_moe(seed=3, attention_expert_split=split)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with_cache = model.generate(IDS, use_cache=True, **kw)
    assert torch.equal(with_cache, model.generate(IDS, use_cache=False, **kw))
    full = model(with_cache).logits
    out = model(with_cache[:, :11], use_cache=True)
    step = model(with_cache[:, 11:], cache=out.cache).logits
    assert torch.allclose(step, full[:, 11:], atol=1e-5)
    # the cache stores the routing flags as extra value channels
    values = out.cache.layers[0].values
    assert values.shape[-1] == 16 + split
    assert set(values[..., 16:].unique().tolist()) <= {0.0, 1.0}


def test_attention_moe_left_padded_batch_generates_like_single_rows():
    model = tiny_attention_moe(seed=5)
    short = IDS[1:, 4:]
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), short], dim=1)
    batch = torch.cat([IDS[:1], padded])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    both = model.generate(batch, attention_mask=mask, **kw)
    assert torch.equal(both[0], model.generate(IDS[:1], **kw)[0])
    assert torch.equal(both[1, 4:], model.generate(short, **kw)[0])


def test_attention_moe_trains_reports_and_round_trips(tmp_path):
    model = tiny_attention_moe(router_type="softmax_topk", balance_loss_weight=0.1).train()
    out = model(IDS, labels=IDS, output_router_logits=True)
    assert len(out.attention_router_logits) == 2 and out.attention_router_logits[0].shape == (18, 2)
    assert [load.sum().item() for load in out.attention_gate_load] == [18.0, 18.0]  # top-1
    # aux_loss = MLP routers' + attention routers' Switch losses (each >= 1, equality iff balanced)
    assert out.aux_loss.item() >= 4.0 - 1e-5
    out.loss.backward()
    assert model.model.layers[0].self_attn.router.gate_network.weight.grad.abs().sum() > 0
    assert model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.model.layers[1].self_attn, LlamaMoEAttention)
    assert torch.allclose(loaded(IDS).logits, model(IDS).logits, atol=1e-6)


def test_attention_moe_from_dense_keeps_weights_and_seeds_routers():
    dense = tiny_dense()
    a = attention_moe_from_dense(dense, top_k=1, seed=1)
    b = attention_moe_from_dense(dense, top_k=1, seed=1)
    c = attention_moe_from_dense(dense, top_k=1, seed=2)
    ra, rb, rc = (m.model.layers[1].self_attn.router.gate_network.weight for m in (a, b, c))
    assert torch.equal(ra, rb) and not torch.equal(ra, rc)
    assert torch.equal(
        a.model.layers[1].self_attn.o_proj.weight, dense.model.layers[1].self_attn.o_proj.weight
    )
    assert torch.equal(a.model.layers[0].mlp.up_proj.weight, dense.model.layers[0].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="already has attention MoE"):
        attention_moe_from_dense(a, top_k=1, seed=0)
    with pytest.raises(ValueError, match="attention_expert_split"):
        attention_moe_from_dense(dense, top_k=1, seed=0, expert_split=3)
