"""A construction-variant table of LLaMA-MoE / LLaMA-MoE v2: configurations, granularity, MLP vs attention MoE
(rule construct_variant_table)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import write_table
from moelab.report.construction import (
    ablation_scale,
    read_run_records,
    variant_notes,
    variant_published,
    variant_table,
)
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
runs, cfg, table = sm.params.runs, sm.params.config, sm.params.table
prov = Provenance(config={**cfg, "runs": {r: sm.params.specs[r] for r in runs}}, inputs=list(sm.input))
df = variant_table(read_run_records(runs, sm.input), variant_published(table))
notes = variant_notes(table, df, **ablation_scale(cfg))
write_table(df, Path(sm.output.csv), Path(sm.output.md), sm.params.title, notes)
for path in (sm.output.csv, sm.output.md):
    prov.write(path)
