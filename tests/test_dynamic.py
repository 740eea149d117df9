"""PAD-Net (moelab.dynamic): the PAD weight reduces to the dynamic / static layer at M = 1 / M = 0, DY-Conv's
attention and temperature, IMP's global schedule, hand-counted parameters and FLOPs, named errors, seeds."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moelab.dynamic import (
    CondConv2d,
    DYConv2d,
    PADConv2d,
    PADExperts,
    conv_flops,
    count_flops,
    count_params,
    dyconv_temperature,
    dynamic_fraction,
    dynamic_ratio,
    iterative_mode_partition,
    make_conv,
    mask_saliency,
    model_partitions,
    partition_round,
    per_example_conv2d,
    set_temperature,
    target_count,
)


def images(batch=3, channels=4, size=6, seed=0):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def tiny_cnn(layer_type="pad_dyconv", seed=0, scale=True):
    """Two 3x3 convs (4 -> 8 -> 8 channels), global pool, linear head to 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        make_conv(layer_type, 4, 8, 3, padding=1, scale=scale),
        nn.ReLU(),
        make_conv(layer_type, 8, 8, 3, padding=1, stride=2, scale=scale),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 4, 6, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(n)]


def ce_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


# ---- the PAD weight at its two ends ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dyconv", "condconv"])
@pytest.mark.parametrize("bias", [False, True])
def test_pad_all_dynamic_with_unit_scale_equals_the_dynamic_layer(kind, bias):
    torch.manual_seed(0)
    pad = PADConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias, dynamic=kind)
    l_d, l_s = pad.scales()
    assert l_d.item() == 1.0 and l_s.item() == 1.0  # phi = 0 at start
    x = images()
    torch.testing.assert_close(pad(x), pad.dynamic(x))
    no_scale = PADConv2d(4, 6, 3, padding=1, dynamic=kind, scale=False)
    assert no_scale.phi is None and no_scale.scales() == (1.0, 1.0)
    torch.testing.assert_close(no_scale(x), no_scale.dynamic(x))


@pytest.mark.parametrize("bias", [False, True])
def test_pad_all_static_with_unit_scale_equals_a_static_conv(bias):
    torch.manual_seed(0)
    pad = PADConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias)
    for part in pad.partitions():
        part.mask.zero_()
    x = images()
    expected = F.conv2d(x, pad.static_weight, pad.static_bias, stride=2, padding=1, groups=2)
    torch.testing.assert_close(pad(x), expected)


def test_scales_follow_phi_and_scale_each_mode():
    torch.manual_seed(0)
    pad = PADConv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        pad.phi.fill_(0.7)
    l_d, l_s = pad.scales()
    torch.testing.assert_close(l_d, 2 * torch.sigmoid(torch.tensor(0.7)))
    torch.testing.assert_close(l_s, 2 - l_d)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(pad(x), l_d * pad.dynamic(x))  # M = 1: the conv is linear in its kernel
        pad.mask.zero_()
        torch.testing.assert_close(pad(x), l_s * F.conv2d(x, pad.static_weight, padding=1))


def test_per_example_conv_equals_a_loop_over_examples():
    g = torch.Generator().manual_seed(0)
    x, w, b = images(), torch.randn(3, 6, 2, 3, 3, generator=g), torch.randn(3, 6, generator=g)
    out = per_example_conv2d(x, w, b, stride=2, padding=1, groups=2)
    loop = torch.cat([F.conv2d(x[i : i + 1], w[i], b[i], stride=2, padding=1, groups=2) for i in range(3)])
    torch.testing.assert_close(out, loop)


# ---- DY-Conv and CondConv -------------------------------------------------------------------------------


def test_dyconv_attention_sums_to_one_and_condconv_routes_by_sigmoid():
    torch.manual_seed(0)
    dy, cond = DYConv2d(4, 6, 3, num_kernels=5), CondConv2d(4, 6, 3, num_kernels=5)
    x = images()
    pi = dy.kernel_attention(x)
    assert pi.shape == (3, 5) and (pi >= 0).all()
    torch.testing.assert_close(pi.sum(-1), torch.ones(3))
    assert dy.attention.hidden == 1  # max(1, 4 // 16)
    alpha = cond.kernel_attention(x)
    torch.testing.assert_close(
        alpha, torch.sigmoid(cond.attention.fc(x.mean((2, 3), keepdim=True)).flatten(1))
    )
    assert cond.attention.hidden == 0  # CondConv eq. 3: one routing layer


