"""SparseAdapter (arXiv 2210.04284): its tables and figures (report registry).

All four are drawn by rules/sparse_adapter.smk from the stage's runs (moelab.report.sparse_adapter), not by the
generic published-vs-ours tables: table_glue is in `all` (target ``sparse_adapter``); the sparsity sweep and
Large-Sparse are in target ``sparse_adapter_sweeps``.
"""

from __future__ import annotations

from moelab.report.paper_table import TableSpec
from moelab.report.papers.common import Output

TABLES: tuple[TableSpec, ...] = ()
SWEEPS = {"in_all": False, "target": "sparse_adapter_sweeps"}
EXTRA_OUTPUTS: dict[str, Output] = {
    "table_glue": Output(
        "table",
        "Adapter types x {dense, + SparseAdapter} x tasks, full fine-tuning, parameter counts (mean ± sd over seeds)",
        heading="SparseAdapter: adapters dense and pruned at initialisation vs full fine-tuning",
    ),
    "table_large_sparse": Output(
        "table",
        "Large-Sparse (width x k at sparsity 1 - 1/k) vs dense adapter vs full fine-tuning (paper Figure 1)",
        heading="SparseAdapter: Large-Sparse vs full fine-tuning at the dense adapter's non-zero budget",
        **SWEEPS,
    ),
    "fig_sparsity": Output(
        "figure", "Accuracy vs sparsity (0-80%) per pruner", rule="sparse_adapter_figures", **SWEEPS
    ),
    "fig_large_sparse": Output(
        "figure", "Large-Sparse: accuracy vs width multiplier k", rule="sparse_adapter_figures", **SWEEPS
    ),
}
PENDING: dict[str, str] = {}
