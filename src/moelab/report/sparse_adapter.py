"""SparseAdapter's tables and figures from the stage's runs (results/sparse_adapter/<run>.json).

A run file holds ``{"variant", "tasks": {task: {"seeds": [run_classifier's dict per seed]}}}``. Accuracies are test
accuracies in percent; every cell is the mean over seeds +- the sample standard deviation over seeds (n - 1;
0 for one seed). A row's average is the mean over tasks of each seed's per-task accuracies, so its spread is
the spread of the seeds' averages.

Verdicts (He et al. 2022, arXiv 2210.04284, the paper's claims): a difference of averages counts only when it
exceeds the combined seed spread ``sqrt(sd_a^2 + sd_b^2)``; otherwise "within noise".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from moelab.adapters.options import FULL_FT, parse_variant

KIND_LABELS = {"houlsby": "Houlsby adapter", "pfeiffer": "Pfeiffer adapter", "lora": "LoRA",
               "parallel": "MAM adapter"}  # fmt: skip
# our parallel adapter is the FFN half of MAM (moelab.adapters.modules): its row stands beside MAM's
KIND_NOTES = {"parallel": " (parallel, FFN half)"}


def read_runs(paths: Sequence[str | Path]) -> dict[tuple[str, str], dict]:
    """(run, task) -> the run file's content."""
    out = {}
    for p in paths:
        rec = json.loads(Path(p).read_text())
        for task, by_task in rec["tasks"].items():
            out[(rec["variant"], task)] = by_task
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def seed_accuracies(runs: Mapping, variant: str, task: str) -> list[float]:
    """Test accuracy in percent of each seed of (run, task), in seed order."""
    return [100.0 * s["test_acc"] for s in runs[(variant, task)]["seeds"]]


def seed_averages(runs: Mapping, variant: str, tasks: Sequence[str]) -> list[float]:
    """Per seed, the mean test accuracy (percent) over ``tasks``."""
    per_task = [seed_accuracies(runs, variant, t) for t in tasks]
    return [sum(col) / len(col) for col in zip(*per_task, strict=True)]


def row_label(variant: str) -> str:
    """``Houlsby adapter``, ``Houlsby adapter + SparseAdapter (snip 40%)``, ``... Large-Sparse x2``, ``full
    fine-tuning``."""
    v = parse_variant(variant)
    if v["kind"] == "full":
        return "full fine-tuning"
    label = KIND_LABELS[v["kind"]] + KIND_NOTES.get(v["kind"], "")
    if v["pruner"]:
        label += f" + SparseAdapter ({v['pruner']} {round(100 * v['sparsity'])}%)"
    return label + (f" Large-Sparse x{v['k']}" if v["k"] > 1 else "")


def published_name(variant: str) -> str:
    """The row name in published/sparse_adapter.csv for a run (pruned rows: the paper's + SparseAdapter)."""
    v = parse_variant(variant)
    if v["kind"] == "full":
        return "full fine-tuning"
    if v["k"] > 1:
        return "Large-Sparse SparseAdapter"
    return KIND_LABELS[v["kind"]] + (" + SparseAdapter" if v["pruner"] else "")


def _fmt(m: float, sd: float) -> str:
    return f"{m:.1f} ± {sd:.1f}"


def _published(published: pd.DataFrame, table: str, name: str, task: str) -> str:
    hit = published[(published.table == table) & (published.model == name) & (published.task == task)]
    if hit.empty or pd.isna(hit.value.iloc[0]):
        return "—"
    return f"{float(hit.value.iloc[0]):.1f}" + ("" if bool(hit.verified.iloc[0]) else "*")


def results_table(runs: Mapping, variants: Sequence[str], tasks: Sequence[str], published: pd.DataFrame,
                  table: str) -> pd.DataFrame:  # fmt: skip
    """One row per run: per-task and average test accuracy (mean, sd), parameter counts, published average.

    Columns: row, run, ``<task>`` / ``<task>_sd`` per task, average, average_sd, trainable, nonzero (trainable
    parameters less the pruned ones, seed 1's run), seeds, published_average (``—`` where no source gives it,
    ``*`` unverified).
    """
    rows = []
    for v in variants:
        row = {"row": row_label(v), "run": v}
        for t in tasks:
            row[t], row[f"{t}_sd"] = mean_sd(seed_accuracies(runs, v, t))
        row["average"], row["average_sd"] = mean_sd(seed_averages(runs, v, tasks))
        params = runs[(v, tasks[0])]["seeds"][0]["params"]
        row["trainable"], row["nonzero"] = params["trainable"], params["trainable_nonzero"]
        row["seeds"] = len(runs[(v, tasks[0])]["seeds"])
        row["published_average"] = _published(published, table, published_name(v), "average")
        rows.append(row)
    return pd.DataFrame(rows)


