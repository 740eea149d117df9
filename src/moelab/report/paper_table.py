"""Generic paper table: for every (row, column) cell the published number, ours and ours - published.

A table is described by a :class:`TableSpec` (rows, columns, claims); :func:`paper_table` fills it from the
paper's published CSV (``moelab/report/published/<paper>.csv``) and our evaluation results
(``results/eval/{stage}/{paper}.json``: ``{"primary": {task: value in [0, 1]}, ...}``).

Long CSV format (one line per cell), written by :func:`write_paper_table`:

=================  ====================================================================================
``row``            row label (a published model, a strategy, or one of our runs)
``column``         column name (a task in our task names, ``average``, ``avg_common``, ``retained``, ...)
``published``      the paper's number (empty when not published or unverified layout)
``ours``           our number, or a marker: ``not reproduced yet`` (the stage producing it is not built),
                   ``not evaluated`` (the stage exists but this column is not measured)
``delta``          ours - published, same units (percent points for accuracies), when both are numbers
``ours_se``        the standard error of our number, same units (:mod:`moelab.report.noise`: lm-eval's stderr
                   per task, else binomial; a mean of k cells sqrt(sum se^2) / k), empty when unknown
``unit``           ``%`` (percent points), ``score`` (e.g. MT-Bench 1-10), ``M`` (millions), ``x``, ``GB``
``verified``       whether the published number was confirmed from the paper (false = keep with a mark)
``published_from`` where the published number comes from (paper table, README), ``ours_from`` the input
=================  ====================================================================================

Averages: ``average`` is the paper's own average over all its task columns (ours only when every task
column was measured); ``avg_common`` averages, for every row, only the task columns that our runs measured,
so published and ours compare over the same tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moelab.report.noise import Z, mean_se, noise_threshold, ratio_se, task_se

NOT_YET = "not reproduced yet"
NOT_EVALUATED = "not evaluated"
# Accuracy of a random guess (%) per multiple-choice task, to say whether a score is above chance.
CHANCE = {
    "arc_easy": 25.0, "arc_challenge": 25.0, "piqa": 50.0, "sciq": 25.0, "boolq": 50.0,
    "hellaswag": 25.0, "winogrande": 50.0, "openbookqa": 25.0, "rte": 50.0, "logiqa": 25.0, "mmlu": 25.0,
}  # fmt: skip
LONG_COLUMNS = (
    "row",
    "column",
    "published",
    "ours",
    "delta",
    "ours_se",
    "unit",
    "verified",
    "published_from",
    "ours_from",
)


@dataclass(frozen=True)
class Column:
    """One column of a paper table.

    Attributes:
        name: key in the published CSV (``task`` column) and in the long output.
        kind: ``task`` (mean of ``tasks`` from our ``primary`` results, x100), ``average`` (mean of all task
            columns), ``avg_common`` (mean of the task columns our runs measured), ``retained`` (100 *
            avg_common / avg_common of the table's ``reference`` row), ``extra`` (a number our stage wrote
            elsewhere, e.g. parameters; given per source to :func:`paper_table`), ``published`` (paper only).
        tasks: our task names averaged into a ``task`` column (default: ``(name,)``), e.g. the MoE-SFT "QA"
            column = ARC-e, ARC-c, BoolQ.
        unit: ``%``, ``score``, ``M``, ``x``, ``GB``, ``RMSE``.
        label: header shown in Markdown (default: ``name``).
        higher_is_better: False for errors (RMSE, FCD); claims count a lower value as better.

    ``eval_average`` (kind): 100 x the ``average`` field of our evaluation result (its whole suite).
    Our ``primary`` values are fractions; ``%`` columns show them x100, other units as they are.
    """

    name: str
    kind: str = "task"
    tasks: tuple[str, ...] = ()
    unit: str = "%"
    label: str = ""
    higher_is_better: bool = True

    @property
    def scale(self) -> float:
        return 100.0 if self.unit == "%" else 1.0

    def our_tasks(self) -> tuple[str, ...]:
        return self.tasks or (self.name,)


@dataclass(frozen=True)
class Row:
    """One row: a published model (``published`` = its name in the CSV), one of our runs (``ours`` = a source
    key such as ``"pretrain/llama_moe"``, i.e. ``results/eval/pretrain/llama_moe.json``), or both (ours is
    then compared cell by cell with that published row)."""

    label: str
    published: str | None = None
    ours: str | None = None


@dataclass(frozen=True)
class Claim:
    """A qualitative claim checked on our numbers.

    ``kind="above"``: row ``better`` scores above row ``worse`` (count of task columns and avg_common).
    ``kind="retained"``: row ``better`` keeps at least ``threshold`` percent of row ``worse``'s avg_common.
    """

    text: str
    better: str
    worse: str
    kind: str = "above"
    threshold: float = 0.0
    columns: tuple[str, ...] = ()  # columns compared (default: every task / eval_average column)


@dataclass(frozen=True)
class TableSpec:
    """A paper table: title, the published CSV's ``table`` name, columns, rows, claims, notes."""

    paper: str
    name: str
    title: str
    published_table: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    claims: tuple[Claim, ...] = ()
    notes: tuple[str, ...] = ()
    reference: str | None = None  # row label for `retained` columns
    extras: dict[str, str] = field(
        default_factory=dict
    )  # source key -> extra input kind (e.g. "compress_report")

    def __post_init__(self):
        labels = [r.label for r in self.rows]
        if len(set(labels)) != len(labels):
            raise ValueError(f"table {self.paper}/{self.name}: duplicate row labels {labels}")
        for claim in self.claims:
            for label in (claim.better, claim.worse):
                if label not in labels:
                    raise ValueError(f"table {self.paper}/{self.name}: claim names unknown row {label!r}")
        if any(c.kind == "retained" for c in self.columns) and self.reference not in labels:
            raise ValueError(
                f"table {self.paper}/{self.name}: a retained column needs `reference` = a row label"
            )

    def sources(self) -> list[str]:
        """Our source keys (``stage/paper``) in row order, without repeats."""
        return list(dict.fromkeys(r.ours for r in self.rows if r.ours))

    @property
    def task_columns(self) -> list[Column]:
        return [c for c in self.columns if c.kind == "task"]


