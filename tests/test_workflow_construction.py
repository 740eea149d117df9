"""The expert-construction ablation workflow (target llama_moe_construction) on the smoke config."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import copy_workflow, snakemake

METHODS = {"random", "sequential", "clustering", "coactivation", "sharing_inner", "sharing_inter"}


def test_construction_is_not_in_the_default_target(tmp_path):
    wf = copy_workflow(tmp_path)
    default = snakemake("-n", "--cores", "2", cwd=wf).stdout
    assert "construct_method" not in default and "llama_moe_table_construction" not in default
    named = snakemake("-n", "--cores", "2", "llama_moe_construction", cwd=wf).stdout
    for rule in ("construct_method", "construct_cpt", "construct_eval", "llama_moe_table_construction"):
        assert rule in named


@pytest.mark.slow
def test_construction_ablation_smoke(tmp_path):
    wf = copy_workflow(tmp_path)
    snakemake("llama_moe_construction", "--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    paper = wf / "results" / "papers" / "llama_moe"
    table = pd.read_csv(paper / "table_construction.csv")
    assert set(table.method) == METHODS
    assert table.loss_construct.gt(0).all() and table.loss_cpt.gt(0).all()
    assert table.downstream_avg.between(0, 100).all()
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
