"""Rule reference_loss: the dense model's held-out loss per pretraining domain (the reference l_ref of
Sheared-LLaMA dynamic batch loading; LLaMA-MoE measures it with the dense model it starts from)."""

from moelab.provenance import Provenance, write_json
from moelab.runtime import setup
from moelab.train.pretrain import held_out_losses

sm = snakemake  # noqa: F821
p = sm.params
log = setup(sm.log[0], sm.threads, p.seed)
prov = Provenance(config={"seq_len": p.seq_len}, inputs=[sm.input.model, *sm.input.data], seed=p.seed)
losses = held_out_losses(sm.input.model, {f.split("/")[-1].removesuffix(".jsonl"): f for f in sm.input.data},
                         seq_len=p.seq_len, dtype=p.dtype, device=p.device)  # fmt: skip
log.info("reference loss per domain (nats/token): %s", losses)
write_json(sm.output[0], {"loss": losses, "seq_len": p.seq_len, "model": sm.input.model})
prov.write(sm.output[0])
