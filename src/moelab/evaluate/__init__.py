"""Evaluation: lm-eval integration with local task definitions (more analyses join this package later).

lm-eval, torch and transformers are imported lazily, so `import moelab.evaluate` stays cheap.
"""

from moelab.evaluate.harness import load_tasks, run_lm_eval, summarise
from moelab.evaluate.tasks import (
    LLAMA_MOE_NUM_FEWSHOT,
    PRIMARY_METRIC,
    TASKS,
    data_file,
    write_task_yamls,
)

__all__ = [
    "LLAMA_MOE_NUM_FEWSHOT",
    "PRIMARY_METRIC",
    "TASKS",
    "data_file",
    "load_tasks",
    "run_lm_eval",
    "summarise",
    "write_task_yamls",
]
