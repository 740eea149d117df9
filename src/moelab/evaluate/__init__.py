"""Evaluation: lm-eval integration with local task definitions (more analyses join this package later).

lm-eval, torch and transformers are imported lazily, so `import moelab.evaluate` stays cheap.
"""

from moelab.evaluate.harness import evaluate_lm, load_tasks, run_lm_eval, summarise
from moelab.evaluate.tasks import (
    LLAMA_MOE_NUM_FEWSHOT,
    PAPER_NUM_FEWSHOT,
    PRIMARY_METRIC,
    TASK_SPECS,
    TASKS,
    data_file,
    data_files,
    write_task_yamls,
)

__all__ = [
    "LLAMA_MOE_NUM_FEWSHOT",
    "PAPER_NUM_FEWSHOT",
    "PRIMARY_METRIC",
    "TASKS",
    "TASK_SPECS",
    "data_file",
    "data_files",
    "evaluate_lm",
    "load_tasks",
    "run_lm_eval",
    "summarise",
    "write_task_yamls",
]
