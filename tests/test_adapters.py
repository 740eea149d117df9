"""moelab.adapters (SparseAdapter, arXiv 2210.04284): adapters on a frozen tiny BERT, W * M masks with one global
threshold, the five pruning-at-initialisation scores against hand-computed values, Large-Sparse budgets."""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from moelab.adapters import (
    ADAPTER_KINDS,
    NONLINEARITIES,
    PRUNERS,
    adapter_linears,
    adapter_parameter_names,
    add_adapters,
    bake_masks,
    check_sparsity,
    full_finetuning,
    global_masks,
    grasp_scores,
    is_masked,
    large_sparse,
    magnitude_scores,
    mask_of,
    mask_summary,
    parameter_counts,
    prune,
    raw_weight,
    snip_scores,
    synflow_scores,
)
from moelab.adapters import modules as adapter_modules

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = 2
HIDDEN = 32
R = 4  # adapter width


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=64,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=3,
    )
    return BertForSequenceClassification(cfg).eval()


def batch(seed: int = 1, n: int = 4, t: int = 8) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (n, t), generator=gen)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 3, (n,), generator=gen),
    }


def adapted(kind: str, bottleneck: int = R, **kw) -> BertForSequenceClassification:
    return add_adapters(tiny_bert(), kind, bottleneck, **kw)


def n_adapters(kind: str) -> int:
    """Bottleneck adapters (or LoRA-adapted Linears) in the tiny BERT."""
    return {"houlsby": 2 * LAYERS, "pfeiffer": LAYERS, "parallel": LAYERS, "lora": 2 * LAYERS}[kind]


# --- adapter modules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_a_zero_up_adapter_leaves_the_frozen_encoder_output_exactly_unchanged(kind):
    base = tiny_bert()
    model = add_adapters(copy.deepcopy(base), kind, R, init="zero_up").eval()
    b = batch()
    b.pop("labels")
    with torch.no_grad():
        assert torch.equal(model(**b).logits, base(**b).logits)


@pytest.mark.parametrize("kind", ("houlsby", "pfeiffer", "parallel"))
def test_a_near_identity_adapter_starts_close_to_but_not_at_the_frozen_encoder(kind):
    base = tiny_bert()
    model = add_adapters(copy.deepcopy(base), kind, R).eval()  # default init: near_identity
    b = batch()
    b.pop("labels")
    with torch.no_grad():
        ours, ref = model(**b).logits, base(**b).logits
    assert not torch.equal(ours, ref)
    torch.testing.assert_close(ours, ref, atol=1e-2, rtol=0)


def _expected_adapter_names(kind: str) -> set[str]:
    names = set()
    for i in range(LAYERS):
        layer = f"bert.encoder.layer.{i}"
        if kind == "lora":
            for proj in ("query", "value"):
                names |= {f"{layer}.attention.self.{proj}.lora_{ab}.default.weight" for ab in "AB"}
            continue
        places = [f"{layer}.output"] + ([f"{layer}.attention.output"] if kind == "houlsby" else [])
        for place in places:
            names |= {f"{place}.adapter.{p}.{wb}" for p in ("down", "up") for wb in ("weight", "bias")}
    return names


