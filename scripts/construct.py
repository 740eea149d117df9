"""Dense LLaMA -> LLaMA-MoE (rule construct)."""

from pathlib import Path

from moelab.construct import construct_moe, router_options
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
c = sm.params.construct
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=c, inputs=[sm.input.dense], seed=sm.params.seed)
dense, tokenizer = load_model(sm.input.dense)
built = construct_moe(
    dense,
    tokenizer,
    c["method"],
    num_experts=c["num_experts"],
    top_k=c["top_k"],
    num_shared_experts=c["num_shared_experts"],
    seed=sm.params.seed,
    **router_options(c),
)
params = {"dense": count_parameters(dense), "moe": count_parameters(built.model)}
save_model(built.model, tokenizer, Path(sm.output.model))
prov.write(sm.output.model, extra={"parameters": params, "partition": built.stats})
log.info("constructed %s MoE: %s", c["method"], params)
