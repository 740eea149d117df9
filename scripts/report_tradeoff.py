"""MoE compression fig_tradeoff: performance retained vs decode speed-up per method (rule moe_compression_fig_tradeoff)."""

import pandas as pd

from moelab.provenance import Provenance
from moelab.report import load_published
from moelab.report.compression_speed import plot_tradeoff, published_points, tradeoff_points
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], 1, 0)
prov = Provenance(config=sm.params.config, inputs=list(sm.input))
ours = tradeoff_points([pd.read_csv(p) for p in sm.input.tables], sm.params.recipes)
log.info("fig_tradeoff: %d methods\n%s", len(ours), ours.to_string())
pub = published_points(load_published("moe_compression"))
lens = sm.params.config["speed"]["prompt_lens"]
plot_tradeoff(ours, pub, sm.output.png, sm.output.pdf, sm.params.title, prompt_len=max(lens))
for path in (sm.output.png, sm.output.pdf):
    prov.write(path)
