"""LLaMA-MoE v2 (arXiv 2411.15708): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Row, TableSpec
from moelab.report.papers.common import AVG_COMMON, VARIANT_TABLE, Output, task_columns

V2_TASKS = (
    "mmlu", "gsm8k", "humaneval", "ifeval", "boolq", "sciq", "piqa", "arc_challenge", "truthfulqa", "hellaswag",
)  # fmt: skip
V2_DENSE, V2_OURS = "ours: instructed dense start model", "ours: MLP-MoE of this run + SFT"
LLAMA_MOE_V2_MAIN = TableSpec(
    paper="llama_moe_v2",
    name="table_main",
    title="LLaMA-MoE v2 main table (official README): published vs ours",
    published_table="main",
    columns=(*task_columns(*V2_TASKS), AVG_COMMON),
    rows=(
        Row(V2_DENSE, published="Llama-3-8B-Instruct", ours="dense/llama_moe_v2"),
        Row(
            "ours: MLP-MoE 8top2, two-stage post-training",
            published="MLP-MoE 8top2 (7B tok)",
            ours="v2_post/llama_moe_v2",
        ),
        Row("MLP-MoE 8top2 (8.4B tok)", published="MLP-MoE 8top2 (8.4B tok)"),
        Row(
            "ours: MLP-MoE 1+7top1, two-stage post-training",
            published="MLP-MoE 1+7top1 (7B tok)",
            ours="v2_shared/llama_moe_v2",
        ),
        Row("SmolLM2-1.7B", published="SmolLM2-1.7B"),
        Row(V2_OURS, ours="sft/llama_moe_v2"),
    ),
    claims=(
        Claim(
            "post-training recovers much of the instructed model's ability, but the MoE stays below it "
            "(Llama-3-8B-Instruct 67.2 vs 40.6 MMLU).",
            V2_DENSE,
            V2_OURS,
        ),
    ),
    notes=(
        "The demo's 'two-stage post-training' rows: LLaMA-MoE v2's MoEs of the instructed SmolLM2 (vanilla split, "
        "softmax top-k router) post-trained right after construction, general data then math/code "
        "(rules/post_training.smk; table_post_training compares one stage); cells are means over their seeds. "
        "'ours: MLP-MoE of this run' is the main pipeline's model: with config.yaml an Independent-Random "
        "MLP MoE of the instructed SmolLM2 start model after CPT and one SFT stage; with config/paper_v2.yaml "
        "v2's 8top2 vanilla split of Llama-3-8B-Instruct post-trained right after construction (one SFT run "
        "over the two stages' data), with config/paper_v2_1s7.yaml added its 1+7top1 model.",
    ),
)

TABLES: tuple[TableSpec, ...] = (LLAMA_MOE_V2_MAIN,)
# Tables of TABLES kept out of `all`, built by target llama_moe_v2: the demo's v2_post / v2_shared rows come from
# the post-training runs (rules/post_training.smk), about 50 min on 2 CPU cores.
TABLE_TARGETS: dict[str, str] = {"table_main": "llama_moe_v2"}

# Besides TABLES: the post-training comparison (rules/post_training.smk; target llama_moe_v2) and the
# construction ablations (rules/construct_ablation.smk; target llama_moe_v2_ablation).
EXTRA_OUTPUTS: dict[str, Output] = {
    "table_post_training": Output(
        "table",
        "Two-stage vs one-stage post-training at equal steps (8top2, 1+7top1)",
        in_all=False,
        target="llama_moe_v2",
        heading="LLaMA-MoE v2 post-training: two-stage vs one-stage",
    ),
    "table_granularity": Output(
        "table",
        "Granularity at equal activation (8e top-2 ...)",
        target="llama_moe_v2_ablation",
        heading="LLaMA-MoE v2 expert granularity at equal activation",
        **VARIANT_TABLE,
    ),
    "table_mlp_vs_attention": Output(
        "table",
        "MLP MoE vs attention MoE",
        target="llama_moe_v2_ablation",
        heading="LLaMA-MoE v2 MLP MoE vs attention MoE",
        **VARIANT_TABLE,
    ),
}
PENDING: dict[str, str] = {}
