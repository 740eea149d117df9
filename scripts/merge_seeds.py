"""One evaluation result per run from its seeds' results (rules sft_mixture_seeds, post_train_seeds); a one-seed
run borrows the seed spread of the multi-seed runs of its comparison (input peers)."""

from moelab.provenance import Provenance, write_json
from moelab.report.sft_mixture import merge_seeds
from moelab.report.tables import read_eval
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], 1, 0)
prov = Provenance(config={"seeds": list(sm.params.seeds)}, inputs=list(sm.input))
peers = [read_eval(p) for p in sm.input.get("peers", [])]
merged = merge_seeds([read_eval(p) for p in sm.input.seeds], sm.params.seeds, peers)
write_json(sm.output[0], merged)
prov.write(
    sm.output[0], extra={"per_seed": dict(zip(map(str, sm.params.seeds), sm.input.seeds, strict=True))}
)
log.info(
    "%s: primary %s (seeds %s, sd %s)", sm.output[0], merged["primary"], merged["seeds"], merged["seed_sd"]
)
