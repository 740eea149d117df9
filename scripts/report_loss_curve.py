"""Training loss curves, one per run (rules llama_moe_fig_pretrain_loss, llama_moe_fig_construction_loss)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import plot_loss_curves
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
logs = {label: Path(p) for label, p in zip(sm.params.labels, sm.input.logs, strict=True)}
plot_loss_curves(logs, Path(sm.output.png), Path(sm.output.pdf), sm.params.title)
for path in (sm.output.png, sm.output.pdf):
    prov.write(path)
