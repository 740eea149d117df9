"""Score one CPT ablation run (rule cpt_ablation_eval): held-out loss per domain on the raw corpora's held-out
blocks (the same text for every run) and the 0-shot downstream average on cpt_ablation.tasks."""

from pathlib import Path

from moelab.evaluate import run_lm_eval
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup
from moelab.train.pretrain import held_out_losses

sm = snakemake  # noqa: F821
p = sm.params
log = setup(sm.log[0], sm.threads, p.seed)
prov = Provenance(
    config={"tasks": p.tasks, "limit": p.limit, "seq_len": p.seq_len},
    inputs=[sm.input.model, *sm.input.heldout, *sm.input.data],
    seed=p.seed,
)
device = resolve_device(p.device)
heldout = held_out_losses(
    Path(sm.input.model), {Path(f).stem: Path(f) for f in sm.input.heldout}, p.seq_len, p.dtype, device
)
result = run_lm_eval(
    Path(sm.input.model),
    p.tasks,
    Path(sm.input.data[0]).parent,
    limit=p.limit,
    num_fewshot=0,
    batch_size=p.batch_size,
    device=device,
    dtype=p.dtype,
    seed=p.seed,
)
result.update(run=sm.wildcards.cpt_run, seed=int(sm.wildcards.seed), heldout_loss=heldout)
write_json(sm.output[0], result)
prov.write(sm.output[0])
log.info(
    "%s seed %s: held-out %s, downstream average %.4f",
    sm.wildcards.cpt_run,
    sm.wildcards.seed,
    heldout,
    result["average"],
)
