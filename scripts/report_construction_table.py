"""LLaMA-MoE expert construction ablation table, one row per method (rule llama_moe_table_construction)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import write_table
from moelab.report.construction import (
    ablation_scale,
    construction_notes,
    construction_table,
    read_run_records,
)
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
runs, cfg = sm.params.runs, sm.params.config
prov = Provenance(config={**cfg, "runs": {r: sm.params.specs[r] for r in runs}}, inputs=list(sm.input))
df = construction_table(read_run_records(runs, sm.input))
notes = construction_notes(df, **ablation_scale(cfg))
write_table(df, Path(sm.output.csv), Path(sm.output.md), sm.params.title, notes)
for path in (sm.output.csv, sm.output.md):
    prov.write(path)