HEAD = {"classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"}


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_only_the_adapters_and_the_head_are_trainable(kind):
    model = adapted(kind)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(adapter_parameter_names(model)) == _expected_adapter_names(kind)
    assert trainable == _expected_adapter_names(kind) | HEAD
    no_head = add_adapters(tiny_bert(), kind, R, train_head=False)
    assert {n for n, p in no_head.named_parameters() if p.requires_grad} == _expected_adapter_names(kind)
    assert len(adapter_linears(model)) == 2 * n_adapters(kind)
    counts = parameter_counts(model)
    width = HIDDEN * R
    per_adapter = 2 * width if kind == "lora" else 2 * width + R + HIDDEN
    assert counts["adapter"] == counts["adapter_nonzero"] == n_adapters(kind) * per_adapter
    assert counts["trainable"] == counts["adapter"] + (HIDDEN * HIDDEN + HIDDEN) + (3 * HIDDEN + 3)


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_roberta_takes_the_same_adapters_and_prunes_with_every_pruner(kind):
    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=64,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=24,
        num_labels=3,
    )
    base = RobertaForSequenceClassification(cfg).eval()
    model = add_adapters(copy.deepcopy(base), kind, R, init="zero_up").eval()
    b = batch()
    labels = b.pop("labels")
    with torch.no_grad():
        assert torch.equal(model(**b).logits, base(**b).logits)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n.replace("bert.", "roberta.", 1) for n in _expected_adapter_names(kind)}
    assert trainable == expected | {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    model = add_adapters(copy.deepcopy(base), kind, R, init="near_identity")
    prune(model, "grasp", 0.4, batches=[{**b, "labels": labels}])
    assert mask_summary(adapter_linears(model))["sparsity"] == pytest.approx(0.4, abs=1e-3)


def test_add_adapters_seed_fixes_the_adapters_and_leaves_the_global_rng_alone():
    a, b, c = adapted("houlsby", seed=5), adapted("houlsby", seed=5), adapted("houlsby", seed=6)
    wa = [m.weight for m in adapter_linears(a).values()]
    assert all(torch.equal(x, m.weight) for x, m in zip(wa, adapter_linears(b).values(), strict=True))
    assert not any(torch.equal(x, m.weight) for x, m in zip(wa, adapter_linears(c).values(), strict=True))
    model = tiny_bert()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    add_adapters(model, "pfeiffer", R, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_full_finetuning_trains_every_parameter_and_refuses_an_adapted_model():
    model = full_finetuning(tiny_bert())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="without adapters"):
        full_finetuning(adapted("houlsby"))


def test_the_torch_free_option_names_match_the_code():
    assert tuple(adapter_modules.NONLINEARITIES) == NONLINEARITIES
    import moelab.adapters

    assert all(getattr(moelab.adapters, name) is not None for name in moelab.adapters.__all__)
    code = "import sys; import moelab.adapters as a; a.PRUNERS; "
    code += "a.check_sparsity(0.5); a.large_sparse(4, 2); assert 'torch' not in sys.modules, 'torch imported'"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- masks ----------------------------------------------------------------------------------------------


def _train(model, steps: int = 3, lr: float = 1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.1)
    model.train()
    for s in range(steps):
        opt.zero_grad()
        model(**batch(seed=10 + s)).loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
@pytest.mark.parametrize("sparsity", (0.3, 0.8))
def test_the_mask_keeps_exactly_round_density_n_and_pruned_weights_stay_zero_through_adamw(kind, sparsity):
    model = adapted(kind, init="near_identity")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    info = prune(model, "random", sparsity, seed=3)
    modules = adapter_linears(model)
    total = sum(m.weight.numel() for m in modules.values())
    kept = sum(int(mask_of(m).sum()) for m in modules.values())
    assert info["total"] == total
    assert kept == info["kept"] == round((1 - sparsity) * total) == mask_summary(modules)["kept"]
    before = {n: raw_weight(m).detach().clone() for n, m in modules.items()}
    _train(model)
    moved = 0
    for n, m in modules.items():
        pruned = mask_of(m) == 0
        assert torch.equal(m.weight[pruned], torch.zeros(int(pruned.sum())))  # what the forward sees
        assert torch.equal(raw_weight(m)[pruned], torch.zeros(int(pruned.sum())))  # the trained tensor
        moved += int((raw_weight(m) != before[n])[~pruned].sum())
    assert moved > 0.9 * kept  # the kept weights did train
    for n, p in model.named_parameters():  # the frozen backbone is bitwise unchanged
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    counts = parameter_counts(model)
    assert counts["adapter"] - counts["adapter_nonzero"] == total - kept


def test_one_global_threshold_prunes_a_tensor_of_small_scores_harder():
    scores = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([[10.0, 20.0]])}
    masks, info = global_masks(scores, 0.5)
    assert masks["a"].tolist() == [False, False, False, True]
    assert masks["b"].tolist() == [[True, True]]
    assert info["kept"] == 3 and info["total"] == 6 and info["threshold"] == pytest.approx(0.4)


