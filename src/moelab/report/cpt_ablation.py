"""LLaMA-MoE continual pre-training data ablations (arXiv 2406.16554 sec. 4, Tables "sampling" and "filtering").

One row per ablation run (a data mixture or a corpus filter, the same constructed MoE and token budget):
held-out loss per domain after CPT (on the same raw held-out blocks for every run), its unweighted average and
the downstream average. Runs trained with several seeds show the mean and the sample standard deviation over
seeds; the verdict calls a difference real only beyond the seed noise and the downstream standard error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from moelab.report.noise import Z, binomial_se, mean_se  # noqa: E402
from moelab.report.papers.common import LAYOUT_ONLY  # noqa: E402
from moelab.report.tables import load_published  # noqa: E402

RUN_LABELS = {
    "uniform": ("static uniform", "uniform"),
    "llama_mix": ("static LLaMA mix", "static LLaMA mix"),
    "sheared_mix": ("static Sheared-LLaMA mix", "static Sheared-LLaMA mix"),
    "proportional": ("static proportional to tokens", None),
    "dynamic_sheared_llama": ("dynamic sheared_llama (Sheared-LLaMA code)", "dynamic (Sheared-LLaMA)"),
    "dynamic_sheared_llama_paper": (
        "dynamic sheared_llama_paper (LLaMA-MoE runs)",
        "dynamic (Sheared-LLaMA)",
    ),
    "dynamic_uniform_init": ("dynamic sheared_llama from uniform", None),
    "filter_fluency": ("fluency filtering", "fluency filtering"),
    "filter_ads": ("advertisement removal", "advertisement removal"),
    "filter_both": ("advertisement removal + fluency", None),
}
FILTER_LABELS = {"sheared_mix": ("no filtering (Sheared-LLaMA mix)", "no filtering")}
FINDINGS = {
    "sampling": (
        "Paper's finding (LLaMA-MoE sec. 4): static Sheared-LLaMA weights (with fluency filtering) converge at "
        "least as fast as dynamic sampling, so the released models use the static mix.",
        ("sheared_mix", "dynamic_sheared_llama"),
    ),
    "filtering": (
        "Paper's finding (LLaMA-MoE sec. 4): fluency filtering helps continual pre-training.",
        ("filter_fluency", "sheared_mix"),
    ),
}


def read_rounds(rounds_path: str | Path) -> dict:
    """The evaluation rounds of one trained seed, ``results/cpt_ablation/<run>/seed<seed>/rounds.csv``.

    Returns: {"run", "seed", "rounds": DataFrame (step, tokens, domain, loss, reference, weight)}.
    Raises: ValueError: a path not shaped like that, or a CSV without rows.
    """
    path = Path(rounds_path)
    if not path.parent.name.startswith("seed") or not path.parent.name[4:].isdigit():
        raise ValueError(f"{path}: expected .../<run>/seed<seed>/rounds.csv")
    rounds = pd.read_csv(path)
    if rounds.empty:
        raise ValueError(f"{path}: no evaluation rounds")
    return {"run": path.parent.parent.name, "seed": int(path.parent.name[4:]), "rounds": rounds}


def read_run(eval_path: str | Path, rounds_path: str | Path) -> dict:
    """One trained seed of a run: its eval record (``cpt_ablation_eval`` output) and its rounds.

    Raises:
        ValueError: the eval record lacks ``heldout_loss`` or ``average``, or belongs to another run.
    """
    record = json.loads(Path(eval_path).read_text())
    for key in ("heldout_loss", "average", "run", "seed"):
        if key not in record:
            raise ValueError(f"{eval_path}: no {key!r} (written by rule cpt_ablation_eval)")
    rounds = read_rounds(rounds_path)
    if (record["run"], record["seed"]) != (rounds["run"], rounds["seed"]):
        raise ValueError(f"{eval_path} and {rounds_path} are of different runs")
    return {**record, "rounds": rounds["rounds"]}


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation) of ``values``; the sd is None for a single value."""
    vals = [float(v) for v in values]
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def average_se(record: Mapping) -> float | None:
    """Standard error of a downstream average of k tasks: sqrt(sum_i p_i (1 - p_i) / n_i) / k (binomial per
    task, tasks independent), from a ``run_lm_eval`` summary (``primary`` values and each task's ``n``)."""
    return mean_se(binomial_se(p, record["tasks"][t].get("n")) for t, p in record.get("primary", {}).items())


