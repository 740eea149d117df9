"""Verdicts that know their noise: standard errors of our cells, their propagation, and the decision rule."""

import math

import pandas as pd
import pytest

from moelab.report import Claim, Column, Row, TableSpec, paper_table, verdict
from moelab.report.noise import Z, binomial_se, mean_se, noise_threshold, ratio_se, task_se
from moelab.report.paper_table import noise_footer

PUB = pd.DataFrame(
    columns=["paper", "table", "model", "task", "value", "shots", "source", "verified", "note"]
)


def res(**tasks):
    """tasks: name -> (accuracy, stderr or None, n)."""
    return {
        "primary": {t: p for t, (p, _, _) in tasks.items()},
        "average": sum(p for p, _, _ in tasks.values()) / len(tasks),
        "tasks": {t: {"acc": p, "acc_stderr": se, "n": n} for t, (p, se, n) in tasks.items()},
    }


def spec(*cols, kind="above", threshold=0.0):
    return TableSpec(
        "p", "t", "T", "main", cols, (Row("a", ours="a/p"), Row("b", ours="b/p")),
        claims=(Claim("a beats b.", "a", "b", kind=kind, threshold=threshold),),
    )  # fmt: skip


def cell(long, row, col):
    return long[(long.row == row) & (long.column == col)].iloc[0]


def test_task_se_prefers_lm_evals_stderr_then_binomial():
    assert task_se(res(x=(0.6, 0.03, 50)), "x") == 0.03
    assert task_se(res(x=(0.6, None, 50)), "x") == pytest.approx(math.sqrt(0.6 * 0.4 / 50))
    assert task_se(res(x=(0.6, None, None)), "x") is None
    assert task_se(res(x=(0.6, 0.03, 50)), "y") is None and task_se(None, "x") is None
    assert binomial_se(0.5, 100) == 0.05 and binomial_se(0.5, 0) is None


def test_binomial_se_is_wald_inside_and_wilson_at_the_bounds():
    # p = 0.3 on 50: Wald sqrt(.21 / 50) = 0.06481 above the Wilson half-width / Z = 0.06288 -> Wald
    assert binomial_se(0.3, 50) == pytest.approx(math.sqrt(0.21 / 50))
    # p = 0 on 20: Wilson interval [0, Z^2 / (n + Z^2)] = [0, 0.16113], half-width / Z = Z / (2 (n + Z^2))
    assert binomial_se(0.0, 20) == pytest.approx(1.96 / (2 * (20 + 1.96**2)))
    assert binomial_se(1.0, 20) == binomial_se(0.0, 20) > 0.04
    # a 0-for-20 cell against 1-for-20 is within noise, not a resolved difference
    assert 0.05 < noise_threshold(binomial_se(0.0, 20), binomial_se(0.05, 20))


def test_ours_se_propagates_to_multi_task_columns_and_averages():
    qa = Column("qa", tasks=("arc_easy", "boolq"))
    s = spec(qa, Column("piqa"), Column("avg_common", kind="avg_common"))
    ours = {
        "a/p": res(arc_easy=(0.5, 0.03, 50), boolq=(0.6, 0.04, 50), piqa=(0.7, None, 100)),
        "b/p": res(arc_easy=(0.5, 0.03, 50), boolq=(0.6, 0.04, 50), piqa=(0.7, None, 100)),
    }
    long = paper_table(s, PUB, ours)
    # qa = mean of 2 tasks: 100 * sqrt(0.03^2 + 0.04^2) / 2 = 2.5 points
    assert cell(long, "a", "qa").ours_se == 2.5
    piqa = 100 * math.sqrt(0.7 * 0.3 / 100)  # 4.583 points
    assert cell(long, "a", "piqa").ours_se == round(piqa, 2)
    assert cell(long, "a", "avg_common").ours_se == round(math.sqrt(2.5**2 + piqa**2) / 2, 2)
    assert mean_se([3.0, 4.0]) == 2.5 and mean_se([1.0, None]) is None and mean_se([]) is None


def test_a_difference_inside_the_combined_se_is_within_noise():
    s = spec(Column("arc_easy"))
    # 4-point difference, SE 5 points per cell: threshold 1.96 * sqrt(50) = 13.9
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.54, 0.05, 100)), "b/p": res(arc_easy=(0.50, 0.05, 100))}
    )
    v = verdict(s, s.claims[0], long)
    assert "difference +4.0 within +-13.9 at 95%): within noise at our scale." in v and "holds" not in v
    assert noise_threshold(5.0, 5.0) == pytest.approx(Z * math.sqrt(50))


def test_a_difference_beyond_the_combined_se_decides():
    s = spec(Column("arc_easy"))
    # 30-point difference, SE 2 points per cell: threshold 1.96 * sqrt(8) = 5.5
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.80, 0.02, 400)), "b/p": res(arc_easy=(0.50, 0.02, 400))}
    )
    assert "difference +30.0 beyond +-5.5 at 95%); the claim holds" in verdict(s, s.claims[0], long)
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.50, 0.02, 400)), "b/p": res(arc_easy=(0.80, 0.02, 400))}
    )
    assert "the claim does not hold" in verdict(s, s.claims[0], long)


def test_no_standard_error_means_no_verdict():
    s = spec(Column("arc_easy"))
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.8, None, None)), "b/p": res(arc_easy=(0.5, None, None))}
    )
    v = verdict(s, s.claims[0], long)
    assert "cannot be judged against noise (no standard error" in v and "holds" not in v


def test_retention_of_a_parent_near_chance_is_not_judged():
    s = spec(Column("arc_easy"), kind="retained", threshold=90)
    # parent 28% on a 25%-chance task with SE 4.5 points: 3 points above chance < 1.96 * 4.5
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.27, 0.045, 100)), "b/p": res(arc_easy=(0.28, 0.045, 100))}
    )
    assert "cannot be judged (the reference model is within noise of chance: 28.0 vs chance 25.0" in verdict(
        s, s.claims[0], long
    )


def test_retention_judged_with_the_ratio_se():
    s = spec(Column("arc_easy"), kind="retained", threshold=92)
    ours = {"a/p": res(arc_easy=(0.57, 0.01, 2500)), "b/p": res(arc_easy=(0.60, 0.01, 2500))}
    long = paper_table(s, PUB, ours)
    # r = 57/60 = 0.95; se_r = 0.95 * sqrt((1/57)^2 + (1/60)^2) = 0.02299; band = 1.96 * 2.299 = 4.5 points
    se_r = 0.95 * math.sqrt((1 / 57) ** 2 + (1 / 60) ** 2)
    assert ratio_se(57, 1, 60, 1) == pytest.approx(se_r)
    v = verdict(s, s.claims[0], long)
    assert "keeps 95.0%" in v and "+-4.5 at 95%; within noise of the threshold" in v
    s = spec(Column("arc_easy"), kind="retained", threshold=85)
    assert "the claim holds at our scale (threshold 85%)" in verdict(s, s.claims[0], long)
    s = spec(Column("arc_easy"), kind="retained", threshold=99.9)
    assert "the claim does not hold" in verdict(s, s.claims[0], long)


def test_footer_states_the_se_range():
    s = spec(Column("arc_easy"))
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.54, 0.05, 100)), "b/p": res(arc_easy=(0.50, 0.03, 100))}
    )
    assert "standard error of 3.0-5.0" in noise_footer(long)
    long = paper_table(
        s, PUB, {"a/p": res(arc_easy=(0.5, None, None)), "b/p": res(arc_easy=(0.5, None, None))}
    )
    assert noise_footer(long) is None
