"""Zero/few-shot evaluation of a checkpoint folder with lm-eval on local data (multiple choice and generation).

    run_lm_eval(model_dir, ["arc_easy", "piqa"], eval_dir, limit=50)
      -> {"tasks": {"arc_easy": {"acc": .., "acc_stderr": .., "acc_norm": .., ..., "num_fewshot": 0, "n": 50}},
          "primary": {"arc_easy": ..}, "average": .., "lm_eval_version": "0.4.13"}

Multiple-choice scoring is lm-eval's loglikelihood (Gao et al., "lm-evaluation-harness"): for each choice,
sum of the log-probabilities of the continuation tokens given the context; acc = argmax is gold; acc_norm
divides each sum by the choice's length in characters first. Generation tasks (NQ, TriviaQA, GSM8K, BBH,
HumanEval, MBPP) decode greedily (or sample, for pass@k with k > 1) and are scored by
`moelab.evaluate.tasks.generation` (exact match, pass@k with code run in `moelab.evaluate.sandbox`).
Group tasks (mmlu, bbh) report lm-eval's group aggregate. Nothing touches the network: the hub and
datasets libraries are switched to offline mode for the duration of the call.
"""

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from moelab.evaluate.tasks import (
    TASK_PREFIX,
    TASK_SPECS,
    check_tasks,
    data_files,
    resolve_num_fewshot,
    write_task_yamls,
)
from moelab.files import verify_model_folder

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Force Hugging Face hub/datasets offline inside the block, then restore the previous state.

    Sets the environment variables and, because huggingface_hub and datasets read them once at import,
    also the module-level flags they consult at call time.
    """
    import datasets.config
    import huggingface_hub.constants

    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    saved_flags = (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)
    os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved_flags
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def task_manager(include_dir: Path):
    """An lm-eval TaskManager that indexes only the resolved YAMLs in `include_dir` (no built-in tasks)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include_dir), include_defaults=False)


def load_tasks(
    tasks: list[str], eval_dir: Path, include_dir: Path, num_fewshot: Mapping[str, int] | int = 0
) -> dict:
    """Build lm-eval Task objects (data loaded) for short task names, e.g. to inspect their docs.

    Returns:
        {short task name: lm_eval.api.task.ConfigurableTask}; a group task contributes its members instead,
        e.g. "mmlu_anatomy", "bbh_navigate".
    Raises:
        ValueError / FileNotFoundError: as `moelab.evaluate.tasks.write_task_yamls`.
    """
    write_task_yamls(tasks, eval_dir, include_dir, num_fewshot)
    with offline():
        loaded = task_manager(include_dir).load([TASK_PREFIX + t for t in check_tasks(tasks)])
    return {name.removeprefix(TASK_PREFIX): task for name, task in loaded["tasks"].items()}


def _float_or_none(value) -> float | None:
    """lm-eval writes "N/A" for an undefined stderr; keep JSON clean (None instead of NaN or strings)."""
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _metrics(result: Mapping) -> dict[str, float | None]:
    """One lm-eval result entry ({"acc,none": .., "acc_stderr,none": .., "alias": ..}) -> {"acc": .., ...}.

    Our tasks use one filter pipeline each ("none", or "all_samples" for the code tasks), so the filter name is
    dropped; were there several, the keys keep it ("exact_match,strict").
    """
    keyed = [(k.partition(","), v) for k, v in result.items() if "," in k]
    filters = {f for (_, _, f), _ in keyed}
    return {(m if len(filters) == 1 else f"{m},{f}"): _float_or_none(v) for (m, _, f), v in keyed}


def summarise(raw: dict, tasks: list[str]) -> dict:
    """Reduce an lm-eval `simple_evaluate` result to moelab's JSON-serialisable summary.

    Args:
        raw: the dict returned by `lm_eval.simple_evaluate` (keys "results", "n-shot", "n-samples").
        tasks: short task names that were evaluated.
    Returns:
        {"tasks": {task: {metric: v, metric_stderr: v, "num_fewshot": n, "n": examples}},
         "primary": {task: value of PRIMARY_METRIC[task]}, "average": unweighted mean of the primaries,
         "subtasks": {group task: {member: its primary metric}}, "lm_eval_version": str}.
        A group task's (mmlu, bbh) metrics are lm-eval's group aggregate (`TaskSpec.weight_by_size`), its "n"
        the sum over members. Metric values are fractions in [0, 1] (LAMBADA's perplexity excepted).
    Raises:
        KeyError: a task or its primary metric is missing from `raw`.
    """
    from lm_eval import __version__

    summary: dict = {"tasks": {}, "primary": {}, "subtasks": {}}
    for task in tasks:
        spec, name = TASK_SPECS[task], TASK_PREFIX + task
        members = [f"{name}_{m}" for m in spec.subtasks] or [name]
        metrics = _metrics(raw["results"][name])
        metrics["num_fewshot"] = int(raw["n-shot"][members[0]])
        metrics["n"] = sum(int(raw["n-samples"][m]["effective"]) for m in members)
        summary["tasks"][task] = metrics
        summary["primary"][task] = metrics[spec.metric]
        if spec.subtasks:
            summary["subtasks"][task] = {
                m: _metrics(raw["results"][f"{name}_{m}"])[spec.metric] for m in spec.subtasks
            }
    primaries = list(summary["primary"].values())
    summary["average"] = sum(primaries) / len(primaries)
    summary["lm_eval_version"] = __version__
    return summary


