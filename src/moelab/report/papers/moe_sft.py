"""MoE-SFT, dynamic data mixing (arXiv 2406.11256): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, Output

MOE_SFT_GROUPS = (
    Column("mmlu"),
    Column("bbh"),
    Column("gsm8k"),
    Column("qa", tasks=("arc_easy", "arc_challenge", "boolq"), label="QA"),
    Column("mbpp"),
)
SFT_UNIFORM, SFT_BEFORE = "ours: uniform", "ours: before SFT (CPT model)"
_STRATEGIES = {
    "static (proportional to size)": "sft_static_size",
    "static (gate-load weights)": "sft_static_gate",
    "dynamic (gate-load redundancy)": "sft_dynamic",
    "dynamic final weights, static": "sft_dynamic_final",
    "random weights per round": "sft_random",
    "sequential (cycle)": "sft_sequential",
    "reference loss (DoReMi-like)": "sft_refloss",
    "inverse redundancy": "sft_inverse",
}
MOE_SFT_MAIN = TableSpec(
    paper="moe_sft",
    name="table_main",
    title="MoE-SFT main table (dynamic data mixing for MoE instruction tuning): published vs ours",
    published_table="main",
    columns=(
        *MOE_SFT_GROUPS,
        AVG,
        Column("mt_bench", kind="published", unit="score", label="MT-Bench"),
        AVG_COMMON,
    ),
    rows=(
        Row(SFT_UNIFORM, published="uniform", ours="sft/moe_sft"),
        *(Row(s, published=s, ours=f"{stage}/moe_sft") for s, stage in _STRATEGIES.items()),
        Row(SFT_BEFORE, ours="sft_base/moe_sft"),
    ),
    claims=(
        Claim(
            "re-weighting the data sets by gate-load redundancy beats the uniform mix at equal budget.",
            "dynamic (gate-load redundancy)",
            SFT_UNIFORM,
        ),
        Claim(
            "(sanity check, not a paper claim) SFT improves the model it starts from.",
            SFT_UNIFORM,
            SFT_BEFORE,
        ),
    ),
    notes=(
        "Published main-table numbers were not retrieved (the paper's table body was not readable in the "
        "stored sources): the layout is mirrored. QA = mean of ARC-e, ARC-c "
        "and BoolQ; average = mean of the five groups. Our SFT run mixes config sft.domain_weights "
        "(default uniform).",
    ),
)
MOE_SFT_WEIGHTS = TableSpec(
    paper="moe_sft",
    name="table_final_weights",
    title="MoE-SFT: final dynamic sampling weights (percent of examples)",
    published_table="final_weights",
    columns=tuple(Column(n, kind="extra") for n in ("code", "math", "orca", "sharegpt")),
    rows=(
        Row(
            "ours: dynamic, final weights",
            published="dynamic, LLaMA-MoE-3.5B (2/8)",
            ours="sft_dynamic/moe_sft",
        ),
        Row("paper: dynamic, MoLM-700M-4B", published="dynamic, MoLM-700M-4B"),
    ),
    notes=(
        "Published weights from the official repository's conf/prob_map/llama_moe_dynamic_final.json and "
        "moduleformer_dynamic_final.json (x100, 2 decimals), which the final-static baseline reads.",
    ),
)
# Static sampling weights of the official repository's baselines (conf/prob_map/*.json), in percent.
_WEIGHT_ROWS = (  # row label = the published row's model
    "uniform",
    "static (proportional to size)",
    "static (gate-load weights)",
    "static (sentence-embedding weights)",
    "random batch / cycle start (one-hot)",
    "dynamic final weights, static (LLaMA-MoE-3.5B)",
    "dynamic final weights, static (MoLM-700M-4B)",
)
MOE_SFT_SAMPLING_WEIGHTS = TableSpec(
    paper="moe_sft",
    name="table_sampling_weights",
    title="MoE-SFT: static sampling weights of the baselines (percent of examples, official repository)",
    published_table="sampling_weights",
    columns=tuple(Column(n, kind="extra") for n in ("code", "math", "orca", "sharegpt")),
    rows=tuple(Row(label, published=label) for label in _WEIGHT_ROWS),
    notes=(
        "Values from the official repository's conf/prob_map/<file>.json (x100, 2 decimals): uniform.json, "
        "datasize.json, gate_load.json, sent_emb.json, roll.json (one-hot start of the cycle and random-batch "
        "baselines; the other sets hold 1e-5), llama_moe_dynamic_final.json, moduleformer_dynamic_final.json. "
        "Our runs use config sft.domain_weights; no our column is drawn here.",
    ),
)

TABLES: tuple[TableSpec, ...] = (
    MOE_SFT_MAIN,
    MOE_SFT_WEIGHTS,
    MOE_SFT_SAMPLING_WEIGHTS,
)

# Besides TABLES: the figures drawn from our data (rules/report.smk).
EXTRA_OUTPUTS: dict[str, Output] = {
    "fig_expert_load_by_dataset": Output("figure", "Expert load per SFT data set per layer"),
}
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {
    "fig_sampling_weights": "sampling weight of each data set over steps (needs the dynamic-mixture SFT run;"
    " our uniform run has constant weights, so no figure is drawn)",
}
