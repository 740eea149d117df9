"""Construction ablation tables and CPT loss curves (rules llama_moe_table_construction, construct_variant_table,
llama_moe_fig_construction_loss)."""

import json
from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import load_published, plot_loss_curves, write_table
from moelab.report.construction import (
    METHOD_LABELS,
    construction_notes,
    construction_table,
    published_configuration_averages,
    variant_notes,
    variant_table,
)
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
runs = sm.params.runs
cfg = sm.params.config
prov = Provenance(config={**cfg, "runs": {r: sm.params.specs[r] for r in runs}}, inputs=list(sm.input))
steps = cfg["construct_ablation"]["steps"]
tokens = cfg["pretrain"]["batch_size"] * cfg["pretrain"]["seq_len"]
limit = cfg["construct_ablation"].get("eval_limit")


def records() -> dict[str, dict]:
    keys = ("stats", "cpt", "eval_construct", "eval_cpt")
    files = {k: [json.loads(Path(p).read_text()) for p in sm.input[k]] for k in keys}
    return {r: {k: files[k][i] for k in keys} for i, r in enumerate(runs)}


if sm.rule == "llama_moe_fig_construction_loss":
    logs = {METHOD_LABELS.get(m, m): Path(p) for m, p in zip(runs, sm.input.logs, strict=True)}
    plot_loss_curves(
        logs, Path(sm.output.png), Path(sm.output.pdf), "Continual pre-training per construction"
    )
    outputs = (sm.output.png, sm.output.pdf)
elif sm.rule == "llama_moe_table_construction":
    df = construction_table(records())
    notes = construction_notes(df, steps, tokens, limit)
    write_table(df, Path(sm.output.csv), Path(sm.output.md), "LLaMA-MoE expert construction ablation", notes)
    outputs = (sm.output.csv, sm.output.md)
else:
    table = sm.wildcards.table.split("/table_")[-1]
    published = (
        published_configuration_averages(load_published("llama_moe")) if table == "configurations" else None
    )
    df = variant_table(records(), published)
    notes = variant_notes(table, df, steps, tokens, limit)
    title = {
        "configurations": "LLaMA-MoE configurations (experts / top-k)",
        "granularity": "LLaMA-MoE v2 expert granularity at equal activation",
        "mlp_vs_attention": "LLaMA-MoE v2 MLP MoE vs attention MoE",
    }[table]
    write_table(df, Path(sm.output.csv), Path(sm.output.md), title, notes)
    outputs = (sm.output.csv, sm.output.md)
for path in outputs:
    prov.write(path)
