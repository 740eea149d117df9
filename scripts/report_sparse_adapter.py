"""A SparseAdapter table (table_glue or table_large_sparse) from the stage's runs, published numbers beside."""

from moelab.provenance import Provenance
from moelab.report import sparse_adapter as sa
from moelab.report.tables import load_published
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, 0)
cfg, table = sm.params.config, sm.params.table
prov = Provenance(config=cfg, inputs=list(sm.input))
runs, tasks = sa.read_runs(sm.input), list(cfg["tasks"])
if table == "glue":
    variants = list(sm.params.variants)
    verdicts = sa.glue_verdicts(runs, variants, tasks)
    verdicts.append(sa._sentence(runs, variants[0], "full_ft", tasks))
    title = "SparseAdapter: adapters dense and pruned at initialisation vs full fine-tuning"
else:
    large = {int(k): v for k, v in sm.params.variants.items()}
    variants = sa.large_sparse_rows(large)
    verdicts = [sa._sentence(runs, large[k], "full_ft", tasks) for k in sorted(large) if k > 1]
    verdicts += [sa._sentence(runs, large[k], large[1], tasks) for k in sorted(large) if k > 1]
    title = "SparseAdapter: Large-Sparse vs full fine-tuning at the dense adapter's non-zero budget"
df = sa.results_table(runs, variants, tasks, load_published("sparse_adapter"), table)
df.to_csv(sm.output.csv, index=False)
notes = [sa.scale_note(cfg, int(df.seeds.iloc[0])), *(f"Verdict: {v}" for v in verdicts)]
with open(sm.output.md, "w") as fh:
    fh.write(sa.markdown(df, tasks, title, notes))
for out in (sm.output.csv, sm.output.md):
    prov.write(out)
log.info("%s: %d rows", table, len(df))