def run_lm_eval(
    model_dir: Path,
    tasks: list[str],
    eval_dir: Path,
    *,
    limit: int | None,
    num_fewshot: Mapping[str, int] | int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 1234,
) -> dict:
    """Evaluate a causal LM checkpoint folder on local tasks with lm-eval.

    Args:
        model_dir: `save_pretrained` folder (config.json, safetensors, tokenizer). MoE models load through
            the Auto classes once `moelab.models` is imported.
        tasks: short names from `moelab.evaluate.tasks.TASKS`, e.g. ["arc_easy", "hellaswag"].
        eval_dir: folder holding the download stage's `<task>/` data folders.
        limit: evaluate the first `limit` docs of each task (of each member of a group task); None = all.
        num_fewshot: int for all tasks or {task: n} (missing tasks 0); e.g. LLAMA_MOE_NUM_FEWSHOT.
        batch_size: lm-eval batch size (requests per forward pass).
        device: torch device, e.g. "cpu", "cuda:0".
        dtype: torch dtype name for the weights, e.g. "float32", "bfloat16".
        seed: python/numpy/torch seeds and the few-shot sampler seed.
    Returns:
        the summary described in `summarise` (JSON-serialisable).
    Raises:
        ValueError: unknown task, bad num_fewshot/limit/dtype.
        FileNotFoundError: missing model folder or data file (named in the message).
    """
    tasks = check_tasks(tasks)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an int >= 1, got {limit!r}")
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model folder has no config.json: {model_dir}")

    resolve_num_fewshot(tasks, num_fewshot)  # validate shots and data files before loading the model
    for task in tasks:
        data_files(eval_dir, task)
    with offline():
        lm = load_hflm(model_dir, batch_size=batch_size, device=device, dtype=dtype)
    return evaluate_lm(lm, tasks, eval_dir, limit=limit, num_fewshot=num_fewshot, seed=seed)


def load_hflm(model_dir: Path, *, batch_size: int, device: str, dtype: str):
    """An lm-eval HFLM around a checkpoint folder (dense LLaMA or LlamaMoE, through the Auto classes).

    Raises:
        ValueError: `dtype` names no torch dtype.
        FileNotFoundError / DamagedFileError: the folder is incomplete or a weights file is damaged (named;
            `moelab.files.verify_model_folder`, checked before loading).
    """
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import moelab.models  # noqa: F401  (registers LlamaMoE with the Auto classes)

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"dtype must name a torch dtype (e.g. 'float32', 'bfloat16'), got {dtype!r}")
    verify_model_folder(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, backend="causal")


def evaluate_lm(
    lm,
    tasks: list[str],
    eval_dir: Path,
    *,
    limit: int | None,
    num_fewshot: Mapping[str, int] | int = 0,
    seed: int = 1234,
) -> dict:
    """Evaluate an lm-eval `LM` (e.g. HFLM, or a test stub) on local tasks; the body of `run_lm_eval`.

    Args: as `run_lm_eval`; `lm` is an `lm_eval.api.model.LM` instance.
    Returns:
        the summary described in `summarise`.
    Raises:
        ValueError / FileNotFoundError: as `moelab.evaluate.tasks.write_task_yamls`.
    """
    tasks = check_tasks(tasks)
    with tempfile.TemporaryDirectory(prefix="moelab_lm_eval_") as include_dir:
        write_task_yamls(tasks, eval_dir, Path(include_dir), num_fewshot)
        with offline():
            import lm_eval

            raw = lm_eval.simple_evaluate(
                model=lm,
                tasks=[TASK_PREFIX + t for t in tasks],
                num_fewshot=None,  # per-task counts are in the resolved YAMLs
                limit=limit,
                task_manager=task_manager(Path(include_dir)),
                log_samples=False,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                # code tasks execute model output: only inside moelab.evaluate.sandbox (generation.py)
                confirm_run_unsafe_code=any(TASK_SPECS[t].unsafe_code for t in tasks),
            )
    return summarise(raw, tasks)
