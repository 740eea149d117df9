"""The hub suite's code metric, run behind moelab's sandbox instead of Hugging Face `evaluate`'s `code_eval`.

lm-eval's HumanEval and MBPP tasks score completions with `evaluate.load("code_eval")`, whose `compute`
executes model-written code in a plain subprocess of the evaluating process (no boundary; it refuses to run
unless HF_ALLOW_CODE_EVAL=1). Inside `sandboxed_code_eval()` that call returns a `SandboxedCodeEval`, the same
`compute` interface (Chen et al. 2021, Sec. 2.1: pass@k over n samples per problem, eq. 1), whose programs run
through `moelab.evaluate.sandbox.run_programs` under the active isolation (`evaluate.code_sandbox`):

    with sandboxed_code_eval() as metric:
        ...lm_eval.simple_evaluate(tasks=["humaneval"], ...)...
    metric.problems  -> problems (docs) scored in the sandbox, the tasks' import-time self-test excluded

Inside the block HF_ALLOW_CODE_EVAL is "0", so Hugging Face's own metric refuses to execute anything, even if a
module holding it was imported before the block.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from moelab.evaluate.passk import pass_at_k
from moelab.evaluate.sandbox import run_programs
from moelab.evaluate.tasks.generation import CODE_MEMORY_MB, CODE_TIMEOUT_S, CODE_WORKERS

METRIC_NAME = "code_eval"
# lm-eval's HumanEval / MBPP helpers run this check when they are imported (not a scored doc)
SELF_TEST = (["assert add(2, 3)==5"], [["def add(a,b): return a*b"]])


class SandboxedCodeEval:
    """Drop-in for the `code_eval` metric of Hugging Face `evaluate` (the subset lm-eval uses).

    `calls` counts `compute` calls, `programs` the programs run, `problems` the problems scored except in
    the helpers' import-time self-test (`SELF_TEST`); all over the object's lifetime.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.programs = 0
        self.problems = 0

    def compute(
        self,
        *,
        references: Sequence[str],
        predictions: Sequence[Sequence[str]],
        k: Sequence[int] | int = (1, 10, 100),
        num_workers: int = CODE_WORKERS,
        timeout: float = CODE_TIMEOUT_S,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict]]]]:
        """Run every candidate of problem i as `candidate + "\\n" + references[i]`; pass@k over the problems.

        Args:
            references: per problem, its test code (asserts, or a `check(...)` call).
            predictions: per problem, its n candidate programs (n may differ between problems).
            k: the pass@k budgets; a k larger than some problem's n is left out (as `code_eval` does).
            num_workers: programs run at a time. timeout: wall-clock seconds per program (`code_eval`'s default
                is 3 s; moelab's local suite uses `CODE_TIMEOUT_S` on shared CPU cores, so does this).
        Returns:
            ({"pass@k": mean over problems of the unbiased estimate (Chen et al. 2021, eq. 1)},
             {problem index: [(candidate index, {"task_id", "completion_id", "passed", "result"}), ...]}),
            the shape `code_eval.compute` returns; "result" is "passed", "failed" or "timed out".
        Raises:
            ValueError: references and predictions differ in length, a problem has no candidate, k < 1.
            SandboxUnavailableError: the active isolation cannot run here.
        """
        ks = [k] if isinstance(k, int) else list(k)
        if len(references) != len(predictions):
            raise ValueError(
                f"code metric: {len(references)} references but {len(predictions)} prediction lists"
            )
        if any(len(candidates) == 0 for candidates in predictions):
            raise ValueError("code metric: a problem has no candidate program")
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in ks):
            raise ValueError(f"code metric: k must be ints >= 1, got {k!r}")
        self.calls += 1
        if (list(references), [list(c) for c in predictions]) != SELF_TEST:
            self.problems += len(references)
        jobs = [
            (i, j, f"{candidate}\n{test}")
            for i, (test, candidates) in enumerate(zip(references, predictions, strict=True))
            for j, candidate in enumerate(candidates)
        ]
        runs = run_programs(
            [program for _, _, program in jobs],
            workers=num_workers,
            timeout_s=timeout,
            memory_mb=CODE_MEMORY_MB,
        )
        self.programs += len(jobs)
        words = {"passed": "passed", "failed": "failed", "timeout": "timed out"}
        results: dict[int, list[tuple[int, dict]]] = {i: [] for i in range(len(references))}
        for (i, j, _), run in zip(jobs, runs, strict=True):
            results[i].append(
                (j, {"task_id": i, "completion_id": j, "passed": run.passed, "result": words[run.status]})
            )
        counts = [(len(rows), sum(row["passed"] for _, row in rows)) for rows in results.values()]
        scores = {
            f"pass@{x}": sum(pass_at_k(n, c, x) for n, c in counts) / len(counts)
            for x in ks
            if all(n >= x for n, _ in counts)
        }
        return scores, results


def _drop_task_helpers() -> None:
    """Forget the `!function` modules lm-eval's task YAML loader cached (lm_eval.tasks.<dir>.<file>, with an
    `__mtime__`), so the next task load imports them again."""
    for name in [
        n for n, m in list(sys.modules.items()) if n.startswith("lm_eval.tasks.") and hasattr(m, "__mtime__")
    ]:
        del sys.modules[name]


@contextlib.contextmanager
def sandboxed_code_eval() -> Iterator[SandboxedCodeEval]:
    """Inside the block `evaluate.load("code_eval")` returns one `SandboxedCodeEval` (yielded), task helper
    modules lm-eval cached earlier are dropped (so HumanEval/MBPP's helpers re-import and fetch the sandboxed
    metric), and HF_ALLOW_CODE_EVAL is "0" (Hugging Face's executor refuses). All three are restored after.
    Other metric names load as before.
    """
    import evaluate

    metric = SandboxedCodeEval()
    original_load = evaluate.load

    def load(path, *args, **kwargs):
        if path == METRIC_NAME:
            return metric
        return original_load(path, *args, **kwargs)

    _drop_task_helpers()
    saved_flag = os.environ.get("HF_ALLOW_CODE_EVAL")
    os.environ["HF_ALLOW_CODE_EVAL"] = "0"
    evaluate.load = load
    try:
        yield metric
    finally:
        evaluate.load = original_load
        _drop_task_helpers()  # their module globals hold `metric`: never reuse them outside the block
        if saved_flag is None:
            os.environ.pop("HF_ALLOW_CODE_EVAL", None)
        else:
            os.environ["HF_ALLOW_CODE_EVAL"] = saved_flag
