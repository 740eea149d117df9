"""What the papers' registry modules share: the :class:`Output` record and the common columns and notes."""

from __future__ import annotations

from dataclasses import dataclass

from moelab.report.paper_table import Column, TableSpec


@dataclass(frozen=True)
class Output:
    """One table (CSV + Markdown) or figure (PNG + PDF) under ``results/papers/<paper>/``.

    ``title`` is its line in the paper's ``index.md``; ``rule`` is the Snakemake rule producing it (default
    ``<paper>_<name>``); ``in_all`` False keeps an expensive output (the construction ablations) out of
    ``rule all`` / ``papers``, ``target`` is then the rule that builds it; ``caption`` is the file under
    ``report/`` (default ``<paper>_<name>.rst``); ``heading`` is the title drawn in the file, a table's
    Markdown heading or a figure's title (default ``title``).
    """

    kind: str  # "table" | "figure"
    title: str
    rule: str = ""
    in_all: bool = True
    spec: TableSpec | None = None
    target: str = ""
    caption: str = ""
    heading: str = ""

    @property
    def extensions(self) -> tuple[str, str]:
        return ("csv", "md") if self.kind == "table" else ("png", "pdf")


def task_columns(*names: str, unit: str = "%") -> tuple[Column, ...]:
    """One task column per name (our task names), in ``unit``."""
    return tuple(Column(n, unit=unit) for n in names)


AVG = Column("average", kind="average")
AVG_COMMON = Column("avg_common", kind="avg_common", label="avg (common)")
# The GLUE tasks of the side papers' tables (SparseAdapter, PAD-Net), WNLI left out as both do, in the
# benchmark's order (Wang et al. 2018).
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
LAYOUT_ONLY = "Published numbers unverified: the paper's layout is mirrored with empty cells."
# The construction ablations' variant tables (rule construct_variant_table in rules/construct_ablation.smk):
# expensive, built by their own targets, not in `rule all`.
VARIANT_TABLE = {"rule": "construct_variant_table", "in_all": False, "caption": "construct_variant_table.rst"}