def test_temperature_schedule_and_set_temperature():
    assert dyconv_temperature(0) == 30.0
    assert dyconv_temperature(5) == pytest.approx(15.5)
    assert dyconv_temperature(2.5) == pytest.approx(30 - 29 * 0.25)
    assert dyconv_temperature(10) == 1.0 and dyconv_temperature(25) == 1.0
    assert dyconv_temperature(3, anneal_epochs=0) == 1.0
    model = tiny_cnn("pad_dyconv")
    x = images(channels=4)
    assert set_temperature(model, 30.0) == 2
    layer = model[0].dynamic
    assert float(layer.temperature) == 30.0
    hot = layer.kernel_attention(x)
    set_temperature(model, 1.0)
    cold = layer.kernel_attention(x)
    torch.testing.assert_close(hot, torch.softmax(layer.attention.logits(x) / 30, -1))
    assert (hot - 0.25).abs().max() < (cold - 0.25).abs().max()  # tau = 30: near uniform
    assert "temperature" in layer.state_dict()


@pytest.mark.parametrize("bias", [False, True])
def test_dyconv_with_identical_kernels_equals_a_static_conv(bias):
    torch.manual_seed(0)
    dy = DYConv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias, num_kernels=4)
    with torch.no_grad():
        dy.weight.copy_(dy.weight[:1].expand_as(dy.weight))
        if bias:
            dy.bias.copy_(dy.bias[:1].expand_as(dy.bias))
    x = images()
    expected = F.conv2d(x, dy.weight[0], dy.bias[0] if bias else None, stride=2, padding=1, groups=2)
    torch.testing.assert_close(dy(x), expected)


# ---- PAD-MoE experts ------------------------------------------------------------------------------------


def routing(n=7, num_experts=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(num_experts, generator=g)[:k] for _ in range(n)])
    return index, torch.softmax(torch.randn(n, k, generator=g), -1)


def reference_ffn(x, ffn_type, up, down, gate=None, up_b=None, down_b=None):
    if ffn_type == "swiglu":
        return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)
    return F.linear(F.gelu(F.linear(x, up, up_b)), down, down_b)


@pytest.mark.parametrize("ffn_type,activation,bias", [("mlp", "gelu", True), ("swiglu", "silu", False)])
def test_pad_experts_reduce_to_the_moe_and_to_the_static_ffn(ffn_type, activation, bias):
    torch.manual_seed(0)
    experts = PADExperts(4, 16, 32, ffn_type=ffn_type, activation=activation, bias=bias)
    x = torch.randn(7, 16)
    index, weights = routing()
    out = experts(x, index, weights)  # M = 1, l_d = 1: expert i uses its own W_i

    def expert(e, suffix=""):
        def pick(name):
            t = getattr(experts, f"{name}{suffix}")
            return t if suffix else t[e]

        kw = {"up_b": pick("up_proj_bias"), "down_b": pick("down_proj_bias")} if bias else {}
        gate = pick("gate_proj") if ffn_type == "swiglu" else None
        return lambda v: reference_ffn(v, ffn_type, pick("up_proj"), pick("down_proj"), gate, **kw)

    expected = torch.stack(
        [sum(weights[n, j] * expert(int(index[n, j]))(x[n : n + 1])[0] for j in range(2)) for n in range(7)]
    )
    torch.testing.assert_close(out, expected)
    for part in experts.partitions():  # M = 0, l_s = 1: every expert is the shared static FFN
        part.mask.zero_()
    static = expert(0, "_static")(x)
    torch.testing.assert_close(experts(x, index, weights), weights.sum(-1, keepdim=True) * static)


