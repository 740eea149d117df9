"""MoE-SFT data-mixture comparison: its runs (moelab.config.sft_mixture_runs), the gate-load static baseline,
the seed merge and the final-weights report (moelab.report.sft_mixture)."""

import copy
import json
import math
from pathlib import Path

import pytest
import yaml

from moelab.config import ConfigError, check_config, sft_mixture_runs
from moelab.mixture import make_mixture
from moelab.mixture.moe_sft import GateLoadStatic, MoESFTDynamic
from moelab.report.figures import plot_expert_load
from moelab.report.noise import task_se
from moelab.report.paper_table import Column, TableSpec
from moelab.report.sft_mixture import (
    final_weight_extras,
    final_weight_note,
    merge_seeds,
    read_sft_run,
    round_gate_load,
    seed_note,
)

ROOT = Path(__file__).resolve().parents[1]
SETS = ["code", "explain", "general", "math"]
LOADS = {"code": [10, 0], "explain": [0, 7], "general": [4, 4], "math": [3, 0]}


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_runs_seeds_weights_from_and_uniform_start():
    runs = sft_mixture_runs(default_config())
    # headline runs with both seeds, the baselines with the first
    assert sorted(k for k in runs if k.split("/")[0] in ("uniform", "dynamic")) == [
        "dynamic/seed1227",
        "dynamic/seed1228",
        "uniform/seed1227",
        "uniform/seed1228",
    ]
    assert "static_size/seed1228" not in runs and len(runs) == 12
    dyn = runs["dynamic/seed1228"]
    assert dyn["seed"] == 1228 and dyn["train"]["steps"] == default_config()["sft"]["steps"]
    assert dyn["train"]["mixture"] == {
        "strategy": "moe_sft",
        "init": "uniform",
        "eval_interval": 5,
        "eval_batches": 1,
        "dev_examples": 8,
    }
    final = runs["dynamic_final/seed1227"]
    assert final["weights_from"] == "dynamic/seed1227"
    assert (
        final["train"]["mixture"]["strategy"] == "static" and final["train"]["mixture"]["init"] == "weights"
    )
    assert runs["refloss/seed1227"]["train"]["mixture"]["eta"] == 1.0


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda a: a.update(headline=["nope"]), r"sft_mixture.headline names unknown run\(s\) \['nope'\]"),
        (lambda a: a["runs"].update(bad={"strategy": "doremi"}), r"sft_mixture.runs.bad.strategy='doremi'"),
        (lambda a: a["runs"].update(bad={"eta": -1.0}), r"sft_mixture.runs.bad.eta must be >= 0"),
        (lambda a: a["runs"].update(bad={"colour": 1}), r"sft_mixture.runs.bad: unknown key 'colour'"),
        (
            lambda a: a["runs"].update(bad={"weights_from": "nope"}),
            r"sft_mixture.runs.bad.weights_from='nope' must name a run .* with a dynamic strategy",
        ),
        (
            lambda a: a["runs"].update(
                bad={"weights_from": "uniform"}
            ),  # uniform is static: no final weights
            r"weights_from='uniform' must name a run",
        ),
        (
            lambda a: a["runs"].update(bad={"weights_from": "dynamic", "strategy": "moe_sft"}),
            r"sft_mixture.runs.bad: weights_from trains static",
        ),
        (
            lambda a: a["roles"].update(orca="openorca"),
            r"sft_mixture.roles.orca='openorca' is not in data.sft",
        ),
    ],
)
def test_bad_runs_fail_naming_the_key(mutate, needle):
    cfg = copy.deepcopy(default_config())
    mutate(cfg["sft_mixture"])
    with pytest.raises(ConfigError, match=needle):
        check_config(cfg)


