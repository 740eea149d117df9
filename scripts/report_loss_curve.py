"""LLaMA-MoE continual pre-training loss curve (rule llama_moe_fig_pretrain_loss)."""

from pathlib import Path

from moelab.provenance import Provenance
from moelab.report import plot_loss_curves
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=[sm.input.log_csv])
plot_loss_curves(
    {"LLaMA-MoE (ours, demo scale)": Path(sm.input.log_csv)},
    Path(sm.output.png),
    Path(sm.output.pdf),
    "Continual pre-training of the converted MoE",
)
prov.write(sm.output.png)
prov.write(sm.output.pdf)
