"""The CPT data ablation workflow (target llama_moe_sampling) on the smoke config: every strategy and filter."""

import json
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import copy_workflow, smoke_workdir, snakemake

SAMPLING = [
    "uniform",
    "llama_mix",
    "sheared_mix",
    "proportional",
    "dynamic_sheared_llama",
    "dynamic_sheared_llama_paper",
    "dynamic_uniform_init",
]


def test_the_ablation_is_not_in_the_default_target(tmp_path):
    wf = copy_workflow(tmp_path)
    default = snakemake("-n", "--cores", "2", cwd=wf).stdout
    assert "cpt_ablation_train" not in default and "filter_pretrain_data" not in default
    named = snakemake("-n", "--cores", "2", "llama_moe_sampling", cwd=wf).stdout
    for rule in ("cpt_ablation_train", "cpt_ablation_eval", "cpt_ablation_table", "filter_pretrain_data"):
        assert f"rule {rule}:" in named
    assert "results/cpt_ablation/sheared_mix/seed1228/eval.json" in named  # a headline run: both seeds
    assert "results/cpt_ablation/uniform/seed1228" not in named


def test_a_bad_ablation_run_fails_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "bad.yaml").write_text("cpt_ablation: {headline: [sheared_mix, nope]}\n")
    out = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=wf, check=False)
    assert (
        out.returncode != 0
        and "cpt_ablation.headline names unknown run(s) ['nope']" in out.stdout + out.stderr
    )
    assert not (wf / "results").exists()


@pytest.mark.slow
def test_cpt_ablation_smoke(tmp_path):
    wf, _ = smoke_workdir(tmp_path)  # CI: the folder of the Slurm smoke DAG
    snakemake("llama_moe_sampling", "--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    paper = wf / "results" / "papers" / "llama_moe"
    sampling = pd.read_csv(paper / "table_sampling.csv").set_index("run")
    assert list(sampling.index) == SAMPLING
    assert sampling.loc["sheared_mix", "seeds"] == 2 and sampling.loc["uniform", "seeds"] == 1
    assert sampling.loc["sheared_mix", "loss_avg_sd"] >= 0 and sampling.loss_avg.gt(0).all()
    assert sampling.downstream_avg.between(0, 100).all()
    filtering = pd.read_csv(paper / "table_filtering.csv").set_index("run")
    assert list(filtering.index) == ["sheared_mix", "filter_ads", "filter_fluency", "filter_both"]
    md = (paper / "table_sampling.md").read_text()
    assert "Our outcome: static Sheared-LLaMA mix" in md and "nats" in md
    # a dynamic run moves its weights at every round; a static one keeps them
    dyn = pd.read_csv(wf / "results/cpt_ablation/dynamic_sheared_llama/seed1227/rounds.csv")
    static = pd.read_csv(wf / "results/cpt_ablation/uniform/seed1227/rounds.csv")
    assert dyn.groupby("step")["weight"].sum().round(6).eq(1).all()
    assert dyn.groupby("domain")["weight"].nunique().gt(1).any()
    assert static["weight"].round(6).eq(0.25).all()
    for path in (
        paper / "table_sampling.csv",
        paper / "fig_sampling_loss.png",
        paper / "fig_sampling_weights.png",
    ):
        assert path.is_file() and json.loads(Path(f"{path}.meta.json").read_text())["inputs"]
    report = pd.read_csv(wf / "results/filters/both/web.csv")
    assert {"ads", "fluency"} <= set(report["step"].astype(str))  # both = ads, then fluency
    assert not list((wf / "results").glob("cpt_ablation/*/seed*/model"))  # temp(): deleted after scoring
