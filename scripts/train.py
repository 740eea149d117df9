"""A training rule (pretrain, sft, sft_stage1, construct_cpt, cpt_ablation_train, sft_mixture_train): write the run's train_config.json, run it.

The config (moelab.train.TrainRunConfig) is built once, here, from the rule's params, input and output, and
written as the rule's first output; ``moelab.train.run_training`` (what ``python -m moelab.train CONFIG``
runs) trains in this job's process or launches ``launcher.num_processes`` processes of it.
"""

import json
from pathlib import Path

from moelab.provenance import Provenance
from moelab.runtime import setup
from moelab.train.config import TrainRunConfig
from moelab.train.launch import run_training

sm = snakemake  # noqa: F821
p = sm.params


def pretrain_run_fields(sm) -> dict:
    """pretrain: the measured reference loss (input `reference`) and the rounds CSV (output `rounds`)."""
    if p.stage != "pretrain":
        return {}
    ref = sm.input.reference if "reference" in sm.input.keys() else None
    return {
        "reference_loss": json.loads(Path(ref).read_text())["loss"] if ref else None,
        "rounds_csv": sm.output.rounds if "rounds" in sm.output.keys() else None,
    }


def final_weights(sm) -> dict:
    """sft_mixture runs with weights_from: the domain weights are that run's final weights (input final_weights)."""
    if "final_weights" not in sm.input.keys():
        return {}
    summary = json.loads(Path(sm.input.final_weights).read_text())
    if "final_weights" not in summary:
        raise ValueError(
            f"{sm.input.final_weights}: no final_weights (not the summary of a dynamic mixture run)"
        )
    return {"domain_weights": summary["final_weights"]}


log = setup(sm.log[0], sm.threads, p.seed)
train = {**p.train, **final_weights(sm)}
cfg = TrainRunConfig.from_section(
    train,
    stage=p.stage,
    model=sm.input.model,
    data={Path(f).stem: f for f in sm.input.data},
    out_dir=sm.output.model,
    log_csv=sm.output.log_csv,
    ckpt_dir=p.ckpt_dir,
    summary=sm.output.get("summary", f"{sm.output.model}/train_summary.json"),
    seed=p.seed,
    device=p.device,
    dtype=p.dtype,
    threads=sm.threads,
    launcher=p.launcher,
    discard_checkpoints=p.discard_checkpoints,
    **pretrain_run_fields(sm),
)
prov = Provenance(
    config={**train, "launcher": p.launcher},
    inputs=[
        sm.input.model,
        *sm.input.data,
        *([sm.input.reference] if "reference" in sm.input.keys() else []),
        *([sm.input.final_weights] if "final_weights" in sm.input.keys() else []),
    ],
    seed=p.seed,
)
summary = run_training(cfg.write(sm.output.config), log_path=sm.log[0])
log.info("%s summary: %s", sm.rule, summary)
for path in sm.output[1:]:  # the model folder, the log and (construct_cpt) the summary file
    prov.write(path, extra=summary)
