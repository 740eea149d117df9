"""LlamaMoE model family: config, routers, balance losses, save/load, generation (tiny random models)."""

import math

import pytest
import torch
from conftest import TINY
from transformers import AutoConfig, AutoModelForCausalLM

from moelab.models import (
    PER_LAYER_FIELDS,
    LlamaMoEConfig,
    LlamaMoEForCausalLM,
    NoisyTopKRouter,
    SoftmaxTopKRouter,
    SwitchTop1Router,
    smooth_load,
)


def tiny_model(seed: int = 0, **moe) -> LlamaMoEForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaMoEConfig(**TINY, **{"num_experts": 4, "top_k": 2, **moe})
    return LlamaMoEForCausalLM(cfg).eval()


# ---- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"top_k": 5}, "top_k"),
        ({"top_k": 0}, "top_k"),
        ({"router_type": "hash"}, "router_type"),
        ({"gate_network": "conv"}, "gate_network"),
        ({"expert_sizes": [[32, 32, 32, 32]]}, "expert_sizes"),
        ({"expert_sizes": [[32, 32, 64], [32, 32, 32, 32]]}, "expert_sizes"),
        ({"num_experts": 3}, "intermediate_size"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        LlamaMoEConfig(**TINY, **{"num_experts": 4, "top_k": 2, **bad})


def test_config_defaults_and_per_layer_fields():
    cfg = LlamaMoEConfig(**TINY, num_experts=4, top_k=2)
    assert cfg.model_type == "llama_moe"
    assert cfg.layer_expert_sizes(1) == [32, 32, 32, 32]
    assert cfg.resolved_score_scale_factor == 2.0
    assert cfg.balance_loss_weight == 1e-2 and cfg.noise_epsilon == 1e-2
    assert "expert_sizes" in PER_LAYER_FIELDS
    for name in PER_LAYER_FIELDS:
        assert hasattr(cfg, name)


# ---- routers and balance losses on a fixed 4-token example --------------------------------------------------

L3 = math.log(3.0)
# logits [4 tokens, 4 experts]; top-2 per token: (0,1) (0,2) (0,3) (1,2) -> counts [3, 2, 2, 1]
LOGITS = torch.tensor(
    [
        [L3, 0.0, -9.0, -9.0],
        [L3, -9.0, 0.0, -9.0],
        [L3, -9.0, -9.0, 0.0],
        [-9.0, L3, 0.0, -9.0],
    ]
)


def _linear_router(cls, **kw):
    router = cls(hidden_size=4, num_experts=4, top_k=2, gate_network="linear", **kw)
    with torch.no_grad():
        router.gate_network.weight.copy_(torch.eye(4))  # logits = x
    return router.eval()


def test_noisy_router_balance_loss_hand_computed():
    out = _linear_router(NoisyTopKRouter, noise_epsilon=1e-2)(LOGITS)
    # softmax over the two top logits (ln 3, 0) = (0.75, 0.25)
    assert torch.allclose(out.top_k_weights, torch.tensor([[0.75, 0.25]] * 4))
    assert out.top_k_index.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2]]
    assert torch.allclose(out.importance, torch.tensor([2.25, 1.0, 0.5, 0.25]))
    assert out.load.tolist() == [3.0, 2.0, 2.0, 1.0]  # eval mode: hard counts
    # CV^2 = population variance / mean^2: importance 2.375/4 / 1^2, load 2/4 / 2^2
    assert out.balance_loss.item() == pytest.approx(0.59375 + 0.125, rel=1e-6)


def test_softmax_router_switch_loss_hand_computed():
    out = _linear_router(SoftmaxTopKRouter)(LOGITS)
    # renormalised top-2 of softmax(x) = (0.75, 0.25) again (the -9 terms cancel in the ratio)
    assert torch.allclose(out.top_k_weights, torch.tensor([[0.75, 0.25]] * 4))
    e = math.exp(-9.0)
    probs = [
        [3 / (4 + 2 * e), 1 / (4 + 2 * e), e / (4 + 2 * e), e / (4 + 2 * e)],
        [3 / (4 + 2 * e), e / (4 + 2 * e), 1 / (4 + 2 * e), e / (4 + 2 * e)],
        [3 / (4 + 2 * e), e / (4 + 2 * e), e / (4 + 2 * e), 1 / (4 + 2 * e)],
        [e / (4 + 2 * e), 3 / (4 + 2 * e), 1 / (4 + 2 * e), e / (4 + 2 * e)],
    ]
    P = [sum(row[i] for row in probs) / 4 for i in range(4)]
    f = [3 / 8, 2 / 8, 2 / 8, 1 / 8]
    expected = 4 * sum(fi * pi for fi, pi in zip(f, P, strict=True))
    assert out.balance_loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.load.tolist() == [3.0, 2.0, 2.0, 1.0]


