"""moelab.adapters data + classification loop (SparseAdapter stage): splits by seed, named task errors, a frozen
tiny BERT stays bitwise unchanged, pruned weights stay zero, loss falls on a separable toy task, determinism."""

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from moelab.adapters import (
    FULL_FT,
    TaskDataError,
    TrainConfig,
    adapter_linears,
    mask_of,
    parse_variant,
    raw_weight,
    read_task,
    run_classifier,
    split_examples,
    variant_name,
    write_task,
)
from moelab.adapters.plan import check_section, large_sparse_variants, sweep_runs, table_variants
from moelab.errors import ConfigError
from moelab.report import sparse_adapter as sa_report
from moelab.report.tables import load_published

VOCAB = 32


def tiny_loader(num_labels: int) -> BertForSequenceClassification:
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=16, num_labels=num_labels,
                     hidden_dropout_prob=0.0)  # fmt: skip
    return BertForSequenceClassification(cfg)


def encode(examples):
    ids = torch.tensor([[int(t) for t in ex["text_a"].split()] for ex in examples])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "labels": torch.tensor([ex["label"] for ex in examples])}  # fmt: skip


def toy_splits(n=96, seed=0):
    """Separable: label 1 iff the first token (the pooled one) is 5, else 6; then 3 random filler tokens."""
    gen = torch.Generator().manual_seed(seed)
    exs = []
    for i in range(n):
        fill = torch.randint(10, VOCAB, (3,), generator=gen).tolist()
        label = i % 2
        toks = [5 if label else 6, *fill]  # the label token at the pooled position
        exs.append({"text_a": " ".join(map(str, toks)), "text_b": None, "label": label})
    sp = split_examples(exs, {"train": 64, "dev": 16, "test": 16}, seed=seed, task="toy")
    return {s: [e for e in sp if e["split"] == s] for s in ("train", "dev", "test")}


CFG = TrainConfig(steps=30, batch_size=16, lr=3e-3, full_ft_lr=1e-3, bottleneck=8, eval_batch_size=16, prune_examples=16,
                  synflow_iterations=2, warmup_steps=2)  # fmt: skip


def test_split_is_deterministic_disjoint_and_sized():
    exs = [{"text_a": str(i), "text_b": None, "label": i % 3} for i in range(50)]
    sizes = {"train": 20, "dev": 10, "test": 10}
    a, b = split_examples(exs, sizes, 7), split_examples(exs, sizes, 7)
    assert a == b and split_examples(exs, sizes, 8) != a
    by = {s: {e["text_a"] for e in a if e["split"] == s} for s in sizes}
    assert {s: len(v) for s, v in by.items()} == sizes
    assert not (by["train"] & by["dev"]) and not (by["train"] & by["test"]) and not (by["dev"] & by["test"])
    with pytest.raises(TaskDataError, match="'tiny'.*fewer than"):
        split_examples(exs[:10], sizes, 0, task="tiny")
    with pytest.raises(TaskDataError, match="sizes.dev"):
        split_examples(exs, {"train": 1, "dev": 0, "test": 1}, 0)


def test_task_without_test_split_fails_naming_it(tmp_path):
    path = tmp_path / "rte.jsonl"
    exs = [{"split": s, "text_a": "a", "text_b": "b", "label": 0} for s in ("train", "dev")]
    write_task(path, exs)
    with pytest.raises(TaskDataError, match="task 'rte' has no test split"):
        read_task(path, "rte")
    write_task(path, [*exs, {"split": "test", "text_a": "a", "text_b": None, "label": 1}])
    got = read_task(path, "rte")
    assert [len(got[s]) for s in ("train", "dev", "test")] == [1, 1, 1]
    path.write_text(json.dumps({"split": "test", "text_a": "a", "label": -1}) + "\n")
    with pytest.raises(TaskDataError, match="label -1"):
        read_task(path, "rte")


def test_variant_names_round_trip_and_bad_names():
    for args in (("houlsby",), ("lora", "snip", 0.4), ("houlsby", "synflow", 0.5, 2), ("full",)):
        name = variant_name(*args)
        v = parse_variant(name)
        assert variant_name(v["kind"], v["pruner"], v["sparsity"], v["k"]) == name
    assert variant_name("full") == FULL_FT and parse_variant("pfeiffer_grasp80")["sparsity"] == 0.8
    for bad in ("bottle_dense", "houlsby_obd40", "houlsby_snip100", "houlsby_snip", "houlsby_dense_xk"):
        with pytest.raises(ConfigError, match="adapter run"):
            parse_variant(bad)
    with pytest.raises(ConfigError, match="sparsity"):
        variant_name("houlsby", "snip", 1.0)
    with pytest.raises(ConfigError, match="pruner"):
        variant_name("houlsby", "obd", 0.4)
    with pytest.raises(ConfigError, match="sparse_adapter.steps"):
        TrainConfig.from_section({"steps": 0})