def test_gate_load_static_updates_once_at_the_start():
    uniform = dict.fromkeys(SETS, 0.25)
    static = GateLoadStatic(SETS, uniform)
    assert [static.updates_at(s, 20) for s in (0, 5, 10, 19, 20)] == [True, False, False, False, False]
    once = static.update({"step": 0, "gate_loads": LOADS})
    assert once == pytest.approx(MoESFTDynamic(SETS, uniform).update({"step": 5, "gate_loads": LOADS}))
    assert once["explain"] > 0.25 > once["math"]  # explain routes unlike the others: least redundant
    assert not static.updates_at(0, 20)  # a resumed run does not redo it
    # the dynamic strategy updates strictly inside the run, never at the start or after the end
    dyn = make_mixture({"strategy": "moe_sft"}, uniform, where="sft.mixture")
    assert [dyn.updates_at(s, 20) for s in (0, 5, 20)] == [False, True, False]
    made = make_mixture({"strategy": "gate_load_static", "eta": 2.0}, uniform, where="sft.mixture")
    assert isinstance(made, GateLoadStatic) and made.eta == 2.0
    # held after its start update: not a run whose weights change (fig_sampling_weights), unlike moe_sft
    assert made.dynamic and made.held_after_start and not dyn.held_after_start


def result(primary, n=20):
    """An evaluation record (rule evaluate's shape) with lm-eval stderr per task."""
    tasks = {
        t: {"acc": p, "acc_stderr": math.sqrt(p * (1 - p) / n), "n": n, "num_fewshot": 0}
        for t, p in primary.items()
    }
    return {"stage": "sft_dynamic", "paper": "moe_sft", "primary": primary, "average": sum(primary.values()) / len(primary), "tasks": tasks}  # fmt: skip


def test_merge_seeds_by_hand():
    a, b = result({"boolq": 0.6, "mbpp": 0.0}), result({"boolq": 0.7, "mbpp": 0.0})
    merged = merge_seeds([a, b], [1227, 1228])
    assert merged["primary"] == pytest.approx({"boolq": 0.65, "mbpp": 0.0})
    sd = math.sqrt(((0.6 - 0.65) ** 2 + (0.7 - 0.65) ** 2) / 1)  # sample sd over 2 seeds
    assert merged["seed_sd"]["boolq"] == pytest.approx(sd)
    # se = sqrt(max per-seed se^2 + sd^2 / k); boolq: the larger per-seed se is seed 1227's (p = 0.6 is nearer 0.5)
    se_eval = math.sqrt(0.6 * 0.4 / 20)
    assert task_se(merged, "boolq") == pytest.approx(math.sqrt(se_eval**2 + sd**2 / 2))
    assert merged["seeds"] == [1227, 1228] and merged["per_seed"]["1228"] == b["primary"]
    assert merged["average"] == pytest.approx(0.325) and merged["stage"] == "sft_dynamic"
    # one seed: its own se, no spread
    single = merge_seeds([a], [1227])
    assert task_se(single, "boolq") == pytest.approx(se_eval) and single["seed_sd"]["boolq"] is None
    # one seed beside a multi-seed peer: it borrows the peer's seed sd, sqrt(se^2 + sd^2 / 1)
    lent = merge_seeds([a], [1227], peers=[merged])
    assert (
        lent["borrowed_seed_sd"] == {"boolq": pytest.approx(sd), "mbpp": 0.0}
        and lent["seed_sd"]["boolq"] is None
    )
    assert task_se(lent, "boolq") == pytest.approx(math.sqrt(se_eval**2 + sd**2))
    assert merge_seeds([a, b], [1227, 1228], peers=[lent]) == merged  # a multi-seed run keeps its own spread
    spec = TableSpec(
        "p", "t", "T", "main", columns=(Column("boolq"), Column("g", tasks=("boolq", "mbpp"))), rows=()
    )
    ours = {"sft_dynamic/moe_sft": merged, "sft_static_size/moe_sft": single, "sft_x/moe_sft": None}
    note = seed_note(spec, ours)
    # per seed: mean of the columns boolq (60 / 70) and g = mean(boolq, mbpp) (30 / 35) -> 45 / 52.5
    assert (
        "sft_dynamic: 2 seeds, average per seed 45.00, 52.50 (sd 5.30)" in note and "static_size" not in note
    )
    assert seed_note(spec, {"sft_static_size/moe_sft": single}) is None
    with pytest.raises(ValueError, match="seed 1228 scored tasks"):
        merge_seeds([a, result({"boolq": 0.7})], [1227, 1228])
    with pytest.raises(ValueError, match="1 results for seeds"):
        merge_seeds([a], [1227, 1228])