def test_switch_router_capacity_drops_overflow_in_training_hand_computed():
    router = SwitchTop1Router(hidden_size=4, num_experts=4, gate_network="linear", capacity_factor=1.0)
    with torch.no_grad():
        router.gate_network.weight.copy_(torch.eye(4))
    assert router.capacity(4) == 1
    e = math.exp(-9.0)
    p_top = 3 / (4 + 2 * e)
    out = router.train()(LOGITS)  # top-1 choices: experts 0, 0, 0, 1; capacity 1 keeps tokens 0 and 3
    assert out.top_k_index[:, 0].tolist() == [0, 0, 0, 1]
    assert torch.allclose(out.top_k_weights[:, 0], torch.tensor([p_top, 0.0, 0.0, p_top]))
    assert out.load.tolist() == [1.0, 1.0, 0.0, 0.0]
    P0 = (3 * p_top + e / (4 + 2 * e)) / 4
    P1 = (1 + 2 * e + 3) / (4 + 2 * e) / 4  # tokens 0..3 give expert 1 probability 1, e, e, 3 (/Z)
    assert out.balance_loss.item() == pytest.approx(4 * (3 / 4 * P0 + 1 / 4 * P1), rel=1e-6)
    out = router.eval()(LOGITS)  # eval: nothing dropped
    assert out.load.tolist() == [3.0, 1.0, 0.0, 0.0]
    assert (out.top_k_weights > 0).all()


def test_switch_router_needs_top_k_one():
    with pytest.raises(ValueError, match="top_k=1"):
        LlamaMoEConfig(**TINY, num_experts=4, top_k=2, router_type="switch_top1")


@pytest.mark.parametrize("cls", [NoisyTopKRouter, SoftmaxTopKRouter])
def test_balance_loss_gradient_reaches_router(cls):
    kw = {"noise_epsilon": 1e-2} if cls is NoisyTopKRouter else {}
    torch.manual_seed(0)
    router = cls(hidden_size=16, num_experts=4, top_k=2, gate_network="mlp", **kw).train()
    out = router(torch.randn(32, 16))
    out.balance_loss.backward()
    for name, p in router.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, (
            name
        )  # includes weight_noise via the smooth load


def test_noise_only_in_training_mode():
    torch.manual_seed(0)
    router = NoisyTopKRouter(hidden_size=16, num_experts=8, top_k=2, gate_network="linear", noise_epsilon=1.0)
    x = torch.randn(64, 16)
    router.eval()
    assert torch.equal(router(x).logits, router(x).logits)
    assert torch.equal(router(x).logits, router.gate_network(x))
    router.train()
    assert not torch.equal(router(x).logits, router(x).logits)


def _defective_load(clean, noisy, noise_std, k):
    """The upstream variant: 'is expert i in the top-k' decided on the noise term alone."""
    top = noisy.topk(k + 1, dim=-1).values
    thr_in, thr_out = top[:, k : k + 1], top[:, k - 1 : k]
    is_in = (noisy - clean) > thr_in
    z = (clean - torch.where(is_in, thr_in, thr_out)) / noise_std
    return torch.distributions.Normal(0.0, 1.0).cdf(z).sum(0)


def test_smooth_load_matches_monte_carlo():
    """E[smooth load] over the noise equals E[number of tokens routed to each expert] (Shazeer 2017, app. A)."""
    g = torch.Generator().manual_seed(0)
    T, N, k, draws = 6, 4, 2, 20000
    clean = torch.randn(T, N, generator=g) * 0.7
    noise_std = 0.3 + torch.rand(T, N, generator=g)
    noisy = clean + torch.randn(draws, T, N, generator=g) * noise_std  # [draws, T, N]
    hard = torch.zeros(N)
    smooth = torch.zeros(N)
    defect = torch.zeros(N)
    for d in range(draws):
        idx = noisy[d].topk(k, dim=-1).indices
        hard += torch.bincount(idx.reshape(-1), minlength=N).float()
        smooth += smooth_load(clean, noisy[d], noise_std, k)
        defect += _defective_load(clean, noisy[d], noise_std, k)
    hard, smooth, defect = hard / draws, smooth / draws, defect / draws
    # standard error of the hard-count mean is < sqrt(T / 4 / draws) ~ 0.009 per expert
    assert torch.allclose(smooth, hard, atol=0.03), (smooth, hard)
    assert smooth.sum().item() == pytest.approx(T * k, abs=0.05)
    assert (defect - hard).abs().max() > 0.1  # the upstream estimate is measurably biased