def ablation_table(runs: Sequence[str], seeds: Sequence[dict], table: str) -> pd.DataFrame:
    """The ablation table, one row per run, in ``runs`` order.

    Args:
        runs: run names (keys of ``cpt_ablation.runs``).
        seeds: :func:`read_run` records (any order; several per run when it has several seeds).
        table: ``sampling`` or ``filtering`` (picks the labels).
    Returns: DataFrame with columns run, label, seeds, loss_<domain>... (mean, nats/token), loss_avg,
        loss_avg_sd (over seeds; empty for one seed), downstream_avg (percent, mean), downstream_sd,
        downstream_se (binomial SE of one seed's average, percent), published_loss, published_average.
    Raises: ValueError: a run without records.
    """
    published = load_published("llama_moe")
    published = published[published["table"] == table]
    rows = []
    for run in runs:
        recs = [r for r in seeds if r["run"] == run]
        if not recs:
            raise ValueError(f"ablation run {run!r} has no evaluated seed")
        label, pub = (FILTER_LABELS if table == "filtering" else {}).get(run) or RUN_LABELS.get(
            run, (run, None)
        )
        row = {"run": run, "label": label, "seeds": len(recs)}
        for domain in sorted(recs[0]["heldout_loss"]):
            row[f"loss_{domain}"] = round(mean_sd([r["heldout_loss"][domain] for r in recs])[0], 4)
        avg, sd = mean_sd([sum(r["heldout_loss"].values()) / len(r["heldout_loss"]) for r in recs])
        down, down_sd = mean_sd([100 * r["average"] for r in recs])
        se = average_se(recs[0])
        row.update(
            loss_avg=round(avg, 4),
            loss_avg_sd=None if sd is None else round(sd, 4),
            downstream_avg=round(down, 1),
            downstream_sd=None if down_sd is None else round(down_sd, 1),
            downstream_se=None if se is None else round(100 * se, 1),
        )
        for task, key in (("loss", "published_loss"), ("average", "published_average")):
            hit = published[(published["model"] == pub) & (published["task"] == task)]["value"]
            row[key] = float(hit.iloc[0]) if len(hit) and pd.notna(hit.iloc[0]) else None
        rows.append(row)
    return pd.DataFrame(rows)


def compare_rows(df: pd.DataFrame, a: str, b: str) -> str:
    """A sentence comparing runs ``a`` and ``b`` on the average held-out loss, beyond noise or not.

    The noise of a row is the standard error of its mean over seeds (sd / sqrt(seeds)); a single-seed row
    borrows the seed sd of the other row (the same recipe's run-to-run noise). The difference counts when
    |loss_a - loss_b| > 1.96 sqrt(se_a^2 + se_b^2); with no seed sd at all, the verdict says it cannot tell.
    """
    ra, rb = df.set_index("run").loc[a], df.set_index("run").loc[b]
    sds = [s for s in (ra["loss_avg_sd"], rb["loss_avg_sd"]) if s is not None and pd.notna(s)]
    diff = float(ra["loss_avg"] - rb["loss_avg"])
    head = f"{ra['label']} {ra['loss_avg']:.3f} vs {rb['label']} {rb['loss_avg']:.3f} nats (difference {diff:+.3f})"
    if not sds:
        return f"{head}: no seed spread measured, so the difference cannot be judged."
    pooled = max(sds)
    se_a = (ra["loss_avg_sd"] if pd.notna(ra["loss_avg_sd"]) else pooled) / math.sqrt(ra["seeds"])
    se_b = (rb["loss_avg_sd"] if pd.notna(rb["loss_avg_sd"]) else pooled) / math.sqrt(rb["seeds"])
    noise = Z * math.sqrt(se_a**2 + se_b**2)
    if abs(diff) <= noise:
        return f"{head}: within noise (seed noise +-{noise:.3f} nats at 95%)."
    better = ra["label"] if diff < 0 else rb["label"]
    return f"{head}: {better} is lower beyond the seed noise (+-{noise:.3f} nats at 95%)."


