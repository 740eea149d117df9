"""Paper tables and figures: published numbers beside ours (registry: :mod:`moelab.report.papers`)."""

from moelab.report.figures import plot_expert_load, plot_loss_curves
from moelab.report.paper_table import (
    NOT_EVALUATED,
    NOT_YET,
    Claim,
    Column,
    Row,
    TableSpec,
    paper_table,
    table_markdown,
    verdict,
    write_paper_table,
)
from moelab.report.papers import OUTPUTS, PAPERS, PENDING, TABLES, index_markdown, paper_files, table_spec
from moelab.report.tables import (
    CHANCE,
    LLAMA_MOE_TASKS,
    chance_average,
    compression_extras,
    load_published,
    scale_note,
    write_table,
)

__all__ = [
    "CHANCE",
    "LLAMA_MOE_TASKS",
    "NOT_EVALUATED",
    "NOT_YET",
    "OUTPUTS",
    "PAPERS",
    "PENDING",
    "TABLES",
    "Claim",
    "Column",
    "Row",
    "TableSpec",
    "chance_average",
    "compression_extras",
    "index_markdown",
    "load_published",
    "paper_files",
    "paper_table",
    "plot_expert_load",
    "plot_loss_curves",
    "scale_note",
    "table_markdown",
    "table_spec",
    "verdict",
    "write_paper_table",
    "write_table",
]