# ---- the whole model ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("router_type", ["noisy_topk", "softmax_topk"])
def test_expert_permutation_leaves_outputs_unchanged(router_type):
    model = tiny_model(router_type=router_type, gate_network="linear")
    permuted = tiny_model(router_type=router_type, gate_network="linear")
    permuted.load_state_dict(model.state_dict())
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        for layer in permuted.model.layers:
            router, experts = layer.mlp.router, layer.mlp.experts
            router.gate_network.weight.copy_(router.gate_network.weight[perm])
            if hasattr(router, "weight_noise"):
                router.weight_noise.weight.copy_(router.weight_noise.weight[perm])
            idx = torch.cat(
                [torch.arange(experts.expert_slice(e).start, experts.expert_slice(e).stop) for e in perm]
            )
            experts.gate_proj.copy_(experts.gate_proj[idx])
            experts.up_proj.copy_(experts.up_proj[idx])
            experts.down_proj.copy_(experts.down_proj[:, idx])
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(1))
    a, b = model(ids, output_router_logits=True), permuted(ids, output_router_logits=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.router_logits[0][:, perm], b.router_logits[0])
    assert torch.allclose(a.aux_loss, b.aux_loss, atol=1e-6)


def test_forward_outputs_and_loss_composition():
    model = tiny_model(balance_loss_weight=0.5)
    ids = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(2))
    out = model(ids, labels=ids, output_router_logits=True)
    assert out.logits.shape == (2, 7, 256)
    assert len(out.router_logits) == 2 and out.router_logits[0].shape == (14, 4)
    assert [load.sum().item() for load in out.gate_load] == [
        28.0,
        28.0,
    ]  # 14 tokens x top-2, eval: hard counts
    lm_only = model.loss_function(logits=out.logits, labels=ids, vocab_size=256)
    assert out.aux_loss > 0
    assert out.loss.item() == pytest.approx(lm_only.item() + 0.5 * out.aux_loss.item(), rel=1e-6)
    plain = model(ids)
    assert plain.router_logits is None and torch.equal(plain.logits, out.logits)


def test_save_load_round_trip_exact(tmp_path):
    sizes = [[16, 48, 32, 32], [40, 24, 40, 24]]
    model = tiny_model(expert_sizes=sizes, router_type="softmax_topk", score_scale_factor=1.5)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).expert_sizes == sizes
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LlamaMoEForCausalLM
    assert loaded.model.layers[1].mlp.experts.expert_sizes == sizes[1]
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    ids = torch.randint(0, 256, (1, 11), generator=torch.Generator().manual_seed(3))
    # safetensors tensors are memory-mapped at unaligned offsets, which changes BLAS summation order by ULPs
    assert torch.allclose(model(ids).logits, loaded(ids).logits, rtol=0, atol=1e-6)
    with torch.no_grad():
        for p in loaded.parameters():
            p.data = p.data.clone()  # aligned copies: now bitwise identical
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    # the MoE field top_k must not leak into sampling
    assert loaded.generation_config.top_k in (None, 50)


@pytest.mark.parametrize("router_type", ["noisy_topk", "softmax_topk", "switch_top1"])
def test_generate_with_cache_equals_without(router_type):
    model = tiny_model(seed=4, router_type=router_type, top_k=1 if router_type == "switch_top1" else 2)
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(5))
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    with_cache = model.generate(ids, use_cache=True, **kw)
    without = model.generate(ids, use_cache=False, **kw)
    assert with_cache.shape == (2, 14)
    assert torch.equal(with_cache, without)
    # incremental logits with the KV cache == logits of the full sequence
    full = model(with_cache).logits
    out = model(with_cache[:, :10], use_cache=True)
    step = model(with_cache[:, 10:], cache=out.cache).logits
    assert torch.allclose(step, full[:, 10:], atol=1e-5)


def test_training_mode_backward_reaches_experts_and_routers():
    model = tiny_model().train()
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(6))
    model(ids, labels=ids).loss.backward()
    layer = model.model.layers[0].mlp
    assert layer.experts.gate_proj.grad.abs().sum() > 0
    assert layer.router.weight_noise.weight.grad.abs().sum() > 0
    assert layer.router.gate_network[0].weight.grad.abs().sum() > 0
