"""MoE compression (arXiv 2406.02500): its tables and figures (report registry)."""

from __future__ import annotations

from moelab.report.paper_table import Claim, Column, Row, TableSpec
from moelab.report.papers.common import AVG, AVG_COMMON, Output, task_columns

MC_TASKS = ("arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande")
MC_ORIG, MC_BLOCK = "ours: before compression", "ours: Block Drop"
COLUMNS = (
    *task_columns(*MC_TASKS),
    AVG,
    AVG_COMMON,
    Column("retained", kind="retained", label="retained %"),
    Column("params_m", kind="extra", unit="M", label="params (M)"),
    Column("speedup", kind="extra", unit="x", label="speed-up"),
    Column("memory_gb", kind="extra", unit="GB", label="memory (GB)", higher_is_better=False),
)
# table_methods / table_recipe add our batch-1 speed and memory (rule compress_speed): "speedup" is the published
# column (one 2048-token forward pass vs bf16: ours = the prefill speed-up at our longest prompt), then the decode
# speed-up (no published number) and the weights at their storage width.
SPEED_COLUMNS = (
    *COLUMNS[:-2],
    Column("speedup", kind="extra", unit="x", label="prefill speed-up"),
    Column("decode_speedup", kind="extra", unit="x", label="decode speed-up"),
    Column("memory_gb", kind="extra", unit="GB", label="memory (GB)", higher_is_better=False),
    Column("storage_gb", kind="extra", unit="GB", label="storage (GB)", higher_is_better=False),
)
ORIGINAL = Row(MC_ORIG, published="Mixtral-8x7B (original)", ours="compress_base/moe_compression")
SCALE_NOTE = (
    "retained % = avg_common / avg_common of the model before compression; params = total parameters after "
    "compression (results/compress/<recipe>/recipe.json). Quantised rows are quantise-dequantise in fp32: their "
    "params count is the fp32 model's; their quality is the low-bit weights'."
)
SPEED_NOTE = (
    "Speed and memory (results/compress/speed/<recipe>.json, table_speed): batch 1, each recipe measured beside "
    "the model before compression in one job with interleaved repeats, at our longest prompt length (as many "
    "tokens generated). prefill speed-up = its prefill tokens/s / the parent's (published: one forward pass on "
    "2048 tokens vs bf16, the paper's Table 3); decode speed-up = the same for decode tokens/s (1 / median "
    "per-token time; no published number); memory = peak memory of a fresh process less its interpreter and "
    "torch (GB = 2^30 bytes); storage = the weights at their storage width (expert weights packed at the "
    "quantised width for RTN / GPTQ / AWQ: a count, not a measurement). Quantised rows run float32 kernels "
    "(quantise-dequantise), so their speed-up and memory are the float32 model's: no 4-bit kernel runs here, "
    "unlike the paper's AWQ rows."
)


def recipe_source(recipe: str) -> str:
    """Source key of a compression recipe's evaluation: results/eval/compress/<recipe>/moe_compression.json."""
    return f"compress/{recipe}/moe_compression"


MOE_COMPRESSION_MAIN = TableSpec(
    paper="moe_compression",
    name="table_main",
    title="MoE compression (Expert Slimming / Trimming): published vs ours",
    published_table="main",
    columns=COLUMNS,
    rows=(
        ORIGINAL,
        Row("Expert Drop", published="Expert Drop (keep 6 of 8)"),
        Row("Layer Drop", published="Layer Drop (8 of 32)"),
        Row(MC_BLOCK, published="Block Drop (5 of 32)", ours="compress/moe_compression"),
        Row("AWQ 4-bit + Layer Drop (the headline)", published="AWQ 4-bit + Layer Drop (8 of 32)"),
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
        "Published: Mixtral-8x7B, the TMLR 2025 version's Tables 3, 5 and 6 (0-shot lm-eval). The abstract's "
        "headline (6.05x, 20.0 GB, >92% retained) is its AWQ 4-bit + Layer Drop row. Our Block Drop row is the "
        "headline recipe (compress.recipe, in `all`); every method is in table_methods and table_recipe "
        "(target moe_compression_methods).",
        SCALE_NOTE,
    ),
)

# table_methods: one row per method and amount (the recipe names of config.yaml compress.recipes; the amounts are
# the config's, scaled to the model compressed).
METHOD_ROWS = (
    ("Block Drop (discrete)", "block_drop", "Block Drop (5 of 32)"),
    ("Block Drop (consecutive)", "block_drop_consecutive", None),
    ("Layer Drop", "layer_drop", "Layer Drop (8 of 32)"),
    ("Expert Drop (global)", "expert_drop_global", "Expert Drop (keep 6 of 8)"),
    ("Expert Drop (layer-wise)", "expert_drop_layer", None),
    ("magnitude (unstructured)", "magnitude", None),
    ("Wanda (unstructured)", "wanda", "Wanda 50%"),
    ("SparseGPT (unstructured)", "sparsegpt", "SparseGPT 50%"),
    ("Wanda 2:4", "wanda_2of4", "Wanda 2:4"),
    ("SparseGPT 2:4", "sparsegpt_2of4", "SparseGPT 2:4"),
    ("Wanda 4:8", "wanda_4of8", None),
    ("SparseGPT 4:8", "sparsegpt_4of8", None),
    ("RTN 8-bit", "rtn_8bit", None),
    ("RTN 4-bit", "rtn_4bit", None),
    ("GPTQ 4-bit", "gptq_4bit", "GPTQ 4-bit"),
    ("AWQ 4-bit", "awq_4bit", "AWQ 4-bit"),
)
RECIPE_ROWS = (  # the paper's combinations quantise first, then trim (its "S+T" order, Table 3)
    ("Block Drop (discrete)", "block_drop", "Block Drop (5 of 32)"),
    ("AWQ 4-bit", "awq_4bit", "AWQ 4-bit"),
    ("AWQ 4-bit + Expert Drop", "awq_4bit+expert_drop", "AWQ 4-bit + Expert Drop (keep 6 of 8)"),
    ("AWQ 4-bit + Layer Drop", "awq_4bit+layer_drop", "AWQ 4-bit + Layer Drop (8 of 32)"),
    ("AWQ 4-bit + Block Drop", "awq_4bit+block_drop", "AWQ 4-bit + Block Drop (5 of 32)"),
    ("Expert Drop + Block Drop", "expert_drop+block_drop", None),
    # post-compression recovery: LoRA fine-tuning merged back (moelab.compress.recovery; no published row)
    ("Block Drop + LoRA recovery", "block_drop+lora", None),
)


