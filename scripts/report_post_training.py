"""LLaMA-MoE v2 post-training table: one-stage vs two-stage (rule llama_moe_v2_table_post_training)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import write_table
from moelab.report.post_training import post_training_notes, post_training_table, read_post_run
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
cfg = sm.params.config
prov = Provenance(config=cfg, inputs=list(sm.input))
seeds = [read_post_run(s, e) for s, e in zip(sm.input.summaries, sm.input.evals, strict=True)]
df = post_training_table(sm.params.runs, cfg["post_training"]["runs"], seeds)
notes = post_training_notes(df, cfg["post_training"], cfg["sft"])
write_table(df, Path(sm.output.csv), Path(sm.output.md), sm.params.title, notes)
for path in (sm.output.csv, sm.output.md):
    prov.write(path)
