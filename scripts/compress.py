"""Block Drop on the instruction-tuned model (rule compress)."""

import torch

from moelab.compress import block_drop
from moelab.data import read_jsonl
from moelab.data.calibration import sample_blocks
from moelab.io import count_parameters, load_model, save_model
from moelab.models import PER_LAYER_FIELDS
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg = sm.params.compress
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=cfg, inputs=[sm.input.model, sm.input.calib], seed=sm.params.seed)
model, tokenizer = load_model(sm.input.model, device=resolve_device(sm.params.device))
texts = [r["text"] for r in read_jsonl(sm.input.calib)]
gen = torch.Generator().manual_seed(sm.params.seed)
blocks = sample_blocks(texts, tokenizer, cfg["calib_seq_len"], cfg["calib_sequences"], gen, keep_order=False)
calib = blocks.to(model.device)
before = count_parameters(model)
result = block_drop(
    model,
    [{"input_ids": b} for b in calib.split(4)],
    cfg["n_drop"],
    cfg["mode"],
    PER_LAYER_FIELDS,
)
result["params_before"], result["params_after"] = before, count_parameters(model)
log.info("block drop: %s", result)
save_model(model, tokenizer, sm.output.model)
write_json(sm.output.scores, result)
prov.write(sm.output.model, extra=result)
prov.write(sm.output.scores)
