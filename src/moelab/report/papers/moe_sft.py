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
SFT_DYNAMIC = "dynamic (gate-load redundancy)"
# Row label (= the published row's model) -> our stage: results/eval/sft_<run>/moe_sft.json, the seeds of run
# <run> of config sft_mixture.runs merged (rules/sft_mixture.smk).
_STRATEGIES = {
    "static (proportional to size)": "sft_static_size",
    "static (gate-load weights)": "sft_static_gate",
    SFT_DYNAMIC: "sft_dynamic",
    "dynamic final weights, static": "sft_dynamic_final",
    "random weights per round": "sft_random",
    "sequential (cycle)": "sft_sequential",
    "reference loss (DoReMi-like)": "sft_refloss",
    "inverse redundancy": "sft_inverse",
}
_STATIC_BASELINES = (
    "static (proportional to size)",
    "static (gate-load weights)",
    "dynamic final weights, static",
)
_COLUMNS = (
    *MOE_SFT_GROUPS,
    AVG,
    Column("mt_bench", kind="published", unit="score", label="MT-Bench"),
    AVG_COMMON,
)
_NOTES = (
    "Published: the paper's LLaMA-MoE-3.5B (2/8) rows (NAACL 2025, 2025.naacl-long.80, Tables 1, 2 and 5; the "
    "inverse row gives GSM8K, MBPP and MT-Bench only). QA = mean of ARC-e, ARC-c and BoolQ; average = mean of "
    "the five groups. Every strategy of ours tunes the same model for the same steps (config sft_mixture) from "
    "uniform weights, with the same dev examples held out of training.",
)
MOE_SFT_MAIN = TableSpec(
    paper="moe_sft",
    name="table_main",
    title="MoE-SFT main table (dynamic data mixing for MoE instruction tuning): published vs ours",
    published_table="main",
    columns=_COLUMNS,
    rows=(
        Row(SFT_UNIFORM, published="uniform", ours="sft_uniform/moe_sft"),
        Row(SFT_DYNAMIC, published=SFT_DYNAMIC, ours="sft_dynamic/moe_sft"),
        Row(SFT_BEFORE, ours="sft_base/moe_sft"),
    ),
    claims=(
        Claim(
            "re-weighting the data sets by gate-load redundancy beats the uniform mix at equal budget.",
            SFT_DYNAMIC,
            SFT_UNIFORM,
        ),
        Claim(
            "(sanity check, not a paper claim) SFT improves the model it starts from.",
            SFT_UNIFORM,
            SFT_BEFORE,
        ),
    ),
    notes=(*_NOTES, "The other strategies of the paper's table: table_baselines (target moe_sft_baselines)."),
)
MOE_SFT_BASELINES = TableSpec(
    paper="moe_sft",
    name="table_baselines",
    title="MoE-SFT main table, every data-mixing strategy at equal budget: published vs ours",
    published_table="main",
    columns=_COLUMNS,
    rows=(
        Row(SFT_UNIFORM, published="uniform", ours="sft_uniform/moe_sft"),
        *(Row(s, published=s, ours=f"{stage}/moe_sft") for s, stage in _STRATEGIES.items()),
        Row("ours: random batch (one data set per round)", ours="sft_random_batch/moe_sft"),
        Row(SFT_BEFORE, ours="sft_base/moe_sft"),
    ),
    claims=tuple(
        Claim(
            f'the dynamic mixture is at least as good as the static baseline "{b}" at equal budget.',
            SFT_DYNAMIC,
            b,
        )
        for b in _STATIC_BASELINES
    ),
    notes=_NOTES,
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
        "moduleformer_dynamic_final.json (x100, 2 decimals), which the final-static baseline reads. Ours: the "
        "data set standing in for each (config sft_mixture.roles), final weight x100.",
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
    MOE_SFT_BASELINES,
    MOE_SFT_WEIGHTS,
    MOE_SFT_SAMPLING_WEIGHTS,
)

# Besides TABLES: the figures drawn from our data (rules/report.smk).
EXTRA_OUTPUTS: dict[str, Output] = {
    "fig_expert_load_by_dataset": Output("figure", "Expert load per SFT data set per layer"),
    "fig_sampling_weights": Output("figure", "Sampling weight of each data set over steps (dynamic runs)"),
    "fig_expert_load_dynamic": Output(
        "figure",
        "Expert load per SFT data set at the start and end of the dynamic run (the layer it reads)",
        heading="MoE-SFT expert load per data set, start vs end",
    ),
}
# Tables of TABLES kept out of `all`, with the target that builds them: every strategy's runs are expensive.
TABLE_TARGETS: dict[str, str] = {"table_baselines": "moe_sft_baselines"}
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {}
