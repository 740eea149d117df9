"""LLaMA-MoE v2 post-training at demo scale: its runs (moelab.config.post_training_runs), the v2 router of the
construction variants, and the one-stage vs two-stage table (moelab.report.post_training)."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from test_construct_methods import tiny_dense

from moelab.config import ConfigError, check_config, post_training_runs
from moelab.construct import construct_variant, init_routers
from moelab.report.post_training import (
    compare_downstream,
    post_training_notes,
    post_training_table,
    read_post_run,
)

ROOT = Path(__file__).resolve().parents[1]


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_runs_stages_seeds_and_the_one_stage_mix():
    runs = post_training_runs(default_config())
    assert sorted(runs) == [
        "v2_post/seed1227",
        "v2_post/seed1228",
        "v2_post_one_stage/seed1227",
        "v2_post_one_stage/seed1228",
        "v2_shared/seed1227",  # not a headline run: the first seed only
    ]
    two = runs["v2_post/seed1228"]
    assert (
        two["seed"] == 1228
        and two["construct"] == "v2_8e_top2"
        and list(two["stages"]) == ["stage1", "stage2"]
    )
    s1, s2 = two["stages"]["stage1"], two["stages"]["stage2"]
    assert s1["steps"] == s2["steps"] == 10
    assert s1["domain_weights"] == {"code": 0.0, "explain": 0.5, "general": 0.5, "math": 0.0}
    assert s2["domain_weights"] == pytest.approx({"code": 0.4, "explain": 0.1, "general": 0.1, "math": 0.4})
    assert s1["mixture"] == {
        "strategy": "static",
        "init": "weights",
        "eval_interval": 5,
        "eval_batches": 1,
        "dev_examples": 8,
    }
    one = runs["v2_post_one_stage/seed1227"]["stages"]
    assert list(one) == ["one_stage"] and one["one_stage"]["steps"] == 20
    # (10 x stage-1 weights + 10 x stage-2 weights) / 20, by hand
    assert one["one_stage"]["domain_weights"] == pytest.approx(
        {"code": 0.2, "explain": 0.3, "general": 0.3, "math": 0.2}
    )


def test_unequal_stage_steps_weight_the_mix_by_steps():
    cfg = default_config()
    cfg["post_training"]["stage1"]["steps"] = 30  # 30 general steps, 10 math/code steps
    mixed = post_training_runs(cfg)["v2_post_one_stage/seed1227"]["stages"]["one_stage"]
    assert mixed["steps"] == 40
    assert mixed["domain_weights"] == pytest.approx(
        {"code": 0.1, "explain": 0.4, "general": 0.4, "math": 0.1}
    )


def test_paper_config_has_no_post_training_runs():
    cfg = default_config()
    cfg["post_training"].update(yaml.safe_load((ROOT / "config/paper.yaml").read_text())["post_training"])
    assert post_training_runs(cfg) == {}


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda a: a["runs"]["v2_post"].update(construct="nope"),
            "post_training.runs.v2_post.construct='nope'",
        ),
        (
            lambda a: a["runs"]["v2_post"].update(schedule="three"),
            "post_training.runs.v2_post.schedule='three'",
        ),
        (lambda a: a["runs"]["v2_post"].update(steps=3), "post_training.runs.v2_post: unknown key 'steps'"),
        (
            lambda a: a["stage2"]["domain_weights"].update(orca=1.0),
            "post_training.stage2.domain_weights names",
        ),
        (
            lambda a: a["stage1"].update(domain_weights={"general": 0.0}),
            "post_training.stage1.domain_weights: no data set",
        ),
        (lambda a: a["table"].append("missing"), "post_training.table names unknown run(s) ['missing']"),
        (lambda a: a["stage1"].pop("steps"), "post_training.stage1.steps must be a positive integer"),
    ],
)
def test_bad_post_training_config_names_the_key(edit, message):
    cfg = copy.deepcopy(default_config())
    edit(cfg["post_training"])
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        post_training_runs(cfg)
    with pytest.raises(ConfigError):  # the workflow's check, before any job
        check_config(cfg)


def test_variant_router_settings_override_the_construct_section():
    dense = tiny_dense()
    # v2's router (softmax -> top-k -> renormalise, linear gate) over the config's noisy top-k MLP gate
    spec = {"method": "sequential", "num_experts": 4, "top_k": 4, "score_scale_factor": 4.0,
            "router_type": "softmax_topk", "gate_network": "linear"}  # fmt: skip
    out = construct_variant(
        dense, None, spec, seed=0, router_type="noisy_topk", gate_network="mlp", progress=False
    )
    assert (out.model.config.router_type, out.model.config.gate_network) == ("softmax_topk", "linear")
    # zero router: every expert gets 1/4, times the scale 4: the sum of the vanilla split's blocks = the dense FFN
    init_routers(out.model, "zero", seed=0, progress=False)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            out.model(input_ids=ids).logits, dense(input_ids=ids).logits, rtol=1e-4, atol=1e-4
        )


def _record(tmp_path, run, seed, losses, primary, n=20, stage="stage2"):
    seed_dir = tmp_path / run / f"seed{seed}"
    (seed_dir / stage).mkdir(parents=True)
    summary = seed_dir / stage / "summary.json"
    summary.write_text(json.dumps({"rounds": [{"step": 0, "losses": {}}, {"step": 4, "losses": losses}]}))
    ev = seed_dir / "llama_moe_v2.json"
    ev.write_text(json.dumps({
        "primary": primary,
        "average": sum(primary.values()) / len(primary),
        "tasks": {t: {"acc": p, "n": n} for t, p in primary.items()},
    }))  # fmt: skip
    return summary, ev


SPECS = {
    "v2_post": {"construct": "v2_8e_top2"},
    "v2_post_one_stage": {"construct": "v2_8e_top2", "schedule": "one_stage"},
    "v2_shared": {"construct": "v2_1s7e_top1"},
}


def test_table_means_seed_spread_and_verdicts(tmp_path):
    made = [  # run, seed, last stage, dev losses, task scores
        ("v2_post", 1, "stage2", {"code": 1.0, "math": 2.0}, {"boolq": 0.5, "piqa": 0.6}),
        ("v2_post", 2, "stage2", {"code": 1.2, "math": 2.2}, {"boolq": 0.5, "piqa": 0.7}),
        ("v2_post_one_stage", 1, "one_stage", {"code": 2.0, "math": 3.0}, {"boolq": 0.5, "piqa": 0.6}),
        ("v2_post_one_stage", 2, "one_stage", {"code": 2.2, "math": 3.2}, {"boolq": 0.5, "piqa": 0.6}),
        ("v2_shared", 1, "stage2", {"code": 1.5, "math": 2.5, "general": 9.0}, {"boolq": 0.4, "piqa": 0.4}),
    ]
    seeds = [read_post_run(*_record(tmp_path, r, k, loss, prim, stage=st)) for r, k, st, loss, prim in made]
    df = post_training_table(list(SPECS), SPECS, seeds)
    row = df.set_index("run").loc["v2_post"]
    # loss_general is not scored by every run: only the common sets count
    assert "loss_general" not in df.columns
    assert row.loss_code == pytest.approx(1.1) and row.loss_avg == pytest.approx(1.6)
    assert row.loss_avg_sd == pytest.approx(0.1414, abs=1e-4)  # sd of (1.5, 1.7)
    assert row.piqa == pytest.approx(65.0) and row.downstream_avg == pytest.approx(57.5)
    assert row.downstream_sd == pytest.approx(3.5, abs=0.05)  # sd of (55, 60)
    assert pd.isna(df.set_index("run").loc["v2_shared"].loss_avg_sd)  # one seed: no spread
    notes = post_training_notes(df, {"stage1": {"steps": 2, "domain_weights": {"general": 1.0}},
                                     "stage2": {"steps": 2, "domain_weights": {"math": 1.0}}},
                                {"batch_size": 4, "max_len": 128})  # fmt: skip
    verdict = next(n for n in notes if n.startswith("Our outcome, v2_post vs v2_post_one_stage"))
    # 1.6 vs 2.6 nats, seed noise 1.96 * sqrt(2 * 0.1414^2 / 2) = 0.277: beyond it
    assert "difference -1.000" in verdict and "lower beyond the seed noise (+-0.277" in verdict
    # downstream 57.5 vs 55.0 with a binomial SE of ~7.8 points per average: within noise
    assert "within noise" in compare_downstream(df, "v2_post", "v2_post_one_stage")
    assert not any(
        n.startswith("Our outcome, v2_shared") for n in notes
    )  # no one-stage run of its construction


def test_read_post_run_refuses_mismatched_files(tmp_path):
    summary, _ = _record(tmp_path, "a", 1, {"code": 1.0}, {"boolq": 0.5})
    _, other = _record(tmp_path, "b", 1, {"code": 1.0}, {"boolq": 0.5})
    with pytest.raises(ValueError, match="different runs"):
        read_post_run(summary, other)
    empty = tmp_path / "c" / "seed1" / "stage2"
    empty.mkdir(parents=True)
    (empty / "summary.json").write_text(json.dumps({"rounds": []}))
    (empty.parent / "llama_moe_v2.json").write_text(json.dumps({"primary": {}}))
    with pytest.raises(ValueError, match="no dev-loss rounds"):
        read_post_run(empty / "summary.json", empty.parent / "llama_moe_v2.json")
