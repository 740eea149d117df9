"""One paper table, published beside ours (rules <paper>_<table>, registry moelab.report.papers)."""

import json
from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import (
    compression_extras,
    load_published,
    paper_table,
    scale_note,
    table_spec,
    write_paper_table,
)
from moelab.report.compression_speed import read_speed, speed_extras
from moelab.report.papers.moe_compression import recipe_source
from moelab.report.sft_mixture import final_weight_extras, final_weight_note, read_sft_run, seed_note
from moelab.report.tables import read_eval
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
spec = table_spec(sm.params.paper, sm.params.table)
evals = list(sm.input.evals)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
ours = {source: read_eval(path) for source, path in zip(sm.params.sources, evals, strict=True)}
extras, notes = {}, [scale_note(sm.params.config)]
if "compress_report" in sm.input.keys():  # the headline recipe (stage compress)
    extras = compression_extras(
        {"compress/moe_compression": json.loads(Path(sm.input.compress_report).read_text())}
    )
if "compress_reports" in sm.input.keys():  # every recipe of the table
    reports = [json.loads(Path(p).read_text()) for p in sm.input.compress_reports]
    extras = compression_extras({recipe_source(r["recipe"]): r for r in reports})
if "compress_speed" in sm.input.keys():  # their speed records (rule compress_speed)
    for source, cells in speed_extras([read_speed(p) for p in sm.input.compress_speed]).items():
        extras.setdefault(source, {}).update(cells)
if "final_weights" in sm.input.keys() and sm.input.final_weights:
    runs = [read_sft_run(p) for p in sm.input.final_weights]
    roles = sm.params.config["sft_mixture"].get("roles") or {}
    extras = final_weight_extras(runs, roles, next(r.ours for r in spec.rows if r.ours))
    notes.append(final_weight_note(runs))
notes += [n for n in [seed_note(spec, ours)] if n]
long = paper_table(spec, load_published(spec.paper), ours, extras)
write_paper_table(spec, long, Path(sm.output.csv), Path(sm.output.md), notes=notes)
for path in (sm.output.csv, sm.output.md):
    prov.write(path, extra={"sources": dict(zip(sm.params.sources, evals, strict=True))})
