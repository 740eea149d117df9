"""lm-eval on the local tasks for one pipeline stage's model (rule evaluate)."""

from pathlib import Path

from moelab.evaluate import run_lm_eval
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg = sm.params.evaluate
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=cfg, inputs=[sm.input.model], seed=sm.params.seed)
result = run_lm_eval(
    Path(sm.input.model),
    cfg["tasks"],
    Path(sm.input.data[0]).parent,
    limit=cfg.get("limit"),
    num_fewshot=cfg.get("num_fewshot", 0),
    batch_size=cfg.get("batch_size", 16),
    device=resolve_device(sm.params.device),
    dtype=sm.params.dtype,
    seed=sm.params.seed,
)
result["stage"] = sm.wildcards.stage
write_json(sm.output[0], result)
prov.write(sm.output[0])
log.info("%s: primary %s average %s", sm.wildcards.stage, result["primary"], result["average"])
