"""0-shot downstream average of one construction run, after construction or CPT (rule construct_eval)."""

from pathlib import Path

from moelab.evaluate import run_lm_eval
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
p = sm.params
log = setup(sm.log[0], sm.threads, p.seed)
run, phase = sm.wildcards.run, sm.wildcards.phase
prov = Provenance(
    config={"tasks": p.tasks, "limit": p.limit}, inputs=[sm.input.model, *sm.input.data], seed=p.seed
)
result = run_lm_eval(
    Path(sm.input.model),
    p.tasks,
    Path(sm.input.data[0]).parent,
    limit=p.limit,
    num_fewshot=0,
    batch_size=p.batch_size,
    device=resolve_device(p.device),
    dtype=p.dtype,
    seed=p.seed,
)
result.update(run=run, phase=phase)
write_json(sm.output[0], result)
prov.write(sm.output[0])
log.info("%s after %s: average %s", run, phase, result["average"])