def test_pad_experts_share_one_mask_across_experts():
    torch.manual_seed(0)
    experts = PADExperts(3, 8, 16)
    mask = torch.zeros(16, 8)
    mask[:, :4] = 1
    experts.up_proj_mask.copy_(mask)
    effective = experts.expert_weights()["up_proj"]  # [E, I, H]
    for e in range(3):
        torch.testing.assert_close(effective[e, :, :4], experts.up_proj[e, :, :4])
        torch.testing.assert_close(effective[e, :, 4:], experts.up_proj_static[:, 4:])


def test_pad_experts_upcycled_from_a_dense_ffn_compute_it_for_any_mask():
    torch.manual_seed(0)
    dense = {"up_proj": torch.randn(32, 16), "down_proj": torch.randn(16, 32)}
    dense |= {"up_proj_bias": torch.randn(32), "down_proj_bias": torch.randn(16)}
    experts = PADExperts(4, 16, 32, bias=True)
    experts.copy_dense_ffn(dense)
    experts.up_proj_mask.view(-1)[::3] = 0
    x = torch.randn(7, 16)
    index, weights = routing()
    ffn = reference_ffn(
        x, "mlp", dense["up_proj"], dense["down_proj"], None, dense["up_proj_bias"], dense["down_proj_bias"]
    )
    torch.testing.assert_close(experts(x, index, weights), weights.sum(-1, keepdim=True) * ffn)
    with pytest.raises(ValueError, match="gate_proj"):
        experts.copy_dense_ffn({**dense, "gate_proj": torch.zeros(32, 16)})
    with pytest.raises(ValueError, match="down_proj"):
        experts.copy_dense_ffn({**dense, "down_proj": torch.zeros(32, 16)})


# ---- Iterative Mode Partition ---------------------------------------------------------------------------


def test_imp_keeps_the_target_fraction_each_round_under_one_global_threshold():
    model = tiny_cnn()
    total = 8 * 4 * 9 + 8 * 8 * 9
    history = iterative_mode_partition(model, ce_loss, batches(), kappa=0.3, rounds=3, num_batches=2)
    previous = {n: torch.ones_like(p.mask) for n, p in model_partitions(model).items()}
    assert [h["round"] for h in history] == [1, 2, 3]
    for t, h in enumerate(history, start=1):
        assert h["fraction"] == pytest.approx(0.3 ** (t / 3))
        assert h["total"] == total and h["dynamic"] == round(0.3 ** (t / 3) * total)
    masks = {n: p.mask for n, p in model_partitions(model).items()}
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total) == history[-1]["dynamic"]
    assert dynamic_ratio(model) == pytest.approx(round(0.3 * total) / total)
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks.values())
    assert all((m <= previous[n]).all() for n, m in masks.items())
    # a global threshold, not a per-layer one: the layers' ratios differ, their entry-weighted mean is kappa
    ratios = history[-1]["layers"]
    assert ratios["0.weight"] != pytest.approx(ratios["2.weight"])


def test_partition_round_uses_one_threshold_across_layers():
    model = tiny_cnn()
    parts = model_partitions(model)
    first, second = parts["0.weight"].mask, parts["2.weight"].mask
    scores = {"0.weight": torch.full_like(first, 2.0), "2.weight": torch.rand(second.shape)}
    kept = partition_round(model, scores, first.numel() / (first.numel() + second.numel()))
    assert kept == first.numel()
    assert first.all() and not second.any()  # every entry of layer 0 outranks every entry of layer 2
    with pytest.raises(ValueError, match="fraction"):
        partition_round(model, scores, 0.9)  # more than the entries still dynamic


def test_mask_saliency_is_the_gradient_magnitude_of_the_loss_over_the_batches():
    model = tiny_cnn().double()
    data = [(x.double(), y) for x, y in batches(2)]
    scores = mask_saliency(model, ce_loss, data)
    assert all(p.grad is None for p in model.parameters())  # parameters' .grad untouched
    mask = model_partitions(model)["2.weight"].mask
    eps = 1e-6
    for j in (0, 17, 300):
        flat = mask.view(-1)

        def loss_at(v, flat=flat, j=j):
            flat[j] = v
            return sum(ce_loss(model, b) for b in data).item()

        with torch.no_grad():
            fd = (loss_at(1 + eps) - loss_at(1 - eps)) / (2 * eps)
            flat[j] = 1.0
        assert scores["2.weight"].view(-1)[j].item() == pytest.approx(abs(fd), rel=1e-4, abs=1e-9)


