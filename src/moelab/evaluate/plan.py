"""The evaluation plan: which paper's tasks, with how many shots and examples, each pipeline stage is scored on.

Config (`evaluate:` section, config/schema.yaml) -> plan -> cached lm-eval runs -> one JSON per (stage, paper):

    papers:  {paper: {task: shots}}   the papers' own task lists and shot counts
    stages:  {stage: [paper, ...]}    which papers' task sets each stage's model is evaluated on
    limit / limits: examples per task (default / per-task overrides); max_fewshot: demo cap on shots

Every result records both the paper's shots (`paper_fewshot`) and the shots used (`tasks[t]["num_fewshot"]`).
Tasks are evaluated per (model, task, shots, limit, suite, lm-eval version) through `moelab.evaluate.cache`:
a stage scored on two papers that share a task with the same shots runs it once.

Paper sources of the shot counts: LLaMA-MoE (arXiv 2406.16554) README of the official
repo: ARC-c 25, HellaSwag 10, BoolQ 32, NQ 32, MMLU 5, others 0; MoE-SFT (arXiv 2406.11256): MMLU 5,
BBH 3, GSM8K 8, QA (ARC-e, ARC-c, BoolQ) 0, MBPP 0; MoE compression (arXiv 2406.02500): all 0-shot;
LLaMA-MoE v2 (arXiv 2411.15708) README: MMLU 5, GSM8K 8, HumanEval 0, BoolQ 32, ARC-c 25, HellaSwag 10.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from moelab.errors import ConfigError
from moelab.papers import LM_EVAL_PAPERS

SUITES = ("local", "hub")
STAGES = ("dense", "moe", "pretrain", "pretrain_active", "sft_base", "sft", "compress_base", "compress")


class PlanError(ConfigError):
    """An inconsistent `evaluate:` section; the message names the key to change."""


def known_tasks(suite: str) -> tuple[str, ...]:
    """Short task names a suite can evaluate: our local YAMLs (`local`) or the mapped lm-eval names (`hub`)."""
    if suite == "local":
        from moelab.evaluate.tasks import TASKS

        return tuple(TASKS)
    if suite == "hub":
        from moelab.evaluate.hub import HUB_TASKS

        return tuple(HUB_TASKS)
    raise PlanError(f"evaluate.suite must be one of {SUITES}, got {suite!r}")


def check_evaluate_config(cfg: Mapping) -> None:
    """Cross-check the `evaluate:` section (the JSON schema checks types).

    Raises:
        PlanError: naming the key, when a paper lists a task the suite does not have, a stage names an
            unknown stage or a paper missing from `papers`, or `limits` names a task no paper evaluates.
    """
    suite = cfg.get("suite", "local")
    valid = known_tasks(suite)
    papers = cfg.get("papers") or {}
    for paper, shots in papers.items():
        if paper not in LM_EVAL_PAPERS:
            raise PlanError(
                f"evaluate.papers.{paper}: unknown paper; valid papers: {', '.join(LM_EVAL_PAPERS)}"
            )
        if not shots:
            raise PlanError(f"evaluate.papers.{paper} lists no task")
        for task, n in shots.items():
            if task not in valid:
                raise PlanError(
                    f"evaluate.papers.{paper}.{task}: suite {suite!r} has no task {task!r}; "
                    f"valid tasks: {', '.join(valid)}"
                )
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise PlanError(f"evaluate.papers.{paper}.{task}: shots must be an int >= 0, got {n!r}")
    for stage, listed in (cfg.get("stages") or {}).items():
        if stage not in STAGES:
            raise PlanError(f"evaluate.stages.{stage}: unknown stage; valid stages: {', '.join(STAGES)}")
        for paper in listed:
            if paper not in papers:
                raise PlanError(f"evaluate.stages.{stage}: paper {paper!r} is not in evaluate.papers")
    planned = {t for shots in papers.values() for t in shots}
    for task in cfg.get("limits") or {}:
        if task not in planned:
            raise PlanError(f"evaluate.limits.{task}: no paper in evaluate.papers evaluates {task!r}")


def used_shots(paper_shots: int, max_fewshot: int | None) -> int:
    """Shots actually used: the paper's count, capped at `max_fewshot` (None = no cap)."""
    return paper_shots if max_fewshot is None else min(paper_shots, max_fewshot)


def paper_plan(cfg: Mapping, paper: str) -> dict:
    """The evaluation plan of one paper's task set under the `evaluate:` config section.

    Returns:
        {"tasks": [task, ...] (config order), "paper_fewshot": {task: paper's shots},
         "num_fewshot": {task: shots used}, "limit": {task: examples or None (= all)}}.
    Raises:
        PlanError: `paper` is not in evaluate.papers.
    """
    papers = cfg.get("papers") or {}
    if paper not in papers:
        raise PlanError(f"paper {paper!r} is not in evaluate.papers ({', '.join(papers) or 'empty'})")
    shots = dict(papers[paper])
    limits = cfg.get("limits") or {}
    return {
        "tasks": list(shots),
        "paper_fewshot": shots,
        "num_fewshot": {t: used_shots(n, cfg.get("max_fewshot")) for t, n in shots.items()},
        "limit": {t: limits.get(t, cfg.get("limit")) for t in shots},
    }