def _num(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)


def _mean(values) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 2) if values else None


def _published_lookup(published: pd.DataFrame, spec: TableSpec) -> dict[tuple[str, str], dict]:
    """(model, column) -> {"value", "verified", "source"} of the spec's table in the published CSV."""
    pub = published[published["table"] == spec.published_table]
    out = {}
    for rec in pub.to_dict("records"):
        value = rec["value"]
        out[(rec["model"], rec["task"])] = {
            "value": float(value) if value == value and value != "" else None,
            "verified": str(rec["verified"]).lower() in ("true", "yes", "1"),
            "source": rec["source"],
        }
    return out


def _our_task_value(result: dict | None, col: Column):
    """Our value (percent) of a ``task`` column, or a marker."""
    if result is None:
        return NOT_YET
    prim = result.get("primary", {})
    tasks = col.our_tasks()
    if not all(t in prim for t in tasks):
        return NOT_EVALUATED
    return round(col.scale * sum(prim[t] for t in tasks) / len(tasks), 2)


def _our_task_se(result: dict | None, col: Column) -> float | None:
    """Standard error of our value of a ``task`` column (its units), or None when unknown."""
    if result is None:
        return None
    se = mean_se(task_se(result, t) for t in col.our_tasks())
    return None if se is None else col.scale * se


def _round_se(se: float | None) -> float | None:
    return None if se is None else round(se, 2)


