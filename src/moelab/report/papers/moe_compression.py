"""MoE compression (arXiv 2406.02500): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, Output, task_columns

MC_TASKS = ("arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande")
MC_ORIG, MC_BLOCK = "ours: before compression", "ours: Block Drop"
MOE_COMPRESSION_MAIN = TableSpec(
    paper="moe_compression",
    name="table_main",
    title="MoE compression (Expert Slimming / Trimming): published vs ours",
    published_table="main",
    columns=(
        *task_columns(*MC_TASKS),
        AVG,
        AVG_COMMON,
        Column("retained", kind="retained", label="retained %"),
        Column("params_m", kind="extra", unit="M", label="params (M)"),
        Column("speedup", kind="extra", unit="x", label="speed-up"),
        Column("memory_gb", kind="extra", unit="GB", label="memory (GB)", higher_is_better=False),
    ),
    rows=(
        Row(MC_ORIG, published="Mixtral-8x7B (original)", ours="compress_base/moe_compression"),
        Row(
            "Expert Drop", published="Expert Drop (keep 6 of 8)", ours="compress_expert_drop/moe_compression"
        ),
        Row("Layer Drop", published="Layer Drop (8 of 32)", ours="compress_layer_drop/moe_compression"),
        Row(MC_BLOCK, published="Block Drop (5 of 32)", ours="compress/moe_compression"),
        Row(
            "Block Drop + 4-bit AWQ",
            published="Block Drop + 4-bit AWQ (recipe)",
            ours="compress_block_drop_awq/moe_compression",
        ),
    ),
    claims=(
        Claim(
            "compression keeps >92% of the original model's performance (Mixtral-8x7B).",
            MC_BLOCK,
            MC_ORIG,
            kind="retained",
            threshold=92.0,
        ),
    ),
    reference=MC_ORIG,
    notes=(
        "Per-method published numbers are unverified (layout only); the headline (6.05x decoding speed-up, "
        "20.0 GB, >92% retained) is the paper's abstract. retained % = avg_common / avg_common of the model "
        "before compression; params = total parameters after compression (block_scores.json).",
    ),
)

TABLES: tuple[TableSpec, ...] = (MOE_COMPRESSION_MAIN,)

EXTRA_OUTPUTS: dict[str, Output] = {}
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {
    "table_speed": "prefill / decode tokens/s and peak memory by prompt length (needs the speed benchmark)",
}