def test_imp_over_pad_convs_and_pad_experts_together():
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = PADConv2d(4, 8, 3, padding=1)
            self.experts = PADExperts(4, 8, 16)

        def forward(self, x):
            h = self.conv(x).mean((2, 3))  # [B, 8]
            index = torch.arange(h.shape[0]).remainder(4).unsqueeze(-1)
            return self.experts(h, index, torch.ones_like(index, dtype=h.dtype))

    model = Tiny()
    history = iterative_mode_partition(
        model, lambda m, b: m(b[0]).pow(2).mean(), batches(2), kappa=0.5, rounds=2, num_batches=1
    )
    total = 8 * 4 * 9 + 2 * 16 * 8
    assert history[-1]["dynamic"] == round(0.5 * total)
    assert set(history[-1]["layers"]) == {"conv.weight", "experts.up_proj", "experts.down_proj"}


def test_random_partition_same_seed_same_masks_and_same_counts_as_imp():
    def run(seed):
        model = tiny_cnn()
        iterative_mode_partition(model, None, None, kappa=0.5, rounds=2, method="random", seed=seed)
        return [p.mask.clone() for p in model_partitions(model).values()]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert sum(int(m.sum()) for m in a) == round(0.5 * (8 * 4 * 9 + 8 * 8 * 9))


def test_imp_same_seed_same_partition_and_between_rounds_callback():
    calls = []

    def run():
        model = tiny_cnn(seed=3)
        iterative_mode_partition(
            model, ce_loss, batches(3), kappa=0.4, rounds=3, num_batches=2, between_rounds=calls.append
        )
        return [p.mask.clone() for p in model_partitions(model).values()]

    first, second = run(), run()
    assert all(torch.equal(x, y) for x, y in zip(first, second, strict=True))
    assert calls == [1, 2, 1, 2]


def test_masks_and_temperature_survive_a_state_dict_round_trip():
    model = tiny_cnn()
    iterative_mode_partition(model, None, None, kappa=0.3, rounds=1, method="random")
    set_temperature(model, 7.0)
    other = tiny_cnn(seed=9)
    other.load_state_dict(model.state_dict())
    x = images(channels=4)
    torch.testing.assert_close(other(x), model(x))
    assert dynamic_ratio(other) == dynamic_ratio(model) and float(other[0].dynamic.temperature) == 7.0


# ---- counts ---------------------------------------------------------------------------------------------


def test_params_and_flops_of_a_hand_counted_layer():
    # 16 -> 32 channels, 3x3, padding 1, 8x8 input: one kernel 32*16*9 = 4608 entries, 64 output positions.
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 8)
    static = make_conv("static", 16, 32, 3, padding=1)
    assert count_params(static) == 4608 and count_flops(static, x) == 4608 * 64
    dy = make_conv("dyconv", 16, 32, 3, padding=1)  # K = 4, attention hidden 16 // 16 = 1
    attention_params = (16 * 1 + 1) + (1 * 4 + 4)
    assert count_params(dy) == 4 * 4608 + attention_params == 18457
    flops = conv_flops(dy, (8, 8), (8, 8))
    assert flops == {
        "conv": 4608 * 64,
        "attention": 16 * 64 + 16 * 1 + 1 * 4,
        "aggregation": 4 * 4608,
        "total": 294912 + 1044 + 18432,
    }
    assert count_flops(dy, x) == 314388
    assert count_flops(dy, torch.randn(2, 16, 8, 8)) == 2 * 314388
    pad = make_conv("pad_dyconv", 16, 32, 3, padding=1)
    pad.mask.view(-1)[1000:] = 0  # 1000 dynamic entries, 3608 static
    assert count_params(pad) == 4 * 1000 + 3608 + attention_params + 1 == 7634
    assert count_flops(pad, x) == 294912 + 1044 + 4 * 1000
    cond = make_conv("condconv", 16, 32, 3, padding=1)  # routing: one 1x1 conv 16 -> 4
    assert count_params(cond) == 4 * 4608 + 16 * 4 + 4
    assert count_flops(cond, x) == 294912 + (16 * 64 + 16 * 4) + 4 * 4608


