"""SparseAdapter (arXiv 2210.04284): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, GLUE_TASKS, LAYOUT_ONLY, Output, task_columns

SA_DENSE, SA_SPARSE = "ours: Houlsby adapter", "ours: Houlsby + SparseAdapter"
SPARSE_ADAPTER_GLUE = TableSpec(
    paper="sparse_adapter",
    name="table_glue",
    title="SparseAdapter on GLUE (RoBERTa-base): published vs ours",
    published_table="glue",
    columns=(*task_columns(*GLUE_TASKS), AVG, AVG_COMMON),
    rows=(
        Row("full fine-tuning", published="full fine-tuning"),
        Row(SA_DENSE, published="Houlsby adapter", ours="adapter_dense/sparse_adapter"),
        Row(SA_SPARSE, published="Houlsby adapter + SparseAdapter", ours="adapter_sparse/sparse_adapter"),
        *(
            Row(m, published=m)
            for a in ("Pfeiffer adapter", "LoRA", "MAM adapter")
            for m in (a, f"{a} + SparseAdapter")
        ),
    ),
    claims=(Claim("adapters pruned at initialisation stay as good as dense ones.", SA_SPARSE, SA_DENSE),),
    notes=(LAYOUT_ONLY,),
)
SPARSE_ADAPTER_LARGE = TableSpec(
    paper="sparse_adapter",
    name="table_large_sparse",
    title="SparseAdapter: Large-Sparse vs full fine-tuning (paper Figure 1)",
    published_table="large_sparse",
    columns=(Column("average", kind="eval_average"),),
    rows=(
        Row("ours: full fine-tuning", published="full fine-tuning", ours="full_ft/sparse_adapter"),
        Row(
            "ours: Large-Sparse",
            published="Large-Sparse SparseAdapter",
            ours="adapter_large_sparse/sparse_adapter",
        ),
    ),
    claims=(
        Claim(
            "Large-Sparse even beats full fine-tuning (79.6 vs 79.0).",
            "ours: Large-Sparse",
            "ours: full fine-tuning",
        ),
    ),
)

TABLES: tuple[TableSpec, ...] = (
    SPARSE_ADAPTER_GLUE,
    SPARSE_ADAPTER_LARGE,
)

EXTRA_OUTPUTS: dict[str, Output] = {}
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {
    "fig_sparsity": "accuracy vs sparse ratio (20-80%) per pruner (needs the SparseAdapter stage)",
    "fig_large_sparse": "Large-Sparse width sweep (needs the SparseAdapter stage)",
}
