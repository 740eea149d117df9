"""Dense LLaMA -> LLaMA-MoE (rule construct)."""

from pathlib import Path

from moelab.construct import dense_to_moe, partition_for
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
c = sm.params.construct
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=c, inputs=[sm.input.dense], seed=sm.params.seed)
dense, tokenizer = load_model(sm.input.dense)
cfg = dense.config
partition = partition_for(
    c["method"],
    intermediate_size=cfg.intermediate_size,
    num_experts=c["num_experts"],
    seed=sm.params.seed,
    num_layers=cfg.num_hidden_layers,
)
moe = dense_to_moe(
    dense,
    partition,
    top_k=c["top_k"],
    router_type=c.get("router_type", "noisy_topk"),
    gate_network=c.get("gate_network", "mlp"),
    balance_loss_weight=c.get("balance_loss_weight", 0.01),
    score_scale_factor=c.get("score_scale_factor"),
    seed=sm.params.seed,
)
params = {"dense": count_parameters(dense), "moe": count_parameters(moe)}
save_model(moe, tokenizer, Path(sm.output.model))
prov.write(sm.output.model, extra={"parameters": params})
log.info("constructed %s MoE: %s", c["method"], params)
