"""Expert Drop and Layer Drop (arXiv 2406.02500, Expert Trimming) on tiny seeded LlamaMoE models."""

import pytest
import torch
from conftest import TINY
from torch import nn

from moelab.compress.expert_drop import choose_experts, drop_experts, expert_drop, expert_routing_mass
from moelab.compress.layer_drop import choose_layers, layer_drop, layer_drop_scores
from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM

VOCAB = 64


def tiny_moe(seed: int = 0, **moe) -> LlamaMoEForCausalLM:
    """Seeded LlamaMoE of shape TINY (hidden 64, width 128), 8 experts of 16 neurons, top-2 by default."""
    torch.manual_seed(seed)
    cfg = LlamaMoEConfig(
        **{**TINY, "vocab_size": VOCAB, "num_experts": 8, "top_k": 2, "max_position_embeddings": 64, **moe}
    )
    model = LlamaMoEForCausalLM(cfg).eval()
    with torch.no_grad():  # experts large enough that a wrong expert visibly changes the logits
        for layer in model.model.layers:
            if hasattr(layer.mlp, "experts"):
                for p in layer.mlp.experts.parameters():
                    p.normal_(0.0, 0.2)
    return model


def force_routing(model, favoured: dict[int, list[int]]) -> None:
    """Route every token only among `favoured[l]` in MoE layer l: the others get logits ~ -6000.

    Embedding dim 0 is set to +10 (others ~N(0, 1)) and no attention or FFN output writes to dim 0, so
    LN(x)[0] > 0 for every token at every layer; a disfavoured expert's row of the last gate Linear is
    -1000 * e_0 (the "mlp" gate's first Linear maps dim 0 to tanh ~ 1 in hidden unit 0). Favoured experts
    keep random N(0, 1) rows: their routing still varies from token to token.
    """
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.normal_(0.0, 1.0)
        emb[:, 0] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.experts.down_proj[0] = 0.0
            if layer.mlp.shared_experts is not None:
                layer.mlp.shared_experts.down_proj.weight[0] = 0.0
        for i, fav in favoured.items():
            gate = model.model.layers[i].mlp.router.gate_network
            last = gate if isinstance(gate, nn.Linear) else gate[-1]
            last.weight.normal_(0.0, 1.0)
            if not isinstance(gate, nn.Linear):
                gate[0].weight[0] = 0.0
                gate[0].weight[0, 0] = 10.0
            for e in range(last.weight.shape[0]):
                if e not in fav:
                    last.weight[e] = 0.0
                    last.weight[e, 0] = -1000.0


def calib(seed: int = 1, batch: int = 3, length: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, VOCAB, (batch, length), generator=g)} for _ in range(2)]


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


# ---- Expert Drop: importance and selection ---------------------------------------------------------------


