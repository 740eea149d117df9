"""The construction ablation workflows (targets llama_moe_construction, llama_moe_v2_ablation) on the smoke config."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import copy_workflow, smoke_workdir, snakemake

METHODS = {"random", "sequential", "clustering", "coactivation", "sharing_inner", "sharing_inter"}


def test_construction_is_not_in_the_default_target(tmp_path):
    wf = copy_workflow(tmp_path)
    default = snakemake("-n", "--cores", "2", cwd=wf).stdout
    assert "construct_method" not in default and "llama_moe_table_construction" not in default
    named = snakemake("-n", "--cores", "2", "llama_moe_construction", "llama_moe_v2_ablation", cwd=wf).stdout
    for rule in ("construct_method", "construct_cpt", "construct_eval", "llama_moe_table_construction"):
        assert rule in named
    assert "construct_variant_table" in named and "results/construct/attention/eval_construct.json" in named


def test_bad_ablation_table_fails_naming_the_key(tmp_path):
    wf = copy_workflow(tmp_path)
    bad = wf / "bad.yaml"
    bad.write_text("construct_ablation: {granularity: [sequential, nope]}\n")
    out = snakemake("-n", "--cores", "1", "--configfile", str(bad), cwd=wf, check=False)
    assert out.returncode != 0
    assert "construct_ablation.granularity names unknown run(s) ['nope']" in out.stdout + out.stderr


@pytest.mark.slow
def test_construction_ablation_smoke(tmp_path):
    wf, _ = smoke_workdir(tmp_path)  # CI: the folder of the Slurm smoke DAG
    snakemake(
        "llama_moe_construction",
        "llama_moe_v2_ablation",
        "--cores",
        "2",
        "--configfile",
        "config/smoke.yaml",
        cwd=wf,
    )
    paper = wf / "results" / "papers" / "llama_moe"
    table = pd.read_csv(paper / "table_construction.csv")
    assert set(table.method) == METHODS
    assert table.loss_construct.gt(0).all() and table.loss_cpt.gt(0).all()
    assert table.downstream_avg.between(0, 100).all() and table.downstream_construct.between(0, 100).all()
    assert sorted(table.rank_cpt) == sorted(table.loss_cpt.rank(method="min").astype(int))
    row = table.set_index("method")
    assert row.loc["sharing_inter", "experts"] == "1+3" and row.loc["random", "experts"] == "4"
    assert row.loc["sharing_inner", "overlap"] > 0 and row.loc["random", "overlap"] == 0
    md = (paper / "table_construction.md").read_text()
    assert "Random is at least as good" in md and "Our outcome: the finding" in md
    for path in (paper / "table_construction.csv", paper / "fig_construction_loss.png"):
        meta = json.loads(Path(str(path) + ".meta.json").read_text())
        assert meta["inputs"]
    stats = json.loads((wf / "results" / "construct" / "coactivation" / "stats.json").read_text())
    assert stats["exact_cover"] and stats["expert_sizes"][0] == [64] * 4

    configs = pd.read_csv(paper / "table_configurations.csv").set_index("run")
    # smoke: construct.num_experts = 4, so the "random" run (4e top-2) has no published LLaMA-MoE row
    assert configs.published.to_dict() == {
        "random": "not published",
        "random_16e_top4": "57.7",
        "random_16e_top2": "55.5",
    }
    assert configs.loc["random_16e_top2", "delta"] == round(configs.loc["random_16e_top2", "ours"] - 55.5, 1)
    v2 = wf / "results" / "papers" / "llama_moe_v2"
    gran = pd.read_csv(v2 / "table_granularity.csv").set_index("run")
    equal = ["sequential_16e_top4", "sequential_32e_top8", "sequential_64e_top16"]
    assert gran.loc[equal, "active_m"].nunique() == 1  # a quarter of the FFN neurons active in each
    assert gran.loc["sequential_1s7e_top1", "mlp"] == "1+7e top-1"
    mva = pd.read_csv(v2 / "table_mlp_vs_attention.csv").set_index("run")
    assert mva.loc["attention", "mlp"] == "dense" and mva.loc["attention", "attention"] == "2e top-2"
    assert (
        mva.loc["attention", "active_m"] == mva.loc["attention", "params_m"]
    )  # top-2 of 2 groups: all active
    assert "Our outcome: lowest loss after CPT" in (v2 / "table_mlp_vs_attention.md").read_text()