def test_frozen_backbone_bitwise_unchanged_and_pruned_weights_stay_zero():
    splits, seen = toy_splits(), {}

    def loader(n):
        model = tiny_loader(n)
        seen["model"] = model
        seen["before"] = {k: v.clone() for k, v in model.bert.state_dict().items()}
        return model

    out = run_classifier(loader, encode, splits, "houlsby_snip40", CFG, seed=3, progress=False)
    model = seen["model"]
    after = model.bert.state_dict()
    frozen = [k for k in seen["before"] if ".adapter." not in k and "pooler" not in k]
    assert frozen and all(torch.equal(seen["before"][k], after[k]) for k in frozen)
    lins = adapter_linears(model)
    pruned = sum(int((mask_of(m) == 0).sum()) for m in lins.values())
    total = sum(m.weight.numel() for m in lins.values())
    assert pruned == round(0.4 * total) == out["prune"]["total"] - out["prune"]["kept"]
    assert all(bool((raw_weight(m)[mask_of(m) == 0] == 0).all()) for m in lins.values())
    assert out["params"]["adapter_nonzero"] == out["params"]["adapter"] - pruned


@pytest.mark.parametrize("variant", ["houlsby_dense", "lora_magnitude40", FULL_FT])
def test_loss_falls_on_separable_toy(variant):
    out = run_classifier(tiny_loader, encode, toy_splits(), variant, CFG, seed=0, progress=False)
    first, last = sum(out["losses"][:5]) / 5, sum(out["losses"][-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert out["dev_acc"] >= 0.75 and out["test_acc"] >= 0.75


def test_same_seed_same_result_other_seed_differs():
    splits = toy_splits()

    def run(seed):
        return run_classifier(
            tiny_loader, encode, splits, "parallel_random40", CFG, seed=seed, progress=False
        )

    a, b, c = run(1), run(1), run(2)
    assert a["losses"] == b["losses"] and (a["dev_acc"], a["test_acc"]) == (b["dev_acc"], b["test_acc"])
    assert a["losses"] != c["losses"]


def test_large_sparse_run_keeps_the_dense_non_zero_budget():
    splits = toy_splits()
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 1})
    dense = run_classifier(tiny_loader, encode, splits, "pfeiffer_dense", cfg, seed=0, progress=False)
    large = run_classifier(tiny_loader, encode, splits, "pfeiffer_snip50_x2", cfg, seed=0, progress=False)
    assert large["bottleneck"] == 2 * dense["bottleneck"]
    assert large["prune"]["kept"] == dense["params"]["adapter"] - 2 * 8 - 32 * 2  # weights only, per layer


SECTION = {"kinds": ["houlsby", "lora"], "table_pruner": "snip", "table_sparsity": 0.4, "sweep_kind": "houlsby",
           "sweep_pruners": ["random", "snip"], "sweep_sparsities": [0.2, 0.8], "large_sparse_k": [2, 4],
           "large_sparse_pruner": "snip", "tasks": ["sst2", "rte"], "sizes": {"train": 100, "dev": 20, "test": 50}}  # fmt: skip


def test_plan_runs_and_named_config_errors():
    assert table_variants(SECTION) == [
        "houlsby_dense",
        "houlsby_snip40",
        "lora_dense",
        "lora_snip40",
        FULL_FT,
    ]
    assert large_sparse_variants(SECTION) == {
        1: "houlsby_dense",
        2: "houlsby_snip50_x2",
        4: "houlsby_snip75_x4",
    }
    runs = sweep_runs(SECTION)
    assert len(runs) == len(set(runs)) and "houlsby_random80" in runs and runs[-1] == FULL_FT
    check_section(SECTION)
    for bad, match in (({"large_sparse_k": [3]}, "large_sparse_k"), ({"table_sparsity": 0.333}, "whole percent"),
                       ({"sizes": {"train": 200, "dev": 40, "test": 40}}, "'rte'")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            check_section({**SECTION, **bad})


def test_report_verdicts_against_the_seed_spread():
    def rec(accs):
        return {"seeds": [{"test_acc": a, "params": {"trainable": 10, "trainable_nonzero": 6}} for a in accs]}

    runs = {("houlsby_dense", "sst2"): rec([0.70, 0.72, 0.74]), ("houlsby_snip40", "sst2"): rec([0.71, 0.73, 0.75]),
            (FULL_FT, "sst2"): rec([0.90, 0.91, 0.92])}  # fmt: skip
    diff, spread, word = sa_report.compare(runs, "houlsby_snip40", "houlsby_dense", ["sst2"])
    assert word == "within noise" and diff == pytest.approx(1.0) and spread == pytest.approx(2 * 2**0.5)
    assert sa_report.compare(runs, FULL_FT, "houlsby_dense", ["sst2"])[2] == "higher"
    df = sa_report.results_table(runs, ["houlsby_dense", FULL_FT], ["sst2"], load_published("sparse_adapter"),
                                 "glue")  # fmt: skip
    assert df.sst2.round(6).tolist() == [72.0, 91.0] and df.nonzero.tolist() == [6, 6]
    assert (df.published_average == "—").all()


def test_encoder_from_a_local_folder_shaped_like_the_hubs(tmp_path):
    from moelab.adapters.encoder import classifier_loader, materialise_encoder

    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    hub_like = materialise_encoder({"source": "tiny", "tiny": tiny}, tmp_path / "hub_like", seed=0)
    assert (hub_like / "config.json").exists() and (hub_like / "model.safetensors").exists()
    out = materialise_encoder({"source": "pretrained", "name": str(hub_like)}, tmp_path / "encoder")
    model = classifier_loader(out)(3)
    assert model.config.num_labels == 3 and model.config.hidden_size == 16
    with pytest.raises(ConfigError, match="sparse_adapter.encoder.source"):
        materialise_encoder({"source": "gguf"}, tmp_path / "x")
