"""One compression recipe (rule compress): its steps in order on the model compressed, with calibration text."""

import torch

from moelab.compress.registry import run_recipe
from moelab.data import read_jsonl
from moelab.data.calibration import sample_blocks
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg, steps = sm.params.compress, sm.params.steps
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(
    config={**cfg, "steps": steps}, inputs=[sm.input.model, sm.input.calib], seed=sm.params.seed
)
model, tokenizer = load_model(sm.input.model, device=resolve_device(sm.params.device))
texts = [r["text"] for r in read_jsonl(sm.input.calib)]
gen = torch.Generator().manual_seed(sm.params.seed)
blocks = sample_blocks(texts, tokenizer, cfg["calib_seq_len"], cfg["calib_sequences"], gen, keep_order=False)
batches = [{"input_ids": b} for b in blocks.to(model.device).split(4)]
before = count_parameters(model)
result = {"recipe": sm.wildcards.recipe, "steps": run_recipe(model, batches, steps, log)}
result["params_before"], result["params_after"] = before, count_parameters(model)
log.info("recipe %s: %s", sm.wildcards.recipe, result)
save_model(model, tokenizer, sm.output.model)
write_json(sm.output.report, result)
prov.write(sm.output.model, extra=result)
prov.write(sm.output.report)