def ablation_notes(df: pd.DataFrame, table: str, steps: int, tokens_per_step: int, eval_limit) -> list[str]:
    """Notes under an ablation table: the paper's finding, our verdict with its noise, the scale."""
    finding, (a, b) = FINDINGS[table]
    notes = [finding]
    present = set(df["run"])
    if {a, b} <= present:
        verdict = compare_rows(df, a, b)
        if table == "sampling":
            ra, rb = df.set_index("run").loc[a], df.set_index("run").loc[b]
            holds = "within noise" in verdict or ra["loss_avg"] <= rb["loss_avg"]
            verdict += f" The finding (static at least as fast) {'holds' if holds else 'does not hold'} here."
        notes.append("Our outcome: " + verdict)
    else:
        notes.append(f"Our outcome: runs {a} and {b} are not both in cpt_ablation.{table}; not checked.")
    se = df["downstream_se"].dropna()
    notes.append(
        f"Scale: {steps} CPT steps of {tokens_per_step} tokens per run from the same constructed MoE (paper: "
        f"billions of tokens); held-out loss = mean per-domain LM loss (nats/token) on the raw corpora's held-out "
        f"blocks; downstream average over {eval_limit or 'all'} examples per task"
        + (f", standard error about +-{se.max():.1f} points per cell" if len(se) else "")
        + "; *_sd columns: sample standard deviation over seeds."
    )
    notes.append(LAYOUT_ONLY)
    return notes


def plot_sampling_loss(
    seeds: Sequence[dict], labels: Mapping[str, str], out_png: Path, out_pdf: Path, title: str
):
    """Held-out loss (mean over domains) against training tokens, one colour per run, one line per seed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours: dict[str, str] = {}
    for rec in seeds:
        curve = rec["rounds"].groupby("tokens")["loss"].mean()
        kwargs = (
            {"color": colours[rec["run"]]}
            if rec["run"] in colours
            else {"label": labels.get(rec["run"], rec["run"])}
        )
        line = ax.plot(curve.index, curve.values, marker=".", **kwargs)[0]
        colours.setdefault(rec["run"], line.get_color())
    ax.set_xlabel("training tokens")
    ax.set_ylabel("held-out loss, mean over domains (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png, out_pdf)


def plot_sampling_weights(
    seeds: Sequence[dict], labels: Mapping[str, str], out_png: Path, out_pdf: Path, title: str
):
    """Domain weights at each evaluation round, one panel per dynamic run (its first seed), one line per domain.

    Raises: ValueError: no runs given.
    """
    firsts = {}
    for rec in seeds:
        firsts.setdefault(rec["run"], rec)
    if not firsts:
        raise ValueError("no dynamic runs to draw")
    fig, axes = plt.subplots(1, len(firsts), figsize=(4.5 * len(firsts), 3.8), squeeze=False, sharey=True)
    for ax, (run, rec) in zip(axes[0], firsts.items(), strict=True):
        for domain, part in rec["rounds"].groupby("domain"):
            ax.plot(part["step"], part["weight"], marker=".", label=domain)
        ax.set_title(labels.get(run, run), fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("domain weight")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out_png, out_pdf)


def plot_message(text: str, out_png: Path, out_pdf: Path, title: str) -> None:
    """A figure that only says why there is nothing to draw (the configured runs hold no data for it)."""
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    fig.suptitle(title)
    _save(fig, out_png, out_pdf)


def _save(fig, out_png: Path, out_pdf: Path) -> None:
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    fig.savefig(out_pdf)
    plt.close(fig)
