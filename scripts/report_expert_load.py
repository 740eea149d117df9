"""Expert-load heatmaps per data source per layer (rules llama_moe_fig_expert_load, moe_sft_fig_...)."""

from pathlib import Path

import pandas as pd

from moelab.provenance import Provenance
from moelab.report import plot_expert_load
from moelab.runtime import setup

sm = snakemake  # noqa: F821
setup(sm.log[0], 1, 0)
prov = Provenance(config={"kind": sm.params.kind}, inputs=list(sm.input))
spec = pd.read_csv(sm.input.specialisation) if "specialisation" in sm.input.keys() else None
layers = plot_expert_load(
    pd.read_csv(sm.input.gate_load),
    spec,
    sm.params.kind,
    Path(sm.output.png),
    Path(sm.output.pdf),
    sm.params.title,
)
for path in (sm.output.png, sm.output.pdf):
    prov.write(path, extra={"layers": layers})
