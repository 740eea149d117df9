"""Noise of our numbers: standard errors of accuracies and their averages, and when a difference counts.

Every verdict of the report decides with these (moelab.report.paper_table, moelab.report.cpt_ablation):
a difference counts only beyond Z = 1.96 combined standard errors (two-sided 95% under a normal
approximation); otherwise the sentence says "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

Z = 1.96  # two-sided 95% quantile of the standard normal


def binomial_se(p: float, n: int | None) -> float | None:
    """Standard error of an accuracy p in [0, 1] measured on n examples (None when n is unknown or 0).

    max(sqrt(p (1 - p) / n), h / Z), h = the half-width of the Wilson score interval (Wilson 1927),
    h = Z / (1 + Z^2 / n) sqrt(p (1 - p) / n + Z^2 / (4 n^2)). The normal (Wald) term alone is 0 at p = 0 or 1,
    which would let a cell of 0/20 "differ" from 1/20; the Wilson term keeps it at about Z / (2 (n + Z^2))
    there and is below the Wald term for p away from 0 and 1. Same units as p.
    """
    if not n:
        return None
    wald = math.sqrt(p * (1 - p) / n)
    wilson = math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return max(wald, wilson)


def mean_se(ses: Iterable[float | None]) -> float | None:
    """Standard error of the mean of k independent cells with standard errors se_i: sqrt(sum se_i^2) / k.

    None when any se_i is unknown or there is none. Same units as the cells.
    """
    ses = list(ses)
    if not ses or any(se is None for se in ses):
        return None
    return math.sqrt(sum(se * se for se in ses)) / len(ses)


def task_se(result: Mapping | None, task: str) -> float | None:
    """Standard error (fraction, like ``primary``) of one task of an evaluation result
    (``results/eval/{stage}/{paper}.json``: ``{"primary": {task: p}, "tasks": {task: {metric: v,
    metric_stderr: v, "n": examples}}}``).

    lm-eval's stderr of the metric whose value is the primary one; else the binomial SE from ``n``; else None.
    """
    if not result or task not in result.get("primary", {}):
        return None
    p = result["primary"][task]
    metrics = (result.get("tasks") or {}).get(task) or {}
    for name, value in metrics.items():
        if name.endswith("_stderr") or name in ("n", "num_fewshot"):
            continue
        se = metrics.get(f"{name}_stderr")
        if isinstance(value, int | float) and value == p and isinstance(se, int | float) and se > 0:
            return float(se)
    return binomial_se(p, metrics.get("n"))


def noise_threshold(se_a: float | None, se_b: float | None) -> float | None:
    """Z sqrt(se_a^2 + se_b^2): the smallest difference of two independent cells that counts (None when
    either SE is unknown)."""
    if se_a is None or se_b is None:
        return None
    return Z * math.sqrt(se_a * se_a + se_b * se_b)


def ratio_se(a: float, se_a: float, b: float, se_b: float) -> float:
    """Standard error of r = a / b for independent a, b (delta method): r sqrt((se_a/a)^2 + (se_b/b)^2).

    Raises: ZeroDivisionError when a or b is 0.
    """
    r = a / b
    return abs(r) * math.sqrt((se_a / a) ** 2 + (se_b / b) ** 2)