def write_summary(root, run, seed, weights):
    path = root / f"results/sft_mixture/{run}/seed{seed}/summary.json"
    path.parent.mkdir(parents=True)
    rounds = [
        {
            "step": 0,
            "losses": dict.fromkeys(SETS, 2.0),
            "gate_loads": LOADS,
            "weights": dict.fromkeys(SETS, 0.25),
        },
        {"step": 5, "losses": dict.fromkeys(SETS, 1.5), "gate_loads": LOADS, "weights": weights},
    ]
    path.write_text(json.dumps({"rounds": rounds, "final_weights": weights, "mixture": "moe_sft"}))
    return path


def test_final_weights_by_role(tmp_path):
    w1 = {"code": 0.1, "explain": 0.4, "general": 0.3, "math": 0.2}
    w2 = {"code": 0.2, "explain": 0.3, "general": 0.3, "math": 0.2}
    runs = [read_sft_run(write_summary(tmp_path, "dynamic", s, w)) for s, w in ((1227, w1), (1228, w2))]
    assert (runs[0]["run"], runs[0]["seed"], len(runs[0]["rounds"])) == ("dynamic", 1227, 8)
    assert runs[1]["rounds"].query("step == 5 and domain == 'explain'").weight.item() == 0.3
    assert runs[0]["gate_loads"][0] == LOADS
    roles = {"code": "code", "math": "math", "orca": "explain", "sharegpt": "general"}
    extras = final_weight_extras(runs, roles, "sft_dynamic/moe_sft")
    assert extras == {"sft_dynamic/moe_sft": {"code": 15.0, "math": 20.0, "orca": 35.0, "sharegpt": 30.0}}
    assert "seed 1228: code 20.0, explain 30.0" in final_weight_note(runs)
    with pytest.raises(ValueError, match="roles.orca='orca' is not a data set"):
        final_weight_extras(runs, {"orca": "orca"}, "sft_dynamic/moe_sft")
    bad = tmp_path / "results/sft_mixture/uniform/seed1/summary.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"steps": 20}))
    with pytest.raises(ValueError, match="no 'rounds'; not the summary of an sft.mixture run"):
        read_sft_run(bad)
    with pytest.raises(ValueError, match="seed<seed>/summary.json"):
        read_sft_run(tmp_path / "summary.json")


def test_start_and_end_gate_load_figure(tmp_path):
    run = read_sft_run(write_summary(tmp_path, "dynamic", 1227, dict.fromkeys(SETS, 0.25)))
    run["gate_loads"][5] = {**LOADS, "math": [1, 3]}  # the last round: math moved to expert 1
    load = round_gate_load(run)
    assert sorted(set(load.layer)) == [0, 5] and len(load) == 2 * 4 * 2
    assert load.groupby(["source", "layer"]).fraction.sum().eq(1).all()
    end_math = load[(load.layer == 5) & (load.source == "math")].set_index("expert").fraction
    assert list(end_math) == [0.25, 0.75]
    drawn = plot_expert_load(
        load,
        None,
        "sft_domain",
        tmp_path / "f.png",
        tmp_path / "f.pdf",
        "t",
        max_layers=2,
        panel_title="step {layer}",
    )
    assert drawn == [0, 5] and (tmp_path / "f.png").stat().st_size > 0
    run["gate_loads"] = {}
    with pytest.raises(ValueError, match="no round with gate loads"):
        round_gate_load(run)