def _rows(rows):
    return (ORIGINAL, *(Row(label, published=pub, ours=recipe_source(r)) for label, r, pub in rows))


MOE_COMPRESSION_METHODS = TableSpec(
    paper="moe_compression",
    name="table_methods",
    title="Every compression method and amount (Expert Slimming / Trimming)",
    published_table="main",
    columns=SPEED_COLUMNS,
    rows=_rows(METHOD_ROWS),
    claims=(
        Claim(
            "SparseGPT keeps more than magnitude pruning at the same sparsity.",
            "SparseGPT (unstructured)",
            "magnitude (unstructured)",
        ),
        Claim(
            "Wanda keeps more than magnitude pruning at the same sparsity.",
            "Wanda (unstructured)",
            "magnitude (unstructured)",
        ),  # fmt: skip
        Claim("GPTQ keeps more than round-to-nearest at 4 bits.", "GPTQ 4-bit", "RTN 4-bit"),
        Claim("AWQ keeps more than round-to-nearest at 4 bits.", "AWQ 4-bit", "RTN 4-bit"),
        Claim(
            "Block Drop keeps at least 92% of the original.",
            "Block Drop (discrete)",
            MC_ORIG,
            kind="retained",
            threshold=92.0,
        ),  # fmt: skip
    ),
    reference=MC_ORIG,
    notes=(SCALE_NOTE, SPEED_NOTE),
)
MOE_COMPRESSION_RECIPE = TableSpec(
    paper="moe_compression",
    name="table_recipe",
    title="Compression recipes: Expert Trimming and Slimming combined",
    published_table="main",
    columns=SPEED_COLUMNS,
    rows=_rows(RECIPE_ROWS),
    claims=(
        Claim(
            "AWQ 4-bit + Layer Drop keeps >92% of the original (the paper's 6.05x headline recipe).",
            "AWQ 4-bit + Layer Drop",
            MC_ORIG,
            kind="retained",
            threshold=92.0,
        ),  # fmt: skip
        Claim(
            "LoRA fine-tuning after compression recovers part of the loss (Block Drop + LoRA above Block Drop).",
            "Block Drop + LoRA recovery",
            "Block Drop (discrete)",
        ),
    ),
    reference=MC_ORIG,
    notes=(
        "The published headline (6.05x speed-up, 20.0 GB, >92% retained on Mixtral-8x7B; abstract) is the "
        "AWQ 4-bit + Layer Drop (8 of 32) row of the paper's Table 3 (66.1 / 71.5 = 92.4%); its Sec. 7 prose "
        "names Block Drop instead. Published speed-ups are one 2048-token forward pass against bf16. "
        "Block Drop + LoRA recovery: LoRA adapters on attention and experts trained on recovery text disjoint "
        "from the calibration text and merged back (recipe.json: held-out loss before / after); the paper "
        "fine-tunes with LoRA r = 32 on Alpaca-GPT4 and publishes no row for it here.",
        SCALE_NOTE,
        SPEED_NOTE,
    ),
)

TABLES: tuple[TableSpec, ...] = (MOE_COMPRESSION_MAIN, MOE_COMPRESSION_METHODS, MOE_COMPRESSION_RECIPE)
# Tables of TABLES kept out of `all`: every recipe compressed and evaluated (rules/compress.smk).
TABLE_TARGETS: dict[str, str] = {
    "table_methods": "moe_compression_methods",
    "table_recipe": "moe_compression_methods",
}


def recipe_labels() -> dict[str, tuple[str, str | None]]:
    """recipe name -> (row label, published model name or None) of table_methods then table_recipe."""
    return {r: (label, pub) for label, r, pub in (*METHOD_ROWS, *RECIPE_ROWS)}


# Built by target moe_compression_methods (rules/compress_speed.smk), not in `all`.
EXTRA_OUTPUTS: dict[str, Output] = {
    "table_speed": Output(
        "table",
        "Batch-1 prefill / decode tokens/s and memory by prompt length, the model before compression and each method",
        in_all=False,
        target="moe_compression_methods",
        heading="MoE compression: batch-1 speed and memory of every method beside the model before compression",
    ),
    "fig_tradeoff": Output(
        "figure",
        "Performance retained vs decode speed-up, one marker per method and amount (published: Table 3)",
        in_all=False,
        target="moe_compression_methods",
        heading="MoE compression: performance retained vs speed-up",
    ),
}
# Figures and tables of the paper that no stage draws yet (index.md: not reproduced yet).
PENDING: dict[str, str] = {}
