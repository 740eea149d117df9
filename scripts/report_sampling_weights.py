"""CPT ablation figure: domain weights of each dynamic run over steps (rule llama_moe_fig_sampling_weights)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report.cpt_ablation import RUN_LABELS, plot_sampling_weights, read_rounds
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
seeds = [read_rounds(r) for r in sm.input.rounds]
labels = {run: label for run, (label, _) in RUN_LABELS.items()}
plot_sampling_weights(seeds, labels, Path(sm.output.png), Path(sm.output.pdf), sm.params.title)
for path in (sm.output.png, sm.output.pdf):
    prov.write(path)
