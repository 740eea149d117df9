"""The papers moelab reproduces: the one list of their names and labels (ground floor, imports nothing).

A paper's name is its folder ``results/papers/<name>/``, its key in the report registry
(:mod:`moelab.report.papers`, one module per paper), its published CSV
``moelab/report/published/<name>.csv`` and its key under ``evaluate.papers`` in the config; its label is
how reports show it (the Snakemake report's categories, figure titles). Order is the order of the
reports: the LLaMA-MoE line first, then the four side papers.
"""

from __future__ import annotations

PAPER_LABELS: dict[str, str] = {
    "llama_moe": "LLaMA-MoE",  # arXiv 2406.16554
    "llama_moe_v2": "LLaMA-MoE v2",  # arXiv 2411.15708
    "moe_sft": "MoE-SFT",  # arXiv 2406.11256
    "moe_compression": "MoE compression",  # arXiv 2406.02500
    "sparse_adapter": "SparseAdapter",  # arXiv 2210.04284
    "idat": "iDAT",  # arXiv 2403.15750
    "pad_net": "PAD-Net",  # arXiv 2211.05528
    "graphs_gpt": "GraphsGPT",  # arXiv 2402.02464
}
PAPERS: tuple[str, ...] = tuple(PAPER_LABELS)
# The papers scored with lm-eval task sets (keys of the config's evaluate.papers, moelab.evaluate.plan): the
# language-model papers; the side papers evaluate on their own data sets.
LM_EVAL_PAPERS: tuple[str, ...] = ("llama_moe", "llama_moe_v2", "moe_sft", "moe_compression")
