"""LLaMA-MoE CPT data ablation table, sampling or filtering (rule cpt_ablation_table)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import write_table
from moelab.report.cpt_ablation import ablation_notes, ablation_table, read_run
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
cfg, table = sm.params.config, sm.wildcards.table
prov = Provenance(config=cfg, inputs=list(sm.input))
seeds = [read_run(e, r) for e, r in zip(sm.input.evals, sm.input.rounds, strict=True)]
df = ablation_table(sm.params.runs, seeds, table)
a, pre = cfg["cpt_ablation"], cfg["pretrain"]
notes = ablation_notes(df, table, a["steps"], pre["batch_size"] * pre["seq_len"], a.get("eval_limit"))
write_table(df, Path(sm.output.csv), Path(sm.output.md), sm.params.title, notes)
for path in (sm.output.csv, sm.output.md):
    prov.write(path)
