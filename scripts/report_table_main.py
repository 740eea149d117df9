"""LLaMA-MoE main table: published rows beside our pipeline stages (rule llama_moe_table_main)."""

import json
from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import chance_average, load_published, main_table, write_table
from moelab.report.tables import llama_moe_main_notes, stage_labels
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(
    config={"evaluate": sm.params.config["evaluate"], "construct": sm.params.config["construct"]},
    inputs=sm.input.evals,
)
ours = {
    stage: json.loads(Path(p).read_text()) for stage, p in zip(sm.params.stages, sm.input.evals, strict=True)
}
labels = stage_labels(sm.params.config)
df = main_table(load_published("llama_moe"), {labels[s]: r for s, r in ours.items()})
notes = llama_moe_main_notes(ours, sm.params.config, chance_average(next(iter(ours.values()))["primary"]))
write_table(df, Path(sm.output.csv), Path(sm.output.md), "LLaMA-MoE main table: published vs ours", notes)
prov.write(sm.output.csv)
prov.write(sm.output.md)
