"""MoE-SFT figure: expert load per data set at the start and end of the dynamic run (rule
moe_sft_fig_expert_load_dynamic)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report.cpt_ablation import plot_message
from moelab.report.figures import plot_expert_load
from moelab.report.sft_mixture import read_sft_run, round_gate_load
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
runs = [read_sft_run(p) for p in sm.input.summaries]  # the first seed of the first dynamic headline run
if runs and runs[0]["gate_loads"]:
    title = f"{sm.params.title} ({runs[0]['run']}, seed {runs[0]['seed']})"
    plot_expert_load(
        round_gate_load(runs[0]), None, "sft_domain", Path(sm.output.png), Path(sm.output.pdf), title,
        max_layers=2, panel_title="step {layer}",
    )  # fmt: skip
else:  # no dynamic run in sft_mixture.headline (e.g. config/paper_v2.yaml), or its rounds hold no routing
    why = "no dynamic run in sft_mixture.headline" if not runs else "the run's rounds hold no gate loads"
    plot_message(why, Path(sm.output.png), Path(sm.output.pdf), sm.params.title)
for path in (sm.output.png, sm.output.pdf):
    prov.write(path)