def test_ties_at_the_threshold_are_broken_at_random_but_reproducibly():
    scores = {"a": torch.zeros(50), "b": torch.zeros(50)}
    m1, _ = global_masks(scores, 0.6, seed=0)
    m2, _ = global_masks(scores, 0.6, seed=0)
    m3, _ = global_masks(scores, 0.6, seed=1)
    assert all(torch.equal(m1[k], m2[k]) for k in scores)
    assert not all(torch.equal(m1[k], m3[k]) for k in scores)
    assert sum(int(m.sum()) for m in m1.values()) == 40
    assert 0 < int(m1["a"].sum()) < 40  # not the first tensor kept whole in index order


def test_baking_the_masks_keeps_the_output_and_the_zeros():
    model = adapted("houlsby")
    prune(model, "magnitude", 0.5)
    b = batch()
    with torch.no_grad():
        before = model(**b).logits
    masked = {n: mask_of(m).clone() for n, m in adapter_linears(model).items()}
    assert bake_masks(model) == len(masked)
    with torch.no_grad():
        torch.testing.assert_close(model(**b).logits, before, atol=0, rtol=0)
    for n, m in adapter_linears(model).items():
        assert not is_masked(m)
        assert torch.equal(m.weight[masked[n] == 0], torch.zeros(int((masked[n] == 0).sum())))


# --- pruning scores on hand-computed toys ------------------------------------------------------------------


