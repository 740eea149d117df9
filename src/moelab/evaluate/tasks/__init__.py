"""Local lm-eval task definitions: YAML templates in this folder, resolved against a data dir at run time.

Each template `moelab_<task>.yaml` is an lm-eval 0.4 task config without its data files. The files
(`<eval_dir>/<task>/...`, written by `moelab.evaluate.export.export_eval_task` in the download stage) are injected
by `write_task_yamls`, which writes one small YAML per task into an include dir:

    include: <this folder>/moelab_<task>.yaml
    task: moelab_<task>
    dataset_kwargs: {data_files: {<split>: <eval_dir>/<task>/<file>, ...}}
    num_fewshot: <n>

Group tasks (`mmlu`: 57 subjects, `bbh`: 23 BIG-Bench Hard tasks) get one such YAML per member, with data under
`<eval_dir>/<task>/<member>/`, plus a group YAML whose score is lm-eval's aggregate over the members.
The `moelab_` prefix keeps our tasks apart from lm-eval's built-in ones. Where only a validation split ships
offline, few-shot examples are drawn from it (the evaluated doc excluded), whereas the papers sample shots
from the training splits; MMLU (dev split) and GSM8K (the 8 chain-of-thought exemplars) have their own shot files;
BBH's 3 exemplars per task are both its evaluated docs and (leave-one-out) its shots.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent
TASK_PREFIX = "moelab_"
DATA_FILE = "data-00000-of-00001.arrow"

MMLU_SUBJECTS: tuple[str, ...] = tuple(
    (
        "abstract_algebra anatomy astronomy business_ethics clinical_knowledge college_biology "
        "college_chemistry college_computer_science college_mathematics college_medicine college_physics "
        "computer_security conceptual_physics econometrics electrical_engineering elementary_mathematics "
        "formal_logic global_facts high_school_biology high_school_chemistry high_school_computer_science "
        "high_school_european_history high_school_geography high_school_government_and_politics "
        "high_school_macroeconomics high_school_mathematics high_school_microeconomics high_school_physics "
        "high_school_psychology high_school_statistics high_school_us_history high_school_world_history "
        "human_aging human_sexuality international_law jurisprudence logical_fallacies machine_learning "
        "management marketing medical_genetics miscellaneous moral_disputes moral_scenarios nutrition "
        "philosophy prehistory professional_accounting professional_law professional_medicine "
        "professional_psychology public_relations security_studies sociology us_foreign_policy virology "
        "world_religions"
    ).split()
)

# BIG-Bench Hard (Suzgun et al. 2022) tasks, named as lm-eval names them, whose 3 exemplars each lm-eval ships
# (`lm_eval/tasks/bbh/fewshot/<member>.yaml`): 23 of the 27. BBH's prompts give logical_deduction and
# tracking_shuffled_objects the same three-object exemplars for the three-, five- and seven-object tasks, so
# only the three-object tasks are kept (the others would score the same items again).
BBH_SUBTASKS: tuple[str, ...] = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)


@dataclass(frozen=True)
class TaskSpec:
    """How a short task name maps onto data files and a reported metric.

    metric: the metric the papers report (the task's "primary"); for a group, the group aggregate of it.
    files: {lm-eval split name: file name} under `<eval_dir>/<task>/` (for a group: `<eval_dir>/<task>/<member>/`).
    subtasks: group members (empty for a plain task). weight_by_size: group aggregate weighted by the number of
    docs per member (MMLU, as lm-eval's mmlu group) or not (BBH: mean over tasks, as Suzgun et al.).
    unsafe_code: the task executes model-written code (lm-eval's confirm_run_unsafe_code; see sandbox.py).
    max_fewshot: most shots the local data can give (None: no limit); a larger request is lowered to it.
    """

    metric: str
    files: Mapping[str, str] = field(default_factory=lambda: {"validation": DATA_FILE})
    subtasks: tuple[str, ...] = ()
    weight_by_size: bool = True
    unsafe_code: bool = False
    max_fewshot: int | None = None


_TEST = {"test": "test.jsonl"}
_WITH_SHOTS = {"test": "test.jsonl", "fewshot": "fewshot.jsonl"}

# Short task name -> spec. Metrics: LLaMA-MoE (arXiv 2406.16554, Table 2, following Sheared-LLaMA) reports
# acc_norm for ARC-Challenge, HellaSwag and LogiQA and acc for the other multiple-choice tasks, exact match for
# NQ; LLaMA-MoE v2 (arXiv 2411.15708) MMLU acc, GSM8K exact match, HumanEval pass@10; MoE-SFT (arXiv 2406.11256)
# BBH exact match, MBPP pass@1. OpenBookQA is not in the table: acc_norm, the usual choice for OBQA (raw acc
# falls below chance for small models: SmolLM2-135M, first 50 docs, acc 0.12 vs acc_norm 0.38).
# RTE, CommonsenseQA and TriviaQA are not in the papers' tables: acc, acc, exact match.
TASK_SPECS: dict[str, TaskSpec] = {
    "arc_easy": TaskSpec("acc"),
    "arc_challenge": TaskSpec("acc_norm"),
    "piqa": TaskSpec("acc"),
    "sciq": TaskSpec("acc"),
    "boolq": TaskSpec("acc"),
    "hellaswag": TaskSpec("acc_norm"),
    "winogrande": TaskSpec("acc"),
    "openbookqa": TaskSpec("acc_norm"),
    "rte": TaskSpec("acc"),
    "commonsense_qa": TaskSpec("acc"),
    "logiqa": TaskSpec("acc_norm", _TEST),
    "lambada": TaskSpec("acc", _TEST),
    "mmlu": TaskSpec("acc", {"test": "test.arrow", "dev": "dev.arrow"}, MMLU_SUBJECTS),
    "nq_open": TaskSpec("exact_match"),
    "triviaqa": TaskSpec("exact_match"),
    "gsm8k": TaskSpec("exact_match", _WITH_SHOTS),
    # BBH: 3 exemplars per member, each evaluated with the other two as shots (leave-one-out; see the template)
    "bbh": TaskSpec("exact_match", _TEST, BBH_SUBTASKS, weight_by_size=False, max_fewshot=2),
    "humaneval": TaskSpec("pass@1", _TEST, unsafe_code=True),
    "humaneval_pass10": TaskSpec("pass@10", _TEST, unsafe_code=True),
    "mbpp": TaskSpec("pass@1", _TEST, unsafe_code=True),
}
PRIMARY_METRIC: dict[str, str] = {task: spec.metric for task, spec in TASK_SPECS.items()}
TASKS: tuple[str, ...] = tuple(TASK_SPECS)
GROUP_TASKS: tuple[str, ...] = tuple(t for t, s in TASK_SPECS.items() if s.subtasks)

# Shots used in the papers' tables (LLaMA-MoE README: ARC-c 25, HellaSwag 10, BoolQ 32, NQ 32, MMLU 5, others 0;
# MoE-SFT / LLaMA-MoE v2: GSM8K 8, BBH 3); tasks not listed are 0-shot.
LLAMA_MOE_NUM_FEWSHOT: dict[str, int] = {
    "arc_challenge": 25,
    "hellaswag": 10,
    "boolq": 32,
    "nq_open": 32,
    "mmlu": 5,
}
PAPER_NUM_FEWSHOT: dict[str, int] = {**LLAMA_MOE_NUM_FEWSHOT, "gsm8k": 8, "bbh": 3}


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


def data_files(eval_dir: Path, task: str) -> dict[str, dict[str, Path]]:
    """Data files of a task, per lm-eval task: {lm-eval task name: {split: absolute path}}.

    A plain task has one entry (`moelab_<task>`: files under `<eval_dir>/<task>/`), a group one per member
    (`moelab_<task>_<member>`: files under `<eval_dir>/<task>/<member>/`).
    Raises:
        ValueError: unknown task.
        FileNotFoundError: a file does not exist (the message names it).
    """
    spec = TASK_SPECS[check_tasks([task])[0]]
    root = Path(eval_dir).resolve() / task
    folders = {f"{TASK_PREFIX}{task}_{m}": root / m for m in spec.subtasks} or {TASK_PREFIX + task: root}
    out = {}
    for name, folder in folders.items():
        out[name] = {split: folder / file for split, file in spec.files.items()}
        for path in out[name].values():
            if not path.is_file():
                raise FileNotFoundError(f"evaluation data for task {task!r} not found: {path}")
    return out


def data_file(eval_dir: Path, task: str) -> Path:
    """Path of a plain task's evaluated data file, e.g. `<eval_dir>/<task>/data-00000-of-00001.arrow`.

    Raises:
        ValueError: unknown task, or a group task (use `data_files`).
        FileNotFoundError: the file does not exist (the message names it).
    """
    if TASK_SPECS[check_tasks([task])[0]].subtasks:
        raise ValueError(f"task {task!r} is a group: use data_files() for its members' files")
    return next(iter(data_files(eval_dir, task)[TASK_PREFIX + task].values()))


def resolve_num_fewshot(tasks: list[str], num_fewshot: Mapping[str, int] | int = 0) -> dict[str, int]:
    """Number of in-context examples per task.

    Args:
        tasks: short task names.
        num_fewshot: one int for all tasks, or {task: n}; tasks missing from the mapping get 0, so
            `LLAMA_MOE_NUM_FEWSHOT` can be passed as is. A count above a task's `TaskSpec.max_fewshot`
            (BBH: 2) is lowered to it.
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
    return {
        t: min(n, TASK_SPECS[t].max_fewshot if TASK_SPECS[t].max_fewshot is not None else n)
        for t, n in shots.items()
    }


def write_task_yamls(
    tasks: list[str], eval_dir: Path, out_dir: Path, num_fewshot: Mapping[str, int] | int = 0
) -> dict[str, Path]:
    """Write the resolved lm-eval task YAMLs of `tasks` into `out_dir` (an lm-eval include path).

    Args:
        tasks: short task names, e.g. ["arc_easy", "mmlu"].
        eval_dir: folder holding the download stage's `<task>/` data folders.
        out_dir: folder to write `moelab_<task>.yaml` into (created if missing), plus one
            `moelab_<task>_<member>.yaml` per member of a group task. Pass it to
            `lm_eval.tasks.TaskManager(include_path=out_dir)` or `lm_eval --include_path`.
        num_fewshot: see `resolve_num_fewshot`; a group's members all get the group's count.
    Returns:
        {task: path of its YAML (a group's: the group YAML)}.
    Raises:
        ValueError: unknown task or bad num_fewshot (nothing is written).
        FileNotFoundError: a task's data file is missing (nothing is written).
    """
    shots = resolve_num_fewshot(tasks, num_fewshot)
    files = {task: data_files(eval_dir, task) for task in shots}  # check every file before writing any
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for task, members in files.items():
        spec = TASK_SPECS[task]
        for name, splits in members.items():
            config = {
                "include": str(TEMPLATE_DIR / f"{TASK_PREFIX}{task}.yaml"),
                "task": name,
                "dataset_kwargs": {"data_files": {split: str(path) for split, path in splits.items()}},
                "num_fewshot": shots[task],
            }
            (out_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        written[task] = out_dir / f"{TASK_PREFIX}{task}.yaml"
        if spec.subtasks:
            group = {
                "group": TASK_PREFIX + task,
                "task": list(members),
                "aggregate_metric_list": [
                    {"metric": spec.metric, "aggregation": "mean", "weight_by_size": spec.weight_by_size}
                ],
                "metadata": {"version": 1.0},
            }
            written[task].write_text(yaml.safe_dump(group, sort_keys=False))
    return written
