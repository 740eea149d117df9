"""Continual pre-training (rule pretrain) or instruction tuning (rule sft), in this process or launched.

``launcher.kind: none`` runs the stage here; ``torchrun`` / ``accelerate`` start ``launcher.num_processes``
processes of ``python -m moelab.train.cli`` inside the job (moelab.train.launch).
"""

from pathlib import Path

from moelab.provenance import Provenance, write_json
from moelab.runtime import setup
from moelab.train.launch import run_training

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
spec = {
    "stage": getattr(sm.params, "stage", sm.rule),  # sft_stage1 trains like sft
    "model": sm.input.model,
    "data": {Path(p).stem: p for p in sm.input.data},
    "section": dict(sm.params.train),
    "out_dir": sm.output.model,
    "log_csv": sm.output.log_csv,
    "ckpt_dir": sm.params.ckpt_dir,
    "seed": sm.params.seed,
    "device": sm.params.device,
    "dtype": sm.params.dtype,
    "threads": sm.threads,
}
prov = Provenance(
    config={**sm.params.train, "launcher": sm.params.launcher},
    inputs=[sm.input.model, *sm.input.data],
    seed=sm.params.seed,
)
summary = run_training(spec, sm.params.launcher, log_path=sm.log[0])
log.info("%s summary: %s", sm.rule, summary)
write_json(Path(sm.output.model) / "train_summary.json", summary)
prov.write(sm.output.model, extra=summary)
prov.write(sm.output.log_csv, extra=summary)
