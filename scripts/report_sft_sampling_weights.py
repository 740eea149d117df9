"""MoE-SFT figure: sampling weight of each data set over steps, dynamic runs (rule moe_sft_fig_sampling_weights)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report.cpt_ablation import plot_message, plot_sampling_weights
from moelab.report.sft_mixture import read_sft_run
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
runs = [read_sft_run(p) for p in sm.input.summaries]
labels = {r["run"]: f"{r['run']} (seed {r['seed']})" for r in runs}
if runs:
    plot_sampling_weights(runs, labels, Path(sm.output.png), Path(sm.output.pdf), sm.params.title)
else:  # no dynamic run in sft_mixture.headline (e.g. config/paper_v2.yaml)
    plot_message(
        "no dynamic run in sft_mixture.headline", Path(sm.output.png), Path(sm.output.pdf), sm.params.title
    )
for path in (sm.output.png, sm.output.pdf):
    prov.write(path)