def test_routing_mass_sums_to_tokens_and_ignores_padding():
    model = tiny_moe(router_type="softmax_topk", gate_network="linear")
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding: the real tokens' logits do not depend on it (causal)
    padded = expert_routing_mass(model, [{"input_ids": ids, "attention_mask": mask}])
    real = expert_routing_mass(model, [{"input_ids": ids[:1]}, {"input_ids": ids[1:, :6]}])
    noisy = tiny_moe(router_type="noisy_topk", gate_network="mlp")
    clean = expert_routing_mass(noisy, calib())
    noisy.train()  # scored in eval mode (no router noise), training mode restored
    assert all(torch.equal(m, clean[i]) for i, m in expert_routing_mass(noisy, calib()).items())
    assert noisy.training
    for i in (0, 1):
        assert padded[i].shape == (8,)
        assert float(padded[i].sum()) == pytest.approx(16.0, abs=1e-9)  # 10 + 6 real tokens
        torch.testing.assert_close(padded[i], real[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("gate_network", ["linear", "mlp"])
def test_layer_wise_keeps_the_favoured_experts(gate_network):
    model = tiny_moe(router_type="softmax_topk", gate_network=gate_network)
    favoured = {0: [1, 3, 4, 6], 1: [0, 2, 5, 7]}
    force_routing(model, favoured)
    masses = expert_routing_mass(model, calib())
    for i, fav in favoured.items():
        others = [e for e in range(8) if e not in fav]
        assert float(masses[i][fav].min()) > 0.1 and float(masses[i][others].max()) < 1e-6
    report = expert_drop(model, calib(), keep=4, mode="layer_wise")
    assert {i: r["kept"] for i, r in report["layers"].items()} == favoured
    assert report["layers"][0]["dropped"] == [0, 2, 5, 7]
    assert report["tokens"] == 72
    assert model.config.num_experts_per_layer == [4, 4]


def test_global_mode_keeps_different_counts_per_layer():
    model = tiny_moe(router_type="noisy_topk", gate_network="mlp")
    favoured = {0: [0, 1, 2, 3, 4, 5], 1: [3, 6]}  # 8 experts kept in total = keep 4 * 2 layers
    force_routing(model, favoured)
    report = expert_drop(model, calib(), keep=4, mode="global")
    assert {i: r["kept"] for i, r in report["layers"].items()} == favoured
    assert model.config.num_experts_per_layer == [6, 2]
    assert [m.experts.num_experts for m in (model.model.layers[0].mlp, model.model.layers[1].mlp)] == [6, 2]
    layer_wise = choose_experts(expert_routing_mass(tiny_moe(), calib()), 4, "layer_wise", top_k=2)
    assert [len(k) for k in layer_wise.values()] == [4, 4]


def test_global_mode_normalises_per_layer_and_clamps_at_top_k():
    masses = {0: torch.tensor([0.4, 0.3, 0.2, 0.1]), 1: torch.tensor([0.97, 0.02, 0.006, 0.004]) * 100}
    # ranked on raw mass layer 1 would keep everything; on shares the global top 4 would leave layer 1 one
    # expert (< top_k = 2): the floor keeps each layer's top 2, the rest of the budget goes globally.
    assert choose_experts(masses, 2, "global", top_k=2) == {0: [0, 1], 1: [0, 1]}
    assert choose_experts(masses, 3, "global", top_k=2) == {0: [0, 1, 2, 3], 1: [0, 1]}
    assert choose_experts(masses, 3, "global", top_k=1) == {0: [0, 1, 2, 3], 1: [0, 1]}
    assert choose_experts(masses, 2, "global", top_k=1) == {0: [0, 1, 2], 1: [0]}
    assert choose_experts(masses, 3, "layer_wise", top_k=2) == {0: [0, 1, 2], 1: [0, 1, 2]}


# ---- Expert Drop: the dropped model ----------------------------------------------------------------------

ROUTERS = [
    dict(router_type="softmax_topk", gate_network="linear", num_shared_experts=1),
    dict(router_type="noisy_topk", gate_network="mlp"),
    dict(router_type="switch_top1", gate_network="linear", top_k=1),
]


@pytest.mark.parametrize("moe", ROUTERS, ids=lambda m: m["router_type"])
def test_dropped_model_equals_parent_when_routing_avoids_dropped_experts(moe):
    parent = tiny_moe(**moe)
    favoured = {0: [1, 2, 5, 6], 1: [0, 3, 4, 7]}
    force_routing(parent, favoured)
    child = tiny_moe(**moe)
    child.load_state_dict(parent.state_dict())
    drop_experts(child, favoured)
    ids = calib(seed=5)[0]["input_ids"]
    torch.testing.assert_close(logits(child, ids), logits(parent, ids), atol=1e-5, rtol=0)

    p_sd, c_sd = parent.state_dict(), child.state_dict()
    for name, value in c_sd.items():  # everything outside routed experts and router rows is bitwise equal
        if ".mlp.experts." not in name and ".mlp.router." not in name:
            assert torch.equal(value, p_sd[name]), name
    for i, kept in favoured.items():
        pb, cb = parent.model.layers[i].mlp, child.model.layers[i].mlp
        for j, e in enumerate(kept):
            for proj in ("gate_proj", "up_proj"):
                assert torch.equal(getattr(cb.experts, proj)[cb.experts.expert_slice(j)],
                                   getattr(pb.experts, proj)[pb.experts.expert_slice(e)])  # fmt: skip
            assert torch.equal(cb.experts.down_proj[:, cb.experts.expert_slice(j)],
                               pb.experts.down_proj[:, pb.experts.expert_slice(e)])  # fmt: skip
        p_gate, c_gate = pb.router.gate_network, cb.router.gate_network
        p_last = p_gate if isinstance(p_gate, nn.Linear) else p_gate[-1]
        c_last = c_gate if isinstance(c_gate, nn.Linear) else c_gate[-1]
        assert torch.equal(c_last.weight, p_last.weight[kept])
        if not isinstance(p_gate, nn.Linear):  # the MLP gate keeps its hidden width 8
            assert torch.equal(c_gate[0].weight, p_gate[0].weight) and c_last.weight.shape == (4, 8)
        if hasattr(pb.router, "weight_noise"):
            assert torch.equal(cb.router.weight_noise.weight, pb.router.weight_noise.weight[kept])
        assert cb.router.num_experts == 4
        assert cb.score_scale_factor == pb.score_scale_factor  # not re-scaled to 4 / top_k
        if pb.shared_experts is not None:
            assert torch.equal(cb.shared_experts.down_proj.weight, pb.shared_experts.down_proj.weight)

    # the check can fail: keeping one disfavoured expert instead of a favoured one changes the output
    wrong = tiny_moe(**moe)
    wrong.load_state_dict(parent.state_dict())
    drop_experts(wrong, {0: [0, 2, 5, 6], 1: favoured[1]})
    assert (logits(wrong, ids) - logits(parent, ids)).abs().max() > 1e-3


def test_scale_factor_is_pinned_to_the_parent():
    model = tiny_moe()  # score_scale_factor None -> N_l / top_k = 8 / 2 = 4
    drop_experts(model, {0: [0, 1, 2], 1: [0, 1, 2, 3, 4, 5]})
    assert model.config.score_scale_factor == [4.0, 4.0]
    assert [model.config.layer_score_scale_factor(i) for i in (0, 1)] == [4.0, 4.0]
    assert model.config.layer_expert_sizes(0) == [16, 16, 16] and model.config.gate_hidden_sizes == [8, 8]


@pytest.mark.parametrize(
    "moe",
    [
        dict(router_type="noisy_topk", gate_network="mlp"),
        dict(router_type="softmax_topk", gate_network="linear", num_shared_experts=1),
        dict(router_type="random", gate_network="linear"),
        dict(router_type="uniform", gate_network="mlp", mlp_layer_types=["dense", "moe"]),
    ],
    ids=lambda m: m["router_type"],
)
def test_dropped_model_round_trips_and_generates(moe, tmp_path):
    model = tiny_moe(**moe)
    moe_layers = model.config.moe_layer_indices
    keep_map = dict(zip(moe_layers, [[7, 0, 3, 5, 2], [6, 1]], strict=False))  # unequal counts per layer
    drop_experts(model, keep_map)
    counts = [len(keep_map[i]) for i in moe_layers]
    assert [model.config.layer_num_experts(i) for i in moe_layers] == counts
    model.save_pretrained(tmp_path)
    loaded = LlamaMoEForCausalLM.from_pretrained(tmp_path).eval()
    assert [loaded.config.layer_num_experts(i) for i in loaded.config.moe_layer_indices] == counts
    assert loaded.config.expert_sizes[moe_layers[0]] == [16] * 5
    ids = calib(seed=7)[0]["input_ids"]
    assert torch.equal(logits(loaded, ids), logits(model, ids))
    prompt = ids[:1, :5]
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    out = loaded.generate(prompt, **gen)
    assert out.shape == (1, 9)
    assert torch.equal(out, model.generate(prompt, **gen))


# ---- Layer Drop ------------------------------------------------------------------------------------------


def test_zero_ffn_scores_exactly_one_and_is_dropped_first(tmp_path):
    model = tiny_moe(num_hidden_layers=3, router_type="softmax_topk", gate_network="linear")
    with torch.no_grad():
        model.model.layers[1].mlp.experts.down_proj.zero_()  # f = 0 in layer 1
    batches = calib()
    scores = layer_drop_scores(model, batches)
    assert scores[1] == 1.0
    assert max(scores[0], scores[2]) < 0.999
    ids = calib(seed=9)[0]["input_ids"]
    before = logits(model, ids)
    report = layer_drop(model, batches, n_drop=1)
    assert report["dropped"] == [1] and report["rounds"][0][1] == 1.0
    assert model.config.mlp_layer_types == ["moe", "none", "moe"]
    assert model.model.layers[1].mlp is None and model.model.layers[1].post_attention_layernorm is None
    assert torch.equal(logits(model, ids), before)
    model.save_pretrained(tmp_path)
    loaded = LlamaMoEForCausalLM.from_pretrained(tmp_path).eval()
    assert not [k for k in loaded.state_dict() if k.startswith("model.layers.1.") and "self_attn" not in k
                and "input_layernorm" not in k]  # fmt: skip
    assert "model.layers.1.self_attn.q_proj.weight" in loaded.state_dict()
    assert torch.equal(logits(loaded, ids), before)
    assert loaded.generate(ids[:1, :4], max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 7)
    assert loaded.config.moe_layer_indices == [0, 2]


def test_iterative_equals_one_shot_when_the_first_drop_is_a_zero_ffn():
    """Dropping an FFN with f = 0 leaves every later input unchanged, so re-scoring gives the same scores."""
    model = tiny_moe(num_hidden_layers=4, router_type="softmax_topk", gate_network="linear")
    with torch.no_grad():
        model.model.layers[2].mlp.experts.down_proj.zero_()
    twin = tiny_moe(num_hidden_layers=4, router_type="softmax_topk", gate_network="linear")
    twin.load_state_dict(model.state_dict())
    one_shot = layer_drop(model, calib(), n_drop=2)
    iterative = layer_drop(twin, calib(), n_drop=2, iterative=True)
    assert iterative["order"][0] == 2 and one_shot["dropped"] == iterative["dropped"]
    first, second = iterative["rounds"]
    assert second == {i: s for i, s in first.items() if i != 2}


def scaled_stream_model() -> LlamaMoEForCausalLM:
    """3 layers, attention output zeroed: layer 0 (MoE) adds a moderate f, layer 1 (dense) multiplies the
    stream by 10 (f = 9 x on the calibration tokens, solved exactly for its down_proj: cos = 1), layer 2 (MoE)
    adds a large f that looks small next to the 10x stream, and large once layer 1 is gone."""
    model = tiny_moe(num_hidden_layers=3, router_type="softmax_topk", gate_network="linear",
                     mlp_layer_types=["moe", "dense", "moe"])  # fmt: skip
    layers = model.model.layers
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
        for layer in layers:
            layer.self_attn.o_proj.weight.zero_()
        layers[0].mlp.experts.down_proj.mul_(0.5)
        layers[2].mlp.experts.down_proj.mul_(4.0)
        ids = calib_ids()
        x = model.model.embed_tokens(ids)
        x = x + layers[0].mlp(layers[0].post_attention_layernorm(x))[0]  # stream entering layer 1's FFN
        mlp, y = layers[1].mlp, layers[1].post_attention_layernorm(x)
        h = (mlp.act_fn(mlp.gate_proj(y)) * mlp.up_proj(y)).reshape(-1, 128).double()  # [tokens, I]
        mlp.down_proj.weight.copy_((torch.linalg.pinv(h) @ (9.0 * x.reshape(-1, 64).double())).t())
    return model


def calib_ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(3))


def test_iterative_differs_from_one_shot_when_a_drop_rescales_the_stream():
    batches = [{"input_ids": calib_ids()}]
    model = scaled_stream_model()
    scores = layer_drop_scores(model, batches, layer_types=("moe", "dense"))
    assert scores[1] == pytest.approx(1.0, abs=1e-6)
    assert scores[2] > scores[0]  # one-shot: layer 2 looks redundant next to the 10x stream
    one_shot = layer_drop(scaled_stream_model(), batches, 2, layer_types=("moe", "dense"))
    iterative = layer_drop(model, batches, 2, layer_types=("moe", "dense"), iterative=True)
    assert one_shot["dropped"] == [1, 2]
    assert iterative["order"] == [1, 0]
    assert iterative["rounds"][1][2] < iterative["rounds"][1][0]
    assert model.config.mlp_layer_types == ["none", "none", "moe"]


def test_layer_drop_default_scores_moe_layers_only():
    model = tiny_moe(num_hidden_layers=3, mlp_layer_types=["dense", "moe", "moe"])
    assert sorted(layer_drop_scores(model, calib())) == [1, 2]
    assert sorted(layer_drop_scores(model, calib(), layer_types=("moe", "dense"))) == [0, 1, 2]


# ---- bad input -------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_parameter():
    masses = {0: torch.rand(8), 1: torch.rand(8)}
    for keep, mode in [(1, "layer_wise"), (9, "layer_wise"), (1, "global"), (9, "global")]:
        with pytest.raises(ValueError, match="keep="):
            choose_experts(masses, keep, mode, top_k=2)
    with pytest.raises(ValueError, match="mode="):
        choose_experts(masses, 4, "per_layer", top_k=2)
    model = tiny_moe()
    with pytest.raises(ValueError, match="keep="):
        expert_drop(model, calib(), keep=1, mode="global")
    with pytest.raises(ValueError, match="mode="):
        expert_drop(model, calib(), keep=4, mode="random")
    with pytest.raises(ValueError, match="keep_map"):
        drop_experts(model, {0: [0]})
    assert model.config.num_experts_per_layer is None  # nothing was changed by the failed calls
    for n_drop in (-1, 2):
        with pytest.raises(ValueError, match="n_drop="):
            layer_drop(model, calib(), n_drop=n_drop)
        with pytest.raises(ValueError, match="n_drop="):
            choose_layers({0: 0.5, 1: 0.7}, n_drop)
    with pytest.raises(ValueError, match="layer_types="):
        layer_drop(model, calib(), n_drop=1, layer_types=("attention",))
    assert model.config.mlp_layer_types is None


def test_model_changes_keep_the_default_layout():
    """gate_hidden_sizes None keeps the MLP gate N x N; a "none" layer is not Mixtral-exportable."""
    from moelab.models.export_mixtral import mixtral_export_problems

    model = tiny_moe()
    gate = model.model.layers[0].mlp.router.gate_network
    assert gate[0].weight.shape == (8, 64) and gate[-1].weight.shape == (8, 8)
    cfg = LlamaMoEConfig(
        **TINY, mlp_layer_types=["moe", "none"], router_type="softmax_topk", gate_network="linear"
    )
    assert cfg.moe_layer_indices == [0] and cfg.dense_layer_indices == []
    assert any("Layer Drop" in p for p in mixtral_export_problems(cfg))
    with pytest.raises(ValueError, match="gate_hidden_sizes"):
        LlamaMoEConfig(**TINY, gate_hidden_sizes=[0, 4])


def test_layer_drop_scores_ignore_padding():
    model = tiny_moe(num_hidden_layers=3)
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding (causal: the real tokens do not see it)
    padded = layer_drop_scores(model, [{"input_ids": ids, "attention_mask": mask}])
    real = layer_drop_scores(model, [{"input_ids": ids[:1]}, {"input_ids": ids[1:, :6]}])
    assert padded == pytest.approx(real, abs=1e-6)
    assert padded != pytest.approx(layer_drop_scores(model, [{"input_ids": ids}]), abs=1e-6)
