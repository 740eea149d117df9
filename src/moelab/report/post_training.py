"""LLaMA-MoE v2 two-stage post-training at demo scale (arXiv 2411.15708, sec. 3): one-stage vs two-stage.

Every run instruction-tunes a constructed MoE right after construction (rules/post_training.smk): two-stage
runs train on general data, then on the math/code-weighted mix; the one-stage run trains on the step-weighted
mix of both for the same total steps (moelab.config.post_training_runs). One row per run: the dev loss per data
set after the last stage (the same held-out examples in every run, nats per assistant token), their mean, and
the llama_moe_v2 task scores; runs with several seeds show the mean and the sample standard deviation, and the
verdicts call a difference real only beyond that noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from moelab.report.cpt_ablation import average_se, compare_rows, mean_sd
from moelab.report.noise import Z

SCHEDULE_LABELS = {"two_stage": "two-stage", "one_stage": "one-stage (mixed, equal steps)"}
FINDING = (
    "Paper's setting (LLaMA-MoE v2 sec. 3): post-training in two stages, general instruction data first, then "
    "math/code emphasis, recovers the constructed MoE's ability; the paper reports no one-stage run at equal "
    "tokens, so this comparison is ours."
)


def read_post_run(summary_path: str | Path, eval_path: str | Path) -> dict:
    """One trained seed of a post-training run: the last stage's summary and its llama_moe_v2 evaluation.

    Args:
        summary_path: ``results/post_training/<run>/seed<seed>/<last stage>/summary.json`` (its ``rounds``).
        eval_path: ``results/post_training/<run>/seed<seed>/llama_moe_v2.json`` (rule post_train_eval).
    Returns: {"run", "seed", "dev_loss": data set -> dev loss of the last round (nats/token), "primary",
        "average", "tasks"} (the evaluation's fields).
    Raises: ValueError: paths not shaped like that or of different runs, a summary without rounds, an
        evaluation without ``primary``.
    """
    summary_path, eval_path = Path(summary_path), Path(eval_path)
    seed_dir = summary_path.parent.parent
    if not seed_dir.name.startswith("seed") or not seed_dir.name[4:].isdigit():
        raise ValueError(f"{summary_path}: expected .../<run>/seed<seed>/<stage>/summary.json")
    if eval_path.parent != seed_dir:
        raise ValueError(f"{eval_path} and {summary_path} are of different runs")
    rounds = json.loads(summary_path.read_text()).get("rounds") or []
    if not rounds:
        raise ValueError(f"{summary_path}: no dev-loss rounds (post-training runs score their dev split)")
    record = json.loads(eval_path.read_text())
    if not isinstance(record.get("primary"), dict):
        raise ValueError(f"{eval_path}: no 'primary' scores (written by rule post_train_eval)")
    return {
        "run": seed_dir.parent.name,
        "seed": int(seed_dir.name[4:]),
        "dev_loss": dict(rounds[-1]["losses"]),
        "primary": record["primary"],
        "average": record.get("average"),
        "tasks": record.get("tasks") or {},
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def post_training_table(
    runs: Sequence[str], specs: Mapping[str, Mapping], seeds: Sequence[dict]
) -> pd.DataFrame:
    """The post-training table, one row per run in ``runs`` order.

    Args:
        runs: run names (post_training.table).
        specs: run name -> {"construct", "schedule"} (post_training.runs).
        seeds: :func:`read_post_run` records, any order, several per run with several seeds.
    Returns: columns run, label, construct, schedule, seeds, loss_<set> (mean, nats/token) for the data sets
        every run scores, loss_avg (their mean) and loss_avg_sd (over seeds; empty for one seed), one column
        per task (percent, mean), downstream_avg, downstream_sd and downstream_se (binomial SE of one seed's
        average), all in percent.
    Raises: ValueError: a run without records.
    """
    common = None
    for rec in seeds:
        common = set(rec["dev_loss"]) if common is None else common & set(rec["dev_loss"])
    sets = sorted(common or ())
    rows = []
    for run in runs:
        recs = [r for r in seeds if r["run"] == run]
        if not recs:
            raise ValueError(f"post-training run {run!r} has no evaluated seed")
        spec = specs[run]
        schedule = spec.get("schedule", "two_stage")
        row = {
            "run": run,
            "label": f"{run} ({SCHEDULE_LABELS[schedule]}, {spec['construct']})",
            "construct": spec["construct"],
            "schedule": schedule,
            "seeds": len(recs),
        }
        for d in sets:
            row[f"loss_{d}"] = round(mean_sd([r["dev_loss"][d] for r in recs])[0], 4)
        avg, sd = (
            mean_sd([sum(r["dev_loss"][d] for d in sets) / len(sets) for r in recs]) if sets else (None, None)
        )
        row.update(loss_avg=_rounded(avg, 4), loss_avg_sd=_rounded(sd, 4))
        for task in recs[0]["primary"]:
            row[task] = round(100 * mean_sd([r["primary"][task] for r in recs])[0], 1)
        averages = [r["average"] for r in recs if isinstance(r.get("average"), int | float)]
        down, down_sd = mean_sd([100 * a for a in averages]) if len(averages) == len(recs) else (None, None)
        se = average_se(recs[0])
        row.update(
            downstream_avg=_rounded(down, 1),
            downstream_sd=_rounded(down_sd, 1),
            downstream_se=None if se is None else round(100 * se, 1),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def compare_downstream(df: pd.DataFrame, a: str, b: str) -> str:
    """A sentence comparing runs ``a`` and ``b`` on the downstream average (percent), beyond noise or not.

    Noise of a row: sqrt(se_eval^2 + sd^2 / seeds), se_eval = the binomial SE of one seed's average, sd = the
    seed standard deviation (a single-seed row borrows the other row's sd); the difference counts when it
    exceeds Z sqrt(noise_a^2 + noise_b^2).
    """
    ra, rb = df.set_index("run").loc[a], df.set_index("run").loc[b]
    if pd.isna(ra["downstream_avg"]) or pd.isna(rb["downstream_avg"]):
        return f"{ra['label']} vs {rb['label']}: a downstream average is missing, not compared."
    sds = [s for s in (ra["downstream_sd"], rb["downstream_sd"]) if pd.notna(s)]
    pooled = max(sds, default=0.0)

    def noise(r) -> float:
        sd = r["downstream_sd"] if pd.notna(r["downstream_sd"]) else pooled
        se = r["downstream_se"] if pd.notna(r["downstream_se"]) else 0.0
        return math.sqrt(se**2 + sd**2 / r["seeds"])

    diff = float(ra["downstream_avg"] - rb["downstream_avg"])
    bound = Z * math.sqrt(noise(ra) ** 2 + noise(rb) ** 2)
    head = (
        f"downstream average {ra['downstream_avg']:.1f} vs {rb['downstream_avg']:.1f} points "
        f"(difference {diff:+.1f})"
    )
    if abs(diff) <= bound:
        return f"{head}: within noise (+-{bound:.1f} points at 95%)."
    better = ra["label"] if diff > 0 else rb["label"]
    return f"{head}: {better} is higher beyond the noise (+-{bound:.1f} points at 95%)."


def post_training_notes(df: pd.DataFrame, stages: Mapping[str, Mapping], sft: Mapping) -> list[str]:
    """Notes under the table: the paper's setting, a verdict per two-stage run against the one-stage run of
    the same construction (dev loss and downstream, with their noise), and the scale.

    Args:
        df: :func:`post_training_table`'s frame. stages: post_training.stage1 / stage2 (steps, domain_weights).
        sft: the sft section (batch_size, max_len).
    """
    notes = [FINDING]
    one = df[df["schedule"] == "one_stage"]
    for _, row in df[df["schedule"] == "two_stage"].iterrows():
        peer = one[one["construct"] == row["construct"]]
        if peer.empty:
            continue
        b = peer["run"].iloc[0]
        verdict = compare_rows(df, row["run"], b) if pd.notna(row["loss_avg"]) else "no common dev set"
        notes.append(
            f"Our outcome, {row['run']} vs {b}: dev loss {verdict} {compare_downstream(df, row['run'], b)}"
        )
    s1, s2 = stages["stage1"], stages["stage2"]
    notes.append(
        f"Scale: stage 1 {s1['steps']} steps on {dict(s1['domain_weights'])}, stage 2 {s2['steps']} steps on "
        f"{dict(s2['domain_weights'])} (weights normalised), {sft['batch_size']} chats of <= {sft['max_len']} "
        f"tokens per step (paper: ~7B tokens in total). One-stage: the same {s1['steps'] + s2['steps']} steps on "
        "the step-weighted mix. Dev loss: nats per assistant token on the last round's held-out examples "
        "(the same in every run); task columns: percent on the llama_moe_v2 task set (demo limits); *_sd: sample "
        "standard deviation over seeds; downstream_se: binomial standard error of one seed's average."
    )
    return notes
