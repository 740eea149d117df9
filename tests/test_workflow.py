"""The Snakemake workflow: lint, dry runs of every config, and the whole smoke DAG end to end."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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
    wf = copy_workflow(tmp_path)
    snakemake("--cores", "2", "--configfile", "config/smoke.yaml", cwd=wf)
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
    # pretrain/llama_moe and sft_base/moe_sft (one model) share 0-shot ARC-e: scored by one job, cached for the other
    shared = [
        json.loads((evals / f"{k}.json").read_text()) for k in ("pretrain/llama_moe", "sft_base/moe_sft")
    ]
    assert sorted(r["cached"]["arc_easy"] for r in shared) == [False, True]
    assert shared[0]["tasks"]["arc_easy"] == shared[1]["tasks"]["arc_easy"]
    load = pd.read_csv(wf / "results" / "routing" / "pretrain" / "gate_load.csv")
    assert load.groupby(["source", "layer"]).fraction.sum().round(6).eq(1).all()
    log = pd.read_csv(wf / "results" / "pretrain" / "log.csv")
    assert list(log.step) == list(range(1, 7))
    compressed = json.loads((wf / "results" / "models" / "compress" / "config.json").read_text())
    assert compressed["num_hidden_layers"] == 3
    manifest = json.loads((wf / "resources" / "manifest.json").read_text())
    assert any(k.endswith(".safetensors") for k in manifest)
    # rebuilding one table by naming its file does no work when nothing changed
    again = snakemake(
        "results/papers/llama_moe/table_main.md", "--cores", "1", "--configfile", "config/smoke.yaml", cwd=wf
    )
    assert "Nothing to be done" in again.stdout + again.stderr
