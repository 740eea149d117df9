"""MoE compression table_speed: batch-1 speed and memory of every recipe beside its parent (rule
moe_compression_table_speed)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import load_published, write_table
from moelab.report.compression_speed import read_speed, speed_notes, speed_table
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
records = [read_speed(p) for p in sm.input.speed]
df = speed_table(records, load_published("moe_compression"))
write_table(df, Path(sm.output.csv), Path(sm.output.md), sm.params.title, speed_notes(records, df))
for path in (sm.output.csv, sm.output.md):
    prov.write(path)
