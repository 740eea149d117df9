"""Constructed MoE -> dense baseline with the MoE's activated FFN width (rule construct_activated)."""

from pathlib import Path

from moelab.construct import moe_to_activated_dense
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config={"experts": sm.params.experts}, inputs=[sm.input.moe], seed=sm.params.seed)
moe, tokenizer = load_model(sm.input.moe)
dense = moe_to_activated_dense(moe, sm.params.experts)
params = {"moe": count_parameters(moe), "dense_active": count_parameters(dense)}
save_model(dense, tokenizer, Path(sm.output.model))
prov.write(sm.output.model, extra={"parameters": params, "intermediate_size": dense.config.intermediate_size})
log.info("activated-width dense baseline: intermediate_size %d, %s", dense.config.intermediate_size, params)
