"""lm-eval on one paper's task set for one pipeline stage's model, through the per-task cache (rule evaluate)."""

import os
from pathlib import Path

cfg = snakemake.params.evaluate  # noqa: F821
if cfg["suite"] == "hub":
    os.environ.setdefault("HF_HUB_OFFLINE", "0")  # hub data sets are downloaded (unless the user set it)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "0")

from moelab.evaluate.cache import EvalCache  # noqa: E402
from moelab.evaluate.plan import run_plan  # noqa: E402
from moelab.provenance import Provenance, write_json  # noqa: E402
from moelab.runtime import resolve_device, setup  # noqa: E402

sm = snakemake  # noqa: F821
stage, paper = sm.params.stage, sm.wildcards.paper  # stage: the model's pipeline stage or sft_<mixture run>
log = setup(sm.log[0], sm.threads, sm.params.seed)
plan = sm.params.plan
prov = Provenance(
    config={**cfg, "paper": paper, "plan": plan}, inputs=[sm.input.model, *sm.input.data], seed=sm.params.seed
)
suite = cfg["suite"]
result = run_plan(
    Path(sm.input.model),
    plan,
    suite=suite,
    eval_dir=Path(sm.params.eval_dir) if suite == "local" else None,
    cache=EvalCache(sm.params.cache_dir, enabled=cfg["cache"]),
    batch_size=cfg["batch_size"],
    device=resolve_device(sm.params.device),
    dtype=sm.params.dtype,
    seed=sm.params.seed,
    code_sandbox=cfg["code_sandbox"],
)
result = {"stage": stage, "paper": paper, "suite": suite, "max_fewshot": cfg["max_fewshot"], **result}
write_json(sm.output[0], result)
prov.write(sm.output[0], extra={"cached": result["cached"]})
log.info(
    "%s on %s: primary %s average %s cached %s",
    stage,
    paper,
    result["primary"],
    result["average"],
    result["cached"],
)
