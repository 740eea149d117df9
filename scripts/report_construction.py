"""LLaMA-MoE construction ablation: table and CPT loss curves (rules llama_moe_table_construction, _fig_)."""

import json
from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import plot_loss_curves, write_table
from moelab.report.construction import METHOD_LABELS, construction_notes, construction_table
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
methods = sm.params.methods
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
if sm.rule == "llama_moe_fig_construction_loss":
    logs = {METHOD_LABELS.get(m, m): Path(p) for m, p in zip(methods, sm.input.logs, strict=True)}
    plot_loss_curves(
        logs, Path(sm.output.png), Path(sm.output.pdf), "Continual pre-training per construction"
    )
    outputs = (sm.output.png, sm.output.pdf)
else:

    def read(paths):
        return [json.loads(Path(p).read_text()) for p in paths]

    runs = {
        m: {"stats": s, "cpt": c, "eval": e}
        for m, s, c, e in zip(
            methods, read(sm.input.stats), read(sm.input.cpt), read(sm.input.evals), strict=True
        )
    }
    df = construction_table(runs)
    p = sm.params.config["pretrain"]
    notes = construction_notes(
        df, sm.params.config["construct_ablation"]["steps"], p["batch_size"] * p["seq_len"], sm.params.limit
    )
    write_table(df, Path(sm.output.csv), Path(sm.output.md), "LLaMA-MoE expert construction ablation", notes)
    outputs = (sm.output.csv, sm.output.md)
for path in outputs:
    prov.write(path)