def paper_table(
    spec: TableSpec,
    published: pd.DataFrame,
    ours: dict[str, dict | None],
    extras: dict[str, dict[str, float]] | None = None,
) -> pd.DataFrame:
    """Fill ``spec`` with published numbers and ours.

    Args:
        spec: the table.
        published: :func:`moelab.report.tables.load_published` of the paper.
        ours: source key -> evaluation result (``{"primary": {task: value in [0, 1]}}``) or None when the
            stage is not built; a source missing from the mapping counts as not built.
        extras: source key -> {column name: value} for ``extra`` columns (e.g. ``params_m``).
    Returns:
        Long DataFrame with :data:`LONG_COLUMNS`, one line per (row, column) in spec order.
    Raises:
        KeyError: a row names a published model that the paper's CSV lacks for this table.
    """
    extras = extras or {}
    pub = _published_lookup(published, spec)
    models = {m for m, _ in pub}
    for row in spec.rows:
        if row.published and row.published not in models:
            raise KeyError(
                f"table {spec.paper}/{spec.name}: published model {row.published!r} is not in table "
                f"{spec.published_table!r} of published/{spec.paper}.csv"
            )
    task_cols = spec.task_columns
    # our value per (row label, column name); task columns first, derived ones below
    val: dict[tuple[str, str], object] = {}
    se: dict[tuple[str, str], float | None] = {}  # standard error of each our task cell
    for row in spec.rows:
        if row.ours is None:
            continue
        res = ours.get(row.ours)
        for col in task_cols:
            val[row.label, col.name] = _our_task_value(res, col)
            se[row.label, col.name] = _our_task_se(res, col)
    measured = [
        c.name
        for c in task_cols
        if any(_num(val.get((r.label, c.name))) for r in spec.rows if r.ours)
        and all(_num(val.get((r.label, c.name))) or ours.get(r.ours) is None for r in spec.rows if r.ours)
    ]

    def pub_value(row: Row, col: str):
        if row.published is None:
            return None
        return pub.get((row.published, col), {}).get("value")

    def common(get, row: Row):
        values = [get(row, c) for c in measured]
        return _mean(values) if measured and all(_num(v) for v in values) else None

    def ours_value(row: Row, c: str):
        return val.get((row.label, c))

    ref = next((r for r in spec.rows if r.label == spec.reference), None)
    records = []
    for row in spec.rows:
        built = row.ours is not None and ours.get(row.ours) is not None
        for col in spec.columns:
            meta = pub.get((row.published, col.name), {}) if row.published else {}
            p = meta.get("value")
            if col.kind == "avg_common":
                p = common(pub_value, row)
            o = o_se = None
            if row.ours is not None:
                if not built:
                    o = NOT_YET
                elif col.kind == "task":
                    o, o_se = val[row.label, col.name], se[row.label, col.name]
                elif col.kind == "average":
                    vs = [val[row.label, c.name] for c in task_cols]
                    o = _mean(vs) if all(_num(v) for v in vs) else NOT_EVALUATED
                    o_se = mean_se(se[row.label, c.name] for c in task_cols) if _num(o) else None
                elif col.kind == "avg_common":
                    o = common(ours_value, row) if measured else NOT_EVALUATED
                    o_se = mean_se(se[row.label, c] for c in measured) if _num(o) else None
                elif col.kind == "retained":
                    mine = common(ours_value, row)
                    base = common(ours_value, ref) if ref is not None and ref.ours else None
                    o = round(100 * mine / base, 2) if mine is not None and base else NOT_EVALUATED
                elif col.kind == "eval_average":
                    res = ours[row.ours]
                    avg = res.get("average")
                    o = round(col.scale * avg, 2) if _num(avg) else NOT_EVALUATED
                    s = mean_se(task_se(res, t) for t in res.get("primary", {}))
                    o_se = col.scale * s if _num(o) and s is not None else None
                elif col.kind == "extra":
                    o = extras.get(row.ours, {}).get(col.name, NOT_EVALUATED)
                else:
                    o = NOT_EVALUATED
            delta = round(o - p, 2) if _num(o) and _num(p) else None
            records.append(
                {
                    "row": row.label,
                    "column": col.name,
                    "published": p,
                    "ours": o,
                    "delta": delta,
                    "ours_se": _round_se(o_se),
                    "unit": col.unit,
                    "verified": meta.get("verified") if row.published else None,
                    "published_from": meta.get("source") if row.published else None,
                    "ours_from": row.ours,
                }
            )
    return pd.DataFrame(records, columns=list(LONG_COLUMNS))


