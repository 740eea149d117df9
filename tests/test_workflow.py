"""The Snakemake workflow: lint, dry runs of every config, and the whole smoke DAG end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "config", "rules", "scripts", "report", "profiles", "envs")


def snakemake(*args, cwd=ROOT, check=True):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def copy_workflow(dest: Path) -> Path:
    for name in WORKFLOW_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def smoke_workdir(tmp_path: Path) -> tuple[Path, bool]:
    """(workflow folder, whether its smoke DAG already ran): MOELAB_SMOKE_WORKDIR when set (.ci/slurm.sh's
    smoke_tests phase points it at the folder its Slurm smoke phase built, so CI builds the smoke DAG once and each
    smoke workflow test only runs its own targets there), else a fresh copy of the workflow under ``tmp_path``."""
    done = os.environ.get("MOELAB_SMOKE_WORKDIR")
    return (Path(done), True) if done else (copy_workflow(tmp_path), False)


@pytest.mark.parametrize("configfile", [None, "config/smoke.yaml"])
def test_dry_run(configfile, tmp_path):
    wf = copy_workflow(tmp_path)
    args = ["-n", "--cores", "2"] + (["--configfile", configfile] if configfile else [])
    out = snakemake(*args, cwd=wf).stdout
    for rule in (
        "download_model",
        "construct",
        "pretrain",
        "sft",
        "compress",
        "evaluate",
        "llama_moe_table_main",
    ):
        assert rule in out


def test_lint_clean():
    proc = snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bad_config_fails_naming_the_key(tmp_path):
    wf = copy_workflow(tmp_path)
    proc = snakemake("-n", "--config", "seed=-1", cwd=wf, check=False)
    assert proc.returncode != 0 and "seed" in proc.stdout + proc.stderr


def test_missing_model_file_fails_and_leaves_no_output(tmp_path):
    wf = copy_workflow(tmp_path)
    (wf / "bad.yaml").write_text("model: {gguf_file: nope.gguf}\n")
    proc = snakemake(
        "resources/models/dense", "--cores", "1", "--configfile", "bad.yaml", cwd=wf, check=False
    )
    assert proc.returncode != 0  # caught when the DAG is built (moelab.model_facts), before the download job
    assert "model.gguf_file" in proc.stdout + proc.stderr and "nope.gguf" in proc.stdout + proc.stderr
    assert not (wf / "logs" / "download" / "model.log").exists()
    assert not (wf / "resources" / "models" / "dense").exists()
    assert not (wf / "resources" / "models" / "dense.tmp").exists()


@pytest.mark.slow
def test_smoke_workflow_end_to_end(tmp_path):
    """The smoke DAG (`all`), then every MoE-SFT mixture strategy (target moe_sft_baselines) and LLaMA-MoE v2's
    post-training (target llama_moe_v2) in the same folder.

    With MOELAB_SMOKE_WORKDIR set to a workflow copy whose smoke DAG already ran (e.g. the one .ci/slurm.sh's smoke
    phase leaves with MOELAB_SLURM_KEEP=1), the checks run on that folder instead of running the DAG again.
    """
    wf, done = smoke_workdir(tmp_path)
    if not done:
        snakemake("--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    check_moe_sft_mixtures(wf)
    check_post_training(wf)
    check_compression(wf)
    paper = wf / "results" / "papers" / "llama_moe"
    table = pd.read_csv(paper / "table_main.csv")
    assert set(table.ours_from.dropna()) == {
        "dense/llama_moe",
        "moe/llama_moe",
        "pretrain/llama_moe",
        "pretrain_active/llama_moe",
    }
    cpt = table[(table.row == "ours: MoE after CPT") & (table.column == "arc_easy")].iloc[0]
    assert cpt.published == 65.3 and cpt.delta == round(float(cpt.ours) - 65.3, 2)
    for path in (paper / "table_main.csv", paper / "table_main.md", paper / "fig_pretrain_loss.png"):
        meta = json.loads(Path(str(path) + ".meta.json").read_text())
        assert meta["versions"]["torch"] and meta["inputs"]
    evals = wf / "results" / "eval"
    for key in ("dense/llama_moe", "moe/llama_moe", "pretrain/llama_moe", "sft_base/moe_sft", "sft/moe_sft",
                "compress_base/moe_compression", "compress/moe_compression"):  # fmt: skip
        res = json.loads((evals / f"{key}.json").read_text())
        assert f"{res['stage']}/{res['paper']}" == key and res["model_sha256"]
        assert set(res["primary"]) == set(res["paper_fewshot"]) == set(res["cached"])
        assert all(res["tasks"][t]["num_fewshot"] == min(n, 1) for t, n in res["paper_fewshot"].items())
    # pretrain/llama_moe and sft_base/moe_sft (one model) share 0-shot ARC-e: scored by one job, cached for the
    # other, or scored by both when the two jobs ran at the same time (Slurm starts both on its two CPUs; the
    # cache itself is tested in test_evaluate_plan.py); never a cache hit without a job that scored it
    shared = [
        json.loads((evals / f"{k}.json").read_text()) for k in ("pretrain/llama_moe", "sft_base/moe_sft")
    ]
    assert sorted(r["cached"]["arc_easy"] for r in shared) in ([False, True], [False, False])
    assert shared[0]["tasks"]["arc_easy"] == shared[1]["tasks"]["arc_easy"]
    load = pd.read_csv(wf / "results" / "routing" / "pretrain" / "gate_load.csv")
    assert load.groupby(["source", "layer"]).fraction.sum().round(6).eq(1).all()
    log = pd.read_csv(wf / "results" / "pretrain" / "log.csv")
    assert list(log.step) == list(range(1, 7))
    compressed = json.loads((wf / "results/compress/block_drop/model/config.json").read_text())
    assert compressed["num_hidden_layers"] == 3  # the headline recipe (stage compress): Block Drop of 1 of 4
    manifest = json.loads((wf / "resources" / "manifest.json").read_text())
    assert any(k.endswith(".safetensors") for k in manifest)
    # rebuilding one table by naming its file does no work when nothing changed
    again = snakemake(
        "results/papers/llama_moe/table_main.md", "--cores", "1", "--configfile", "config/smoke.yaml", cwd=wf
    )
    assert "Nothing to be done" in again.stdout + again.stderr


def check_moe_sft_mixtures(wf: Path) -> None:
    """`all` built the headline mixture runs (2 seeds each, merged); moe_sft_baselines then trains the rest."""
    evals = wf / "results" / "eval"
    for run in ("uniform", "dynamic"):
        merged = json.loads((evals / f"sft_{run}" / "moe_sft.json").read_text())
        assert merged["seeds"] == [1227, 1228] and set(merged["per_seed"]) == {"1227", "1228"}
        assert merged["primary"]["boolq"] == pytest.approx(
            sum(p["boolq"] for p in merged["per_seed"].values()) / 2
        )
    summary = json.loads((wf / "results/sft_mixture/dynamic/seed1227/summary.json").read_text())
    assert summary["mixture"] == "moe_sft" and [r["step"] for r in summary["rounds"]] == [0, 2, 4]
    assert (
        summary["weight_history"][1]["weights"]
        == summary["final_weights"]
        != summary["weight_history"][0]["weights"]
    )
    uniform = json.loads((wf / "results/sft_mixture/uniform/seed1228/summary.json").read_text())
    assert uniform["final_weights"] == dict.fromkeys(["code", "explain", "general", "math"], 0.25)
    main = pd.read_csv(wf / "results/papers/moe_sft/table_main.csv")
    assert set(main.ours_from.dropna()) == {"sft_uniform/moe_sft", "sft_dynamic/moe_sft", "sft_base/moe_sft"}
    assert "Seeds: " in (wf / "results/papers/moe_sft/table_main.md").read_text()
    final = pd.read_csv(wf / "results/papers/moe_sft/table_final_weights.csv")
    ours = final[final.row == "ours: dynamic, final weights"].set_index("column").ours.astype(float)
    assert ours.sum() == pytest.approx(100, abs=0.05) and ours["orca"] > 0
    for fig in ("fig_sampling_weights", "fig_expert_load_dynamic"):
        assert (wf / f"results/papers/moe_sft/{fig}.png").stat().st_size > 0
    assert not (wf / "results/papers/moe_sft/table_baselines.csv").exists()  # not in `all`
    snakemake("moe_sft_baselines", "--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    table = pd.read_csv(wf / "results/papers/moe_sft/table_baselines.csv")
    assert len(set(table.ours_from.dropna())) == 11 and not (table.ours == "not reproduced yet").any()
    static = json.loads((wf / "results/sft_mixture/dynamic_final/seed1227/summary.json").read_text())
    assert static["final_weights"] == pytest.approx(
        summary["final_weights"]
    )  # trained on the dynamic run's weights
    cycle = json.loads((wf / "results/sft_mixture/sequential/seed1227/summary.json").read_text())
    assert [h["weights"]["code"] for h in cycle["weight_history"]] == [1.0, 0.0]  # a one-hot on code, rolled


def check_compression(wf: Path) -> None:
    """`all` compresses with the headline recipe only; moe_compression_methods runs every recipe of compress.methods
    on the tiny SFT MoE (4 blocks, 4 experts top-2) and fills table_methods / table_recipe."""
    from safetensors.torch import load_file

    recipes = yaml.safe_load((wf / "config/smoke.yaml").read_text())["compress"]["recipes"]
    methods = yaml.safe_load((wf / "config.yaml").read_text())["compress"]["methods"]
    assert not (wf / "results/compress/wanda").exists()
    snakemake("moe_compression_methods", "--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    for recipe in methods:
        report = json.loads((wf / f"results/compress/{recipe}/recipe.json").read_text())
        assert report["recipe"] == recipe and len(report["steps"]) == len(recipes.get(recipe, [None]))
    config = {r: json.loads((wf / f"results/compress/{r}/model/config.json").read_text()) for r in methods}
    assert config["expert_drop_layer"]["num_experts_per_layer"] == [3, 3, 3, 3]
    assert sum(config["expert_drop_global"]["num_experts_per_layer"]) == 12
    assert config["layer_drop"]["mlp_layer_types"].count("none") == 1
    assert config["awq_4bit+block_drop"]["num_hidden_layers"] == 3
    weights = load_file(wf / "results/compress/wanda_2of4/model/model.safetensors")
    gate = weights["model.layers.0.mlp.experts.gate_proj"]
    assert ((gate.reshape(-1, 4) != 0).sum(-1) == 2).all()  # 2 of every 4 inputs kept
    methods_table = pd.read_csv(wf / "results/papers/moe_compression/table_methods.csv")
    avg = methods_table[methods_table.column == "avg_common"].set_index("row").ours
    assert pd.to_numeric(avg).notna().all() and len(avg) == 17  # the model before compression + 16 methods
    recipe_md = (wf / "results/papers/moe_compression/table_recipe.md").read_text()
    assert "AWQ 4-bit + Layer Drop" in recipe_md and "92" in recipe_md


def check_post_training(wf: Path) -> None:
    """`all` leaves LLaMA-MoE v2's tables out; target llama_moe_v2 post-trains the constructed MoEs (two-stage,
    one-stage, 1+7top1) and fills table_post_training and the v2 main table's rows."""
    v2 = wf / "results/papers/llama_moe_v2"
    assert not (v2 / "table_main.csv").exists() and not (v2 / "table_post_training.csv").exists()
    snakemake("llama_moe_v2", "--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
    runs = wf / "results/post_training"
    stage1 = json.loads((runs / "v2_post/seed1228/stage1/summary.json").read_text())
    assert set(stage1["examples"]) == {"explain", "general"}  # the general stage reads only its data sets
    stage2 = json.loads((runs / "v2_post/seed1228/stage2/summary.json").read_text())
    assert stage2["final_weights"] == pytest.approx(
        {"code": 0.4, "math": 0.4, "general": 0.1, "explain": 0.1}
    )
    assert [r["step"] for r in stage2["rounds"]] == [0, 2]
    one = json.loads((runs / "v2_post_one_stage/seed1227/one_stage/summary.json").read_text())
    # the step-weighted mix of the two stages (2 + 2 steps on the smoke config)
    assert one["final_weights"] == pytest.approx({"code": 0.2, "math": 0.2, "general": 0.3, "explain": 0.3})
    assert not (runs / "v2_post/seed1227/stage1/model").exists()  # temp: removed once stage 2 has read it
    merged = json.loads((wf / "results/eval/v2_post/llama_moe_v2.json").read_text())
    assert merged["seeds"] == [1227, 1228]
    table = pd.read_csv(v2 / "table_post_training.csv").set_index("run")
    assert list(table.index) == ["v2_post", "v2_post_one_stage", "v2_shared"]
    assert list(table.seeds) == [2, 2, 1] and table.loss_avg.notna().all()
    assert (
        "Our outcome, v2_post vs v2_post_one_stage: dev loss" in (v2 / "table_post_training.md").read_text()
    )
    main = pd.read_csv(v2 / "table_main.csv")
    assert {"v2_post/llama_moe_v2", "v2_shared/llama_moe_v2"} <= set(main.ours_from.dropna())
