"""One evaluation result per MoE-SFT mixture run from its seeds' results (rule sft_mixture_seeds)."""

from moelab.provenance import Provenance, write_json
from moelab.report.sft_mixture import merge_seeds
from moelab.report.tables import read_eval
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], 1, 0)
prov = Provenance(config={"seeds": list(sm.params.seeds)}, inputs=list(sm.input))
merged = merge_seeds([read_eval(p) for p in sm.input], sm.params.seeds)
write_json(sm.output[0], merged)
prov.write(sm.output[0], extra={"per_seed": dict(zip(map(str, sm.params.seeds), sm.input, strict=True))})
log.info(
    "%s: primary %s (seeds %s, sd %s)", sm.output[0], merged["primary"], merged["seeds"], merged["seed_sd"]
)