def _linear(weight) -> nn.Linear:
    w = torch.tensor(weight, dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return lin


def _toy(w1, w2) -> tuple[nn.Sequential, dict[str, nn.Linear]]:
    l1, l2 = _linear(w1), _linear(w2)
    return nn.Sequential(l1, l2), {"l1": l1, "l2": l2}


def _squared_error(model, b):
    return 0.5 * ((model(b["x"]) - b["t"]) ** 2).mean()


def test_magnitude_scores_keep_the_largest_absolute_weights():
    lin = _linear([[0.1, -5.0, 0.2], [3.0, -0.05, 0.4]])
    model = nn.Sequential(lin)
    assert torch.equal(magnitude_scores({"w": lin})["w"], lin.weight.detach().abs())
    info = prune(model, "magnitude", 0.5, modules={"w": lin})
    assert mask_of(lin).tolist() == [[0, 1, 0], [1, 0, 1]]
    assert info["kept"] == 3
    assert torch.equal(lin.weight, torch.tensor([[0.0, -5.0, 0.0], [3.0, 0.0, 0.4]]))


def test_snip_score_is_abs_gradient_times_weight_on_a_hand_computed_linear_net():
    # y = W2 W1 x, x = [1, 1], t = 0, L = y^2 / 2:  h = W1 x = [3, 7], y = -4, dL/dy = -4,
    # dL/dW2 = dL/dy h^T = [-12, -28], dL/dW1 = (W2^T dL/dy) x^T = [[-4, -4], [4, 4]]
    model, mods = _toy([[1.0, 2.0], [3.0, 4.0]], [[1.0, -1.0]])
    b = {"x": torch.ones(1, 2), "t": torch.zeros(1, 1)}
    scores = snip_scores(model, mods, [b], loss_fn=_squared_error)
    assert scores["l1"].tolist() == [[4.0, 8.0], [12.0, 16.0]]
    assert scores["l2"].tolist() == [[12.0, 28.0]]
    # two batches weighted by their sizes give the gradient of the mean loss over all examples
    two = [{"x": torch.ones(1, 2), "t": torch.zeros(1, 1)}, {"x": torch.ones(3, 2), "t": torch.zeros(3, 1)}]
    assert snip_scores(model, mods, two, loss_fn=_squared_error)["l2"].tolist() == [[12.0, 28.0]]
    prune(model, "snip", 0.65, batches=[b], loss_fn=_squared_error, modules=mods)  # keeps 6 - round(3.9) = 2
    assert mask_of(mods["l1"]).tolist() == [[0, 0], [0, 1]]  # 16 and 28 kept of 4, 8, 12, 16 | 12, 28
    assert mask_of(mods["l2"]).tolist() == [[0, 1]]


def test_grasp_keeps_the_largest_w_times_hg_the_papers_sign():
    # y = w2 w1 (x = 1), t = 5, L = (y - t)^2 / 2 at w1 = 1, w2 = 2:  e = y - t = -3,
    # g = [e w2, e w1] = [-6, -3];  H = [[w2^2, 2 w1 w2 - t], [2 w1 w2 - t, w1^2]] = [[4, -1], [-1, 1]],
    # Hg = [-21, 3], w * Hg = [-21, 6].  GraSP (Wang et al. 2020, eq. 8) removes the largest S(-w) = -w * Hg
    # = [21, -6], i.e. w1: our keep-score w * Hg keeps w2. |w * Hg| (magnitude of the score) would keep w1.
    model, mods = _toy([[1.0]], [[2.0]])
    b = {"x": torch.ones(1, 1), "t": torch.full((1, 1), 5.0)}
    scores = grasp_scores(model, mods, [b], loss_fn=_squared_error)
    assert scores["l1"].item() == pytest.approx(-21.0)
    assert scores["l2"].item() == pytest.approx(6.0)
    prune(model, "grasp", 0.5, batches=[b], loss_fn=_squared_error, modules=mods)
    assert mask_of(mods["l1"]).item() == 0 and mask_of(mods["l2"]).item() == 1


def test_synflow_scores_the_path_norm_of_the_absolute_network_and_restores_the_weights():
    # R = 1^T |W2| |W1| 1 with |W1| = [[1, 2], [3, 4]], |W2| = [[1, 2]]: R = 1 * 3 + 2 * 7 = 17,
    # score(W1_ji) = |W2_j| |W1_ji| = [[1, 2], [6, 8]], score(W2_j) = (row sum of |W1|)_j |W2_j| = [3, 14]
    w1, w2 = [[1.0, -2.0], [3.0, 4.0]], [[-1.0, 2.0]]
    model, mods = _toy(w1, w2)
    model.insert(1, nn.ReLU())
    scores = synflow_scores(model, mods, forward_fn=lambda m: m(torch.ones(1, 2, dtype=torch.float64)))
    assert scores["l1"].tolist() == [[1.0, 2.0], [6.0, 8.0]]
    assert scores["l2"].tolist() == [[3.0, 14.0]]
    assert mods["l1"].weight.tolist() == w1 and mods["l2"].weight.tolist() == w2  # signs restored
    assert mods["l1"].weight.dtype == torch.float32


def test_synflow_is_data_free_and_positive_on_every_adapter_weight():
    for kind in ADAPTER_KINDS:
        model = adapted(kind, init="near_identity")
        scores = synflow_scores(model, adapter_linears(model))
        assert all(bool((s > 0).all()) for s in scores.values()), kind
    a, b = adapted("houlsby"), adapted("houlsby")
    info = prune(a, "synflow", 0.6, batches=[batch(seed=1)], iterations=4)
    prune(b, "synflow", 0.6, batches=[batch(seed=2, n=7)], iterations=4)
    for (n, ma), mb in zip(adapter_linears(a).items(), adapter_linears(b).values(), strict=True):
        assert torch.equal(mask_of(ma), mask_of(mb)), n
    total = info["total"]
    assert info["kept"] == total - round(0.6 * total)


def test_data_pruners_run_on_the_encoder_deterministically_and_restore_its_state():
    for pruner in PRUNERS:
        masks = []
        for _ in range(2):
            model = adapted("houlsby").train()
            attn = model.config._attn_implementation
            info = prune(model, pruner, 0.4, batches=[batch(), batch(seed=2, n=2)], iterations=3, seed=7)
            assert model.training and model.config._attn_implementation == attn
            assert info["kept"] == info["total"] - round(0.4 * info["total"]), pruner
            masks.append([mask_of(m) for m in adapter_linears(model).values()])
        assert all(torch.equal(x, y) for x, y in zip(*masks, strict=True)), pruner


@pytest.mark.parametrize("pruner", ("snip", "grasp", "synflow"))
def test_a_zero_up_lora_scores_zero_and_says_so(pruner, caplog):
    model = adapted("lora")  # LoRA's default init: zero_up (B = 0)
    info = prune(model, pruner, 0.4, batches=[batch()], iterations=2)
    # B = 0 scores zero under every pruner; A gets no gradient (SNIP) and no flow (SynFlow), but GraSP's Hg
    # couples A to B's non-zero gradient (H_AB g_B), so A keeps a GraSP score
    zero_tensors = {"snip": 2, "grasp": 1, "synflow": 2}[pruner] * n_adapters("lora")
    assert info["zero_score_tensors"] == zero_tensors
    assert "init='near_identity'" in caplog.text
    assert (
        prune(adapted("lora", init="near_identity"), pruner, 0.4, batches=[batch()], iterations=2)[
            "zero_score_tensors"
        ]
        == 0
    )


# --- Large-Sparse ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
@pytest.mark.parametrize("k", (2, 4))
def test_large_sparse_holds_the_dense_adapters_number_of_nonzero_weights(kind, k):
    width, sparsity = large_sparse(R, k)
    assert (width, sparsity) == (R * k, pytest.approx(1 - 1 / k))
    dense = adapted(kind, init="near_identity")
    wide = adapted(kind, width, init="near_identity")
    prune(wide, "snip", sparsity, batches=[batch()])
    dense_weights = sum(m.weight.numel() for m in adapter_linears(dense).values())
    assert mask_summary(adapter_linears(wide))["kept"] == dense_weights
    extra_biases = 0 if kind == "lora" else (k - 1) * R * n_adapters(kind)  # down biases, never pruned
    cd, cw = parameter_counts(dense), parameter_counts(wide)
    assert cw["adapter_nonzero"] - cd["adapter_nonzero"] == extra_biases
    assert cw["trainable_nonzero"] - cd["trainable_nonzero"] == extra_biases
    assert cw["trainable"] > cd["trainable"]


# --- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", (-0.1, 1.0, 1.5, math.nan, True, "0.4", None))
def test_a_sparsity_outside_0_1_fails_naming_the_argument(bad):
    with pytest.raises(ValueError, match="sparsity"):
        check_sparsity(bad)
    with pytest.raises(ValueError, match="sparsity"):
        prune(adapted("pfeiffer"), "random", bad)
    with pytest.raises(ValueError, match="sparsity"):
        global_masks({"a": torch.ones(3)}, bad)


@pytest.mark.parametrize(
    ("call", "key"),
    [
        (lambda: prune(adapted("pfeiffer"), "obd", 0.5), "pruner"),
        (lambda: prune(adapted("pfeiffer"), "SNIP", 0.5), "pruner"),
        (lambda: prune(adapted("pfeiffer"), "synflow", 0.5, iterations=0), "iterations"),
        (lambda: prune(adapted("pfeiffer"), "snip", 0.5), "batches"),
        (lambda: prune(tiny_bert(), "random", 0.5), "add_adapters"),
        (lambda: adapted("compacter"), "kind"),
        (lambda: adapted("houlsby", 0), "bottleneck"),
        (lambda: adapted("houlsby", 2.0), "bottleneck"),
        (lambda: adapted("houlsby", init="xavier"), "init"),
        (lambda: adapted("houlsby", nonlinearity="swish"), "nonlinearity"),
        (lambda: adapted("parallel", scale=0), "scale"),
        (lambda: adapted("lora", lora_targets=("q_proj",)), "lora_targets"),
        (lambda: large_sparse(R, 0), "k"),
        (lambda: large_sparse(0, 2), "bottleneck"),
        (lambda: add_adapters(nn.Sequential(nn.Linear(2, 2)), "houlsby", R), "encoder.layer"),
        (lambda: add_adapters(adapted("houlsby"), "houlsby", R), "already has"),
    ],
)
def test_bad_input_fails_naming_the_argument(call, key):
    with pytest.raises(ValueError, match=key):
        call()


def test_pruning_twice_is_refused():
    model = adapted("houlsby")
    prune(model, "random", 0.5)
    with pytest.raises(ValueError, match="pruned already"):
        prune(model, "magnitude", 0.5)
    fresh = adapted("houlsby")
    prune(fresh, "random", 0.0)  # all-ones masks: nothing pruned, so a real pruning may follow
    prune(fresh, "magnitude", 0.5)
