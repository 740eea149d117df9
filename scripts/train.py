"""Continual pre-training (rule pretrain) or instruction tuning (rule sft)."""

from pathlib import Path

from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup
from moelab.train.pretrain import run_pretrain
from moelab.train.sft import run_sft

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
run = {"pretrain": run_pretrain, "sft": run_sft}[sm.rule]
data = {Path(p).stem: Path(p) for p in sm.input.data}
prov = Provenance(config=sm.params.train, inputs=[sm.input.model, *sm.input.data], seed=sm.params.seed)
summary = run(
    Path(sm.input.model),
    data,
    sm.params.train,
    Path(sm.output.model),
    Path(sm.output.log_csv),
    Path(sm.params.ckpt_dir),
    sm.params.seed,
    resolve_device(sm.params.device),
    sm.params.dtype,
)
log.info("%s summary: %s", sm.rule, summary)
write_json(Path(sm.output.model) / "train_summary.json", summary)
prov.write(sm.output.model, extra=summary)
prov.write(sm.output.log_csv, extra=summary)
