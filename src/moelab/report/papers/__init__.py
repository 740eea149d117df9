"""Registry of every paper's tables and figures: what each shows, which of our runs fill it.

One module per paper of :data:`moelab.papers.PAPERS` (``moelab/report/papers/<paper>.py``), each defining
``TABLES`` (its generic published-vs-ours :class:`TableSpec` tables), ``EXTRA_OUTPUTS`` (its other tables and
figures, name -> :class:`Output`) and ``PENDING`` (name -> why no stage draws it yet); this package assembles
them in paper order.

:data:`OUTPUTS` (paper -> output name -> :class:`Output`) lists every file under ``results/papers/<paper>/``
that a rule produces (``tests/test_report_papers.py`` checks each has one). :data:`PENDING` lists the
figures and tables of the papers that no stage of the pipeline can draw yet; they appear in each paper's
``index.md`` as "not reproduced yet" (we never draw placeholder figures: a figure exists only when the data it
plots exist).

Our runs are named by source keys ``stage/paper`` = ``results/eval/{stage}/{paper}.json``. Keys whose stage
the workflow does not have yet (e.g. ``sft_dynamic/moe_sft``) show ``not reproduced yet`` until a rule
produces them; the stage names are the contract for the helpers that add those stages.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import import_module

from moelab.papers import PAPERS
from moelab.report.paper_table import TableSpec
from moelab.report.papers.common import Output

__all__ = ["OUTPUTS", "PAPERS", "PENDING", "TABLES", "Output", "index_markdown", "paper_files", "table_spec"]

_MODULES = {paper: import_module(f"{__name__}.{paper}") for paper in PAPERS}

TABLES: tuple[TableSpec, ...] = tuple(spec for module in _MODULES.values() for spec in module.TABLES)


def _build_outputs() -> dict[str, dict[str, Output]]:
    """paper -> name -> :class:`Output`: TABLES (a name in the module's ``TABLE_TARGETS`` is kept out of ``all``
    and built by that target), then EXTRA_OUTPUTS; rule, caption and heading defaults filled."""
    out: dict[str, dict[str, Output]] = {}
    for paper, module in _MODULES.items():
        targets = getattr(module, "TABLE_TARGETS", {})
        items = {
            spec.name: Output(
                "table",
                spec.title,
                spec=spec,
                in_all=spec.name not in targets,
                target=targets.get(spec.name, ""),
            )
            for spec in module.TABLES
        }
        items.update(module.EXTRA_OUTPUTS)
        out[paper] = {
            name: replace(
                o,
                rule=o.rule or f"{paper}_{name}",
                caption=o.caption or f"{paper}_{name}.rst",
                heading=o.heading or o.title,
            )
            for name, o in items.items()
        }
    return out


OUTPUTS: dict[str, dict[str, Output]] = _build_outputs()

# Rules a cluster run (profiles/slurm) executes where Snakemake runs, not as one sbatch job each (the Snakefile's
# `localrules`): every paper table, figure and index (seconds of CPU each) and the evaluation-data downloads
# (megabytes; compute nodes often have no internet). .ci/slurm_check.py allows exactly these on the submit host.
CLUSTER_LOCAL_RULES: tuple[str, ...] = (
    *sorted({o.rule for items in OUTPUTS.values() for o in items.values()} | {"paper_index"}),
    "download_eval_data",
)

# Tables and figures of the papers that no stage draws yet (listed in index.md as not reproduced yet).
PENDING: dict[str, dict[str, str]] = {paper: dict(module.PENDING) for paper, module in _MODULES.items()}


def table_spec(paper: str, name: str) -> TableSpec:
    """The registered :class:`TableSpec` of ``paper``/``name``.

    Raises:
        KeyError: naming the paper/table when it is not a registered generic table.
    """
    out = OUTPUTS.get(paper, {}).get(name)
    if out is None or out.spec is None:
        known = sorted(f"{s.paper}/{s.name}" for s in TABLES)
        raise KeyError(f"no paper table {paper}/{name}; registered: {', '.join(known)}")
    return out.spec


def paper_files(paper: str, root: str = "results/papers", in_all_only: bool = False) -> list[str]:
    """Every file of ``paper``'s registered outputs (``<root>/<paper>/<name>.<ext>``), registry order."""
    return [
        f"{root}/{paper}/{name}.{ext}"
        for name, o in OUTPUTS[paper].items()
        if o.in_all or not in_all_only
        for ext in o.extensions
    ]


def index_markdown(paper: str) -> str:
    """``index.md`` of a paper: every table and figure with its files, or why it is not reproduced yet."""
    lines = [f"# {paper}: tables and figures", "", "| item | what | files / status |", "|---|---|---|"]
    for name, o in OUTPUTS[paper].items():
        files = ", ".join(f"[{name}.{e}]({name}.{e})" for e in o.extensions)
        note = "" if o.in_all else f" (not in `all`; target: `snakemake --cores all {o.target}`)"
        lines.append(f"| {name} | {o.title} | {files}{note} |")
    for name, why in PENDING.get(paper, {}).items():
        lines.append(f"| {name} | {why} | not reproduced yet |")
    lines += [
        "",
        f"Rebuild one file: `snakemake --cores all results/papers/{paper}/<item>.<ext>`; "
        f"all of them: `snakemake --cores all {paper}`.",
    ]
    return "\n".join(lines) + "\n"