def test_flops_of_a_small_network_sum_its_layers_once():
    model = tiny_cnn("dyconv")
    x = torch.randn(1, 4, 6, 6)
    first = conv_flops(model[0], (6, 6), (6, 6))["total"]
    second = conv_flops(model[2], (6, 6), (3, 3))["total"]
    assert count_flops(model, x) == first + second + 8 * 3  # the attention convs are not counted twice
    static = tiny_cnn("static")
    assert count_flops(static, x) == 8 * 4 * 9 * 36 + 8 * 8 * 9 * 9 + 8 * 3


def test_expert_params_and_flops_hand_counted():
    torch.manual_seed(0)
    experts = PADExperts(4, 16, 32)  # mlp: up [4, 32, 16], down [4, 16, 32]
    assert count_params(experts) == 4 * (512 + 512) + 1
    experts.up_proj_mask.view(-1)[100:] = 0
    assert count_params(experts) == (4 * 100 + 412) + 4 * 512 + 1
    index, weights = routing()
    assert count_flops(experts, torch.randn(7, 16), index, weights) == 7 * 2 * (2 * 16 * 32)
    swiglu = PADExperts(4, 16, 32, ffn_type="swiglu", activation="silu", scale=False)
    assert count_params(swiglu) == 4 * 3 * 512
    assert count_flops(swiglu, torch.randn(7, 16), top_k_index=index, top_k_weights=weights) == 14 * 3 * 512


# ---- errors and the torch-free options ------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0, 0.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_kappa_outside_the_unit_interval_is_refused_by_name(kappa):
    with pytest.raises(ValueError, match="kappa"):
        iterative_mode_partition(tiny_cnn(), None, None, kappa=kappa, method="random")
    with pytest.raises(ValueError, match="kappa"):
        dynamic_fraction(1, 2, kappa)


@pytest.mark.parametrize("k", [0, -1, 1.5])
def test_fewer_than_one_kernel_is_refused_by_name(k):
    for layer_type in ("condconv", "dyconv", "pad_dyconv"):
        with pytest.raises(ValueError, match="num_kernels"):
            make_conv(layer_type, 4, 4, 3, num_kernels=k)
    with pytest.raises(ValueError, match="num_experts"):
        PADExperts(k, 8, 16)


def test_unknown_names_and_bad_arguments_are_refused_by_name():
    cases = [
        ("layer_type", lambda: make_conv("dynamic_conv", 4, 4, 3)),
        ("dynamic", lambda: PADConv2d(4, 4, 3, dynamic="odconv")),
        ("method", lambda: iterative_mode_partition(tiny_cnn(), None, None, 0.5, method="snip")),
        ("rounds", lambda: iterative_mode_partition(tiny_cnn(), None, None, 0.5, rounds=0, method="random")),
        ("num_batches", lambda: iterative_mode_partition(tiny_cnn(), ce_loss, batches(), 0.5, num_batches=0)),
        ("loss_fn", lambda: iterative_mode_partition(tiny_cnn(), None, None, 0.5)),
        ("batches", lambda: iterative_mode_partition(tiny_cnn(), ce_loss, iter(batches(1)), 0.5, rounds=2)),
        ("ffn_type", lambda: PADExperts(4, 8, 16, ffn_type="moe")),
        ("activation", lambda: PADExperts(4, 8, 16, activation="tanh")),
        ("groups", lambda: DYConv2d(4, 6, 3, groups=4)),
        ("temperature", lambda: DYConv2d(4, 6, 3, temperature=0)),
        ("epoch", lambda: dyconv_temperature(-1)),
        ("partially dynamic", lambda: model_partitions(nn.Conv2d(4, 4, 3))),
    ]
    for name, make in cases:
        with pytest.raises(ValueError, match=name):
            make()
    assert target_count(0.3, 10) == 3 and target_count(1e-6, 10) == 1


def test_options_import_without_torch():
    code = "import sys, moelab.dynamic as d; d.LAYER_TYPES; d.check_kappa(0.5); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