def compare(runs: Mapping, a: str, b: str, tasks: Sequence[str]) -> tuple[float, float, str]:
    """``(mean_a - mean_b, combined seed sd, word)`` of two runs' averages; word is ``higher``, ``lower`` or
    ``within noise`` (|difference| <= sqrt(sd_a^2 + sd_b^2))."""
    ma, sa = mean_sd(seed_averages(runs, a, tasks))
    mb, sb = mean_sd(seed_averages(runs, b, tasks))
    diff, spread = ma - mb, math.sqrt(sa * sa + sb * sb)
    word = "within noise" if abs(diff) <= spread else ("higher" if diff > 0 else "lower")
    return diff, spread, word


def _sentence(runs, a, b, tasks) -> str:
    diff, spread, word = compare(runs, a, b, tasks)
    return f"{row_label(a)} vs {row_label(b)}: {diff:+.1f} points (seed spread {spread:.1f}): {word}"


def glue_verdicts(runs: Mapping, variants: Sequence[str], tasks: Sequence[str]) -> list[str]:
    """Per adapter kind: the pruned run vs the dense one (claims: comparable; SNIP 40% better), and the
    best adapter row vs full fine-tuning."""
    lines = []
    dense = {parse_variant(v)["kind"]: v for v in variants if parse_variant(v)["pruner"] is None}
    for v in variants:
        p = parse_variant(v)
        if p["pruner"] and p["kind"] in dense:
            lines.append(_sentence(runs, v, dense[p["kind"]], tasks))
    return lines


def markdown(df: pd.DataFrame, tasks: Sequence[str], title: str, notes: Sequence[str]) -> str:
    """The table as Markdown with the notes and verdicts under it."""
    head = ["row", *tasks, "average", "trainable", "non-zero", "published avg"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [r.row, *(_fmt(r[t], r[f"{t}_sd"]) for t in tasks), _fmt(r.average, r.average_sd),
                 f"{int(r.trainable):,}", f"{int(r.nonzero):,}", r.published_average]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join([*lines, "", *(f"- {n}" for n in notes)]) + "\n"


def scale_note(cfg: Mapping, n_seeds: int) -> str:
    """What scale our numbers come from (config section sparse_adapter)."""
    s = cfg["sizes"]
    return (
        f"Ours: test accuracy (%) on {', '.join(cfg['tasks'])} (offline GLUE validation sets split train "
        f"{s['train']} / dev {s['dev']} / test {s['test']} by seed), mean ± sd over {n_seeds} seeds; "
        f"{cfg['steps']} AdamW steps of {cfg['batch_size']}, adapter width {cfg['bottleneck']}, encoder source "
        f"{cfg['encoder']['source']} (paper: RoBERTa-base, full GLUE, 10 epochs). Published: the paper's GLUE "
        "average over its 8 tasks, not our 3; '—' = no source checked in gives the cell."
    )


def large_sparse_rows(large: Mapping[int, str]) -> list[str]:
    """The Large-Sparse table's runs: the dense adapter (k = 1), each k, then full fine-tuning."""
    return [*(large[k] for k in sorted(large)), FULL_FT]


def plot_sparsity(runs, sweep: Mapping[str, Mapping[float, str]], tasks, out_png, out_pdf, title) -> None:
    """fig_sparsity: average test accuracy (percent) vs sparsity (percent removed), one line per pruner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for pruner, by in sweep.items():
        xs = sorted(by)
        stats = [mean_sd(seed_averages(runs, by[x], tasks)) for x in xs]
        ax.errorbar([100 * x for x in xs], [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                    capsize=3, label=pruner)  # fmt: skip
    ax.set_xlabel("sparsity (% of adapter weights removed at initialisation)")
    ax.set_ylabel(f"test accuracy (%), mean of {len(tasks)} tasks")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out_png, out_pdf)


def plot_large_sparse(runs, large: Mapping[int, str], tasks, out_png, out_pdf, title) -> None:
    """fig_large_sparse: average test accuracy vs width multiplier k, full fine-tuning as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ks = sorted(large)
    stats = [mean_sd(seed_averages(runs, large[k], tasks)) for k in ks]
    ax.errorbar(ks, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                label="adapter width x k, sparsity 1 - 1/k")  # fmt: skip
    fm, fs = mean_sd(seed_averages(runs, FULL_FT, tasks))
    ax.axhline(fm, color="k", ls="--", label="full fine-tuning")
    ax.axhspan(fm - fs, fm + fs, color="k", alpha=0.1)
    ax.set_xticks(ks)
    ax.set_xlabel("width multiplier k (same non-zero count)")
    ax.set_ylabel(f"test accuracy (%), mean of {len(tasks)} tasks")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out_png, out_pdf)


def _save(fig, out_png, out_pdf) -> None:
    fig.tight_layout()
    for p in (out_png, out_pdf):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