def evaluation_targets(cfg: Mapping) -> list[tuple[str, str]]:
    """Every configured (stage, paper) pair, in `evaluate.stages` order."""
    return [(stage, paper) for stage, papers in (cfg.get("stages") or {}).items() for paper in papers]


def stages_of(cfg: Mapping, paper: str) -> list[str]:
    """Stages evaluated on `paper`'s task set, in `evaluate.stages` order (e.g. the rows of its table)."""
    return [stage for stage, p in evaluation_targets(cfg) if p == paper]


def planned_tasks(cfg: Mapping) -> list[str]:
    """Every task of a paper that some stage is evaluated on (the data the local suite needs)."""
    papers = cfg.get("papers") or {}
    return list(dict.fromkeys(t for _, p in evaluation_targets(cfg) for t in papers[p]))


def is_code_task(task: str, suite: str) -> bool:
    """Whether `task` executes model-written code in `suite` (local: TaskSpec.unsafe_code; hub: HubTask.unsafe)."""
    if suite == "hub":
        from moelab.evaluate.hub import HUB_TASKS

        return HUB_TASKS[task].unsafe
    from moelab.evaluate.tasks import TASK_SPECS

    return TASK_SPECS[task].unsafe_code


def run_plan(
    model_dir: Path,
    plan: Mapping,
    *,
    suite: str,
    eval_dir: Path | None,
    cache,
    batch_size: int,
    device: str,
    dtype: str,
    seed: int,
    runner: Callable | None = None,
    code_sandbox: str = "bwrap",
) -> dict:
    """Evaluate one model on a plan, reusing cached per-task results; the rest runs in one lm-eval call per limit.

    Args:
        model_dir: `save_pretrained` folder.
        plan: from `paper_plan`.
        suite: "local" (our YAMLs over `eval_dir`) or "hub" (lm-eval's own tasks and hub data).
        eval_dir: folder with `<task>/` data (local suite); ignored by the hub suite.
        cache: a `moelab.evaluate.cache.EvalCache`.
        batch_size, device, dtype, seed: as `moelab.evaluate.run_lm_eval`.
        runner: the function that evaluates (default: `run_lm_eval` for local, `run_hub_eval` for hub), called
            as runner(model_dir, tasks, eval_dir, limit=, num_fewshot={task: n}, batch_size=, device=, dtype=,
            seed=) and returning the `moelab.evaluate.summarise` format.
        code_sandbox: isolation of model-written code ("bwrap" or "process", `moelab.evaluate.sandbox`): checked
            before a group with a code task runs, and the default of `run_programs` while the runner runs.
    Returns:
        run_lm_eval's summary for the plan's tasks plus "paper_fewshot", "limit", "model_sha256" and
        "cached": {task: True if it came from the cache}.
    Raises:
        as the runner; KeyError if the runner's summary misses a task.
        SandboxUnavailableError: a group with a code task, and `code_sandbox` cannot run here (before the model
            loads; the message says how to fix it).
    """
    from moelab.evaluate import sandbox
    from moelab.evaluate.cache import model_sha256

    if runner is None:
        if suite == "local":
            from moelab.evaluate.harness import run_lm_eval as runner
        else:
            from moelab.evaluate.hub import run_hub_eval as runner
    tasks, shots, limits = plan["tasks"], plan["num_fewshot"], plan["limit"]
    model_sha = model_sha256(model_dir)
    keys = {
        t: cache.key(model_sha, t, shots[t], limits[t], suite, seed=seed, dtype=dtype, eval_dir=eval_dir)
        for t in tasks
    }
    entries = {t: cache.get(keys[t]) for t in tasks}
    missing = [t for t in tasks if entries[t] is None]
    for limit in dict.fromkeys(limits[t] for t in missing):
        group = [t for t in missing if limits[t] == limit]
        if any(is_code_task(t, suite) for t in group):
            sandbox.require_isolation(code_sandbox)
        with sandbox.using(code_sandbox):
            summary = runner(
                Path(model_dir),
                group,
                eval_dir,
                limit=limit,
                num_fewshot={t: shots[t] for t in group},
                batch_size=batch_size,
                device=device,
                dtype=dtype,
                seed=seed,
            )
        for t in group:
            entries[t] = cache.put(keys[t], summary["tasks"][t], summary["primary"][t])
    primary = {t: entries[t]["primary"] for t in tasks}
    values = [v for v in primary.values() if v is not None]
    return {
        "tasks": {t: entries[t]["metrics"] for t in tasks},
        "primary": primary,
        "average": sum(values) / len(values) if values else None,
        "lm_eval_version": keys[tasks[0]]["lm_eval_version"] if tasks else None,
        "paper_fewshot": dict(plan["paper_fewshot"]),
        "limit": dict(limits),
        "model_sha256": model_sha,
        "cached": {t: t not in missing for t in tasks},
    }
