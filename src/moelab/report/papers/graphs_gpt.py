"""GraphsGPT (arXiv 2402.02464): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import LAYOUT_ONLY, Output, task_columns

ROC = ("tox21", "toxcast", "sider", "hiv", "bbbp", "bace")
RMSE = ("esol", "freesolv", "lipo")
GRAPHS_MOLECULENET = TableSpec(
    paper="graphs_gpt",
    name="table_moleculenet",
    title="GraphsGPT on MoleculeNet: published vs ours (ROC-AUC %, RMSE)",
    published_table="moleculenet",
    columns=(
        *task_columns(*ROC),
        *(Column(n, unit="RMSE", higher_is_better=False) for n in RMSE),
    ),
    rows=(
        Row("ours: graph words", published="GraphsGPT", ours="graphs/graphs_gpt"),
        Row("best prior method", published="best prior method"),
        Row("ours: Morgan fingerprints", ours="graphs_morgan/graphs_gpt"),
    ),
    claims=(
        Claim(
            "graph words are better molecular features than the baselines (state of the art on 8 of 9 tasks).",
            "ours: graph words",
            "ours: Morgan fingerprints",
            columns=ROC,
        ),
    ),
    notes=(LAYOUT_ONLY,),
)
GRAPHS_GENERATION = TableSpec(
    paper="graphs_gpt",
    name="table_generation",
    title="GraphsGPT generation (MOSES / ZINC250k): published vs ours",
    published_table="generation",
    columns=(
        *task_columns("validity", "uniqueness", "novelty"),
        Column("fcd", unit="score", higher_is_better=False),
        *task_columns("snn", "frag", "scaf", "intdiv", unit="score"),
    ),
    rows=(
        Row("ours: GraphsGPT (MOSES)", published="GraphsGPT (MOSES)", ours="graphs_generation/graphs_gpt"),
        Row("GraphsGPT (ZINC250k)", published="GraphsGPT (ZINC250k)"),
    ),
    notes=(LAYOUT_ONLY,),
)

TABLES: tuple[TableSpec, ...] = (
    GRAPHS_MOLECULENET,
    GRAPHS_GENERATION,
)

EXTRA_OUTPUTS: dict[str, Output] = {}
PENDING: dict[str, str] = {}
