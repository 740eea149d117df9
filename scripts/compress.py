"""One compression recipe (rule compress): its steps in order on the model compressed, with calibration text."""

import torch

from moelab.compress.recipe import RECOVERY
from moelab.compress.registry import run_recipe
from moelab.data import read_jsonl
from moelab.data.calibration import calibration_and_recovery, sample_blocks
from moelab.data.packing import encode_documents
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg, steps = sm.params.compress, sm.params.steps
log = setup(sm.log[0], sm.threads, sm.params.seed)
inputs = [sm.input.model, sm.input.calib, *sm.input.recovery]
prov = Provenance(config={**cfg, "steps": steps}, inputs=inputs, seed=sm.params.seed)
model, tokenizer = load_model(sm.input.model, device=resolve_device(sm.params.device))
texts = [r["text"] for r in read_jsonl(sm.input.calib)]
gen = torch.Generator().manual_seed(sm.params.seed)
n, seq_len, recovery = cfg["calib_sequences"], cfg["calib_seq_len"], None
if not any(s["method"] in RECOVERY for s in steps):
    blocks = sample_blocks(texts, tokenizer, seq_len, n, gen, keep_order=False)
elif sm.input.recovery:  # another domain: all of its documents
    blocks = sample_blocks(texts, tokenizer, seq_len, n, gen, keep_order=False)
    other = [r["text"] for r in read_jsonl(sm.input.recovery[0])]
    recovery = [torch.from_numpy(d) for d in encode_documents(other, tokenizer)]
else:  # the calibration domain: the documents no calibration block touches (same calibration blocks)
    blocks, recovery = calibration_and_recovery(texts, tokenizer, seq_len, n, gen)
if recovery is not None:
    log.info("recovery text: %d documents, %d tokens", len(recovery), sum(len(d) for d in recovery))
batches = [{"input_ids": b} for b in blocks.to(model.device).split(4)]
before = count_parameters(model)
result = {"recipe": sm.wildcards.recipe, "steps": run_recipe(model, batches, steps, log, recovery=recovery)}
result["params_before"], result["params_after"] = before, count_parameters(model)
log.info("recipe %s: %s", sm.wildcards.recipe, result)
save_model(model, tokenizer, sm.output.model)
write_json(sm.output.report, result)
prov.write(sm.output.model, extra=result)
prov.write(sm.output.report)
