"""Continual pre-training of one construction run (rule construct_cpt)."""

import shutil
from pathlib import Path

from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup
from moelab.train.pretrain import run_pretrain

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=sm.params.train, inputs=[sm.input.model, *sm.input.data], seed=sm.params.seed)
summary = run_pretrain(
    Path(sm.input.model),
    {Path(p).stem: Path(p) for p in sm.input.data},
    sm.params.train,
    Path(sm.output.model),
    Path(sm.output.log_csv),
    Path(sm.params.ckpt_dir),
    sm.params.seed,
    resolve_device(sm.params.device),
    sm.params.dtype,
)
write_json(sm.output.summary, summary)
for path in (sm.output.model, sm.output.log_csv, sm.output.summary):
    prov.write(path, extra=summary)
shutil.rmtree(sm.params.ckpt_dir, ignore_errors=True)  # ~3 GB per run; only needed to resume a killed job
log.info("%s CPT: %s", sm.wildcards.run, summary)
