"""SparseAdapter fig_sparsity (accuracy vs sparsity per pruner) and fig_large_sparse (accuracy vs width k)."""

from moelab.provenance import Provenance
from moelab.report import sparse_adapter as sa
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, 0)
cfg, out = sm.params.config, sm.output
prov = Provenance(config=cfg, inputs=list(sm.input))
runs, tasks = sa.read_runs(sm.input), list(cfg["tasks"])
sweep = {p: {float(s): v for s, v in by.items()} for p, by in sm.params.sweep.items()}
large = {int(k): v for k, v in sm.params.large.items()}
sa.plot_sparsity(
    runs, sweep, tasks, out.sparsity_png, out.sparsity_pdf, "SparseAdapter: accuracy vs sparsity"
)
sa.plot_large_sparse(
    runs, large, tasks, out.large_png, out.large_pdf, "SparseAdapter: Large-Sparse vs full FT"
)
for path in out:
    prov.write(path)