def _fmt(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if _num(x):
        text = f"{x:+.2f}" if signed else f"{x:.2f}"
        text = text.rstrip("0")
        return text + "0" if text.endswith(".") else text
    return str(x)


def table_markdown(spec: TableSpec, long: pd.DataFrame) -> str:
    """Wide Markdown: per row up to three lines (published, ours, delta); unverified published numbers get
    a ``*``; a published row without any number reads ``not published here``."""
    header = ["model", "value"] + [c.label or c.name for c in spec.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in spec.rows:
        cells = long[long["row"] == row.label]
        label = row.label
        if row.published:
            pub = [
                _fmt(v) + ("*" if _fmt(v) and ver is not None and not pd.isna(ver) and not ver else "")
                for v, ver in zip(cells.published, cells.verified, strict=True)
            ]
            if not any(pub):
                pub = ["not published here"] + [""] * (len(pub) - 1)
            what = "published" if row.ours is None else f"published ({row.published})"
            lines.append("| " + " | ".join([label, what, *pub]) + " |")
            label = ""
        if row.ours:
            lines.append("| " + " | ".join([label, "ours", *(_fmt(v) for v in cells.ours)]) + " |")
            if row.published and cells["delta"].notna().any():
                lines.append(
                    "| " + " | ".join(["", "ours - published", *(_fmt(v, True) for v in cells.delta)]) + " |"
                )
    return "\n".join(lines)


def _row_values(long: pd.DataFrame, label: str, column: str = "ours") -> dict[str, object]:
    cells = long[long["row"] == label]
    return dict(zip(cells["column"], cells[column], strict=True))


def _se_or_none(x) -> float | None:
    return float(x) if _num(x) else None


def verdict(spec: TableSpec, claim: Claim, long: pd.DataFrame) -> str:
    """One sentence: the claim, and whether it holds on our numbers beyond their noise (or why it cannot be
    judged).

    ``above``: the mean of the shared task columns (sign-flipped where lower is better) of ``better`` vs
    ``worse``; the difference counts only beyond Z sqrt(se_a^2 + se_b^2), each se the standard error of a
    row's mean (``ours_se`` of its cells combined as sqrt(sum se^2) / k; :mod:`moelab.report.noise`), and
    the sentence says "within noise" otherwise. Not judged when a row is not built, no task column is shared,
    both rows are within 2 points of chance (no signal at this scale), or a cell has no standard error.
    ``retained``: ``better``'s ``retained`` column (else the ratio of the means) against ``threshold``, only
    when ``worse`` is above chance beyond its noise (mean - chance > Z se); the ratio's standard error is the
    delta method's r sqrt((se_a/a)^2 + (se_b/b)^2); it holds when kept - Z se_r >= threshold, fails when
    kept + Z se_r < threshold, and is within noise of the threshold otherwise.

    Raises:
        KeyError: the claim names a row the table does not have.
    """
    a, b = _row_values(long, claim.better), _row_values(long, claim.worse)
    name_a, name_b = claim.better.removeprefix("ours: "), claim.worse.removeprefix("ours: ")
    if not a or not b:
        raise KeyError(
            f"claim of {spec.paper}/{spec.name} names a row not in the table: {claim.better!r} / {claim.worse!r}"
        )
    se_a = _row_values(long, claim.better, "ours_se") if "ours_se" in long else {}
    se_b = _row_values(long, claim.worse, "ours_se") if "ours_se" in long else {}
    head = f"Claim: {claim.text} Our numbers:"
    cols = [c for c in spec.columns if c.kind in ("task", "eval_average")]
    if claim.columns:
        cols = [c for c in cols if c.name in claim.columns]
    sign = {c.name: 1 if c.higher_is_better else -1 for c in cols}
    tasks = [c.name for c in cols if _num(a.get(c.name)) and _num(b.get(c.name))]
    if not tasks:
        for label, vals in ((name_a, a), (name_b, b)):
            if NOT_YET in vals.values():
                return f"{head} not judged ({label}: {NOT_YET})."
        return f"{head} not judged (no task measured for both {name_a} and {name_b})."
    mean_a, mean_b = (sum(sign[t] * v[t] for t in tasks) / len(tasks) for v in (a, b))
    sem_a = mean_se(_se_or_none(se_a.get(t)) for t in tasks)
    sem_b = mean_se(_se_or_none(se_b.get(t)) for t in tasks)
    chance = sum(CHANCE[t] for t in tasks) / len(tasks) if all(t in CHANCE for t in tasks) else None
    if claim.kind == "retained":
        kept = a.get("retained") if _num(a.get("retained")) else 100 * mean_a / mean_b
        text = (
            f"{head} {name_a} keeps {kept:.1f}% of {name_b}'s average over {len(tasks)} tasks "
            f"({mean_a:.1f} vs {mean_b:.1f})"
        )
        if sem_a is None or sem_b is None:
            return f"{text}; cannot be judged against noise (no standard error for these cells)."
        if chance is not None and mean_b - chance <= Z * sem_b:
            return (
                f"{text}; cannot be judged (the reference model is within noise of chance: {mean_b:.1f} vs "
                f"chance {chance:.1f}, SE {sem_b:.1f})."
            )
        band = Z * 100 * ratio_se(mean_a, sem_a, mean_b, sem_b) if mean_a and mean_b else float("inf")
        if kept - band >= claim.threshold:
            outcome = "the claim holds"
        elif kept + band < claim.threshold:
            outcome = "the claim does not hold"
        else:
            outcome = "within noise of the threshold"
        return f"{text}, +-{band:.1f} at 95%; {outcome} at our scale (threshold {claim.threshold:g}%)."
    wins = sum(sign[t] * (a[t] - b[t]) > 0 for t in tasks)
    ties = sum(a[t] == b[t] for t in tasks)
    if chance is not None and max(mean_a, mean_b) <= chance + 2.0:
        return (
            f"{head} {name_a} {mean_a:.1f} vs {name_b} {mean_b:.1f} over {len(tasks)} tasks: "
            f"cannot be judged here (both within 2 points of chance, {chance:.1f})."
        )
    text = f"{head} {name_a} above {name_b} on {wins} of {len(tasks)} tasks, tied on {ties} (mean {mean_a:.1f} vs {mean_b:.1f}"
    noise = noise_threshold(sem_a, sem_b)
    if noise is None:
        return f"{text}); cannot be judged against noise (no standard error for these cells)."
    diff = mean_a - mean_b
    if abs(diff) <= noise:
        return f"{text}, difference {diff:+.1f} within +-{noise:.1f} at 95%): within noise at our scale."
    return (
        f"{text}, difference {diff:+.1f} beyond +-{noise:.1f} at 95%); the claim "
        f"{'holds' if diff > 0 else 'does not hold'} at our scale."
    )


def noise_footer(long: pd.DataFrame) -> str | None:
    """The footer line giving the standard errors our cells carry (None when no cell has one)."""
    if "ours_se" not in long:
        return None
    cells = long[long["ours_se"].map(_num)]
    if cells.empty:
        return None
    lo, hi = float(cells["ours_se"].min()), float(cells["ours_se"].max())
    return (
        f"Noise: our cells carry a standard error of {lo:.1f}-{hi:.1f} (column units; lm-eval's stderr per "
        "task, else binomial sqrt(p(1-p)/n); averages sqrt(sum se^2)/k; the `ours_se` column of the CSV). "
        f"A verdict counts a difference only beyond {Z} combined standard errors."
    )


def write_paper_table(
    spec: TableSpec, long: pd.DataFrame, csv_path: Path, md_path: Path, notes: list[str] = ()
) -> None:
    """Write the long CSV and the Markdown (title, wide table, verdicts, notes, legend).

    The Markdown is written to a temporary name and renamed, so an interrupted run leaves no complete-looking
    file.
    """
    csv_path, md_path = Path(csv_path), Path(md_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    verdicts = [verdict(spec, c, long) for c in spec.claims]
    legend = (
        "Legend: `published` = the paper's number (* = unverified), `ours` = this pipeline, "
        "`ours - published` in the column's units (percent points for accuracies); "
        f"`{NOT_YET}` = the stage that produces it is not built; `{NOT_EVALUATED}` = not measured by our "
        "evaluation suite; `avg_common` = mean over the task columns our runs measured, for every row."
    )
    body = "\n\n".join(
        [
            f"# {spec.title}",
            table_markdown(spec, long),
            *verdicts,
            *filter(None, [noise_footer(long)]),
            *spec.notes,
            *notes,
            legend,
        ]
    )
    tmp_csv, tmp_md = csv_path.with_name(csv_path.name + ".tmp"), md_path.with_name(md_path.name + ".tmp")
    long.to_csv(tmp_csv, index=False)
    tmp_md.write_text(body + "\n")
    tmp_csv.replace(csv_path)
    tmp_md.replace(md_path)
