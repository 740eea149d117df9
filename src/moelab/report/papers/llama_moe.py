"""LLaMA-MoE (arXiv 2406.16554): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, VARIANT_TABLE, Output, task_columns

LLAMA_MOE_TASKS = (
    "sciq", "piqa", "winogrande", "arc_easy", "arc_challenge", "hellaswag",
    "logiqa", "boolq", "lambada", "nq_open", "mmlu",
)  # fmt: skip
LM_DENSE, LM_MOE, LM_CPT = "ours: dense start model", "ours: MoE as constructed", "ours: MoE after CPT"
LM_ACTIVE = "ours: dense, activated FFN width, after CPT"
LLAMA_MOE_MAIN = TableSpec(
    paper="llama_moe",
    name="table_main",
    title="LLaMA-MoE main table (official README): published vs ours",
    published_table="main",
    columns=(*task_columns(*LLAMA_MOE_TASKS), AVG, AVG_COMMON),
    rows=(
        Row("Sheared-LLaMA-2.7B", published="Sheared-LLaMA-2.7B"),
        Row("Open-LLaMA-3B-v2", published="Open-LLaMA-3B-v2"),
        Row("LLaMA-MoE-3.0B (2/16)", published="LLaMA-MoE-3.0B (2/16)"),
        Row("LLaMA-MoE-3.5B (4/16)", published="LLaMA-MoE-3.5B (4/16)"),
        Row(LM_DENSE, ours="dense/llama_moe"),
        Row(LM_MOE, ours="moe/llama_moe"),
        Row(LM_CPT, published="LLaMA-MoE-3.5B (2/8)", ours="pretrain/llama_moe"),
        Row(LM_ACTIVE, ours="pretrain_active/llama_moe"),
    ),
    claims=(
        Claim("continual pre-training recovers what the FFN split cost (LLaMA-MoE sec. 4).", LM_CPT, LM_MOE),
        Claim(
            "after 200B tokens of CPT the MoE (2/8, avg 57.6) beats dense models of similar activated size "
            "(Sheared-LLaMA-2.7B 56.4); at our scale: the MoE vs the dense model cut to its activated FFN width "
            "(the neurons of experts 0 .. top_k-1), both after the same CPT.",
            LM_CPT,
            LM_ACTIVE,
        ),
        Claim("the MoE after CPT matches the dense model it was built from.", LM_CPT, LM_DENSE),
    ),
)
LM_SFT_BEFORE, LM_SFT = "ours: MoE after CPT (before SFT)", "ours: MoE after CPT + SFT"
LLAMA_MOE_SFT = TableSpec(
    paper="llama_moe",
    name="table_sft",
    title="LLaMA-MoE instruction tuning (Deita-6K; official README): published vs ours",
    published_table="sft",
    columns=(
        *task_columns("mmlu", "arc_challenge", "hellaswag", "truthfulqa"),
        Column("mt_bench", kind="published", unit="score", label="MT-Bench"),
        AVG_COMMON,
    ),
    rows=(
        Row("Sheared-LLaMA-2.7B + Deita-6K", published="Sheared-LLaMA-2.7B + Deita-6K"),
        Row("LLaMA-MoE-3.5B (4/16) + Deita-6K", published="LLaMA-MoE-3.5B (4/16) + Deita-6K"),
        Row(LM_SFT_BEFORE, ours="sft_base/moe_sft"),
        Row(LM_SFT, published="LLaMA-MoE-3.5B (2/8) + Deita-6K", ours="sft/moe_sft"),
    ),
    claims=(
        Claim(
            "the instruction-tuned LLaMA-MoE beats the instruction-tuned dense Sheared-LLaMA-2.7B; with no "
            "dense SFT run here we check that SFT improves the CPT model.",
            LM_SFT,
            LM_SFT_BEFORE,
        ),
    ),
)
TABLES: tuple[TableSpec, ...] = (
    LLAMA_MOE_MAIN,
    LLAMA_MOE_SFT,
)

# Besides TABLES, in index order: the construction ablations (rules/construct_ablation.smk; expensive, own
# targets, not in `rule all`) and the figures drawn from our data (rules/report.smk, construct_ablation.smk).
EXTRA_OUTPUTS: dict[str, Output] = {
    "table_construction": Output(
        "table",
        "Expert construction ablation",
        in_all=False,
        target="llama_moe_construction",
        heading="LLaMA-MoE expert construction ablation",
    ),
    "table_configurations": Output(
        "table",
        "Expert configurations (8/16 experts, top-2/4)",
        target="llama_moe_construction",
        heading="LLaMA-MoE configurations (experts / top-k)",
        **VARIANT_TABLE,
    ),
    "fig_pretrain_loss": Output(
        "figure", "Continual pre-training loss", heading="Continual pre-training of the converted MoE"
    ),
    "fig_expert_load": Output("figure", "Expert load per domain per layer, and specialisation by layer"),
    "fig_construction_loss": Output(
        "figure",
        "CPT loss per construction method",
        in_all=False,
        target="llama_moe_construction",
        heading="Continual pre-training per construction",
    ),
}
# The CPT data ablations (rules/cpt_ablation.smk; a dozen CPT runs, own target, not in `rule all`).
CPT_ABLATION = {"in_all": False, "target": "llama_moe_sampling"}
CPT_TABLE = {**CPT_ABLATION, "rule": "cpt_ablation_table", "caption": "llama_moe_cpt_ablation_table.rst"}
EXTRA_OUTPUTS.update(
    {
        "table_sampling": Output(
            "table",
            "Domain sampling strategies during CPT",
            heading="LLaMA-MoE ablation: domain sampling during CPT",
            **CPT_TABLE,
        ),
        "table_filtering": Output(
            "table",
            "Data filtering during CPT",
            heading="LLaMA-MoE ablation: data filtering during CPT",
            **CPT_TABLE,
        ),
        "fig_sampling_loss": Output(
            "figure",
            "Held-out loss vs tokens per sampling strategy",
            heading="CPT held-out loss per domain sampling strategy",
            **CPT_ABLATION,
        ),
        "fig_sampling_weights": Output(
            "figure",
            "Domain weights of each dynamic run over steps",
            heading="Sheared-LLaMA dynamic batch loading: domain weights over steps",
            **CPT_ABLATION,
        ),
    }
)
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {}
