"""One construction run of the ablations from the dense model (rule construct_method)."""

from pathlib import Path

from moelab.construct import construct_variant, router_options, save_partition
from moelab.data import read_jsonl
from moelab.io import count_parameters, load_model, save_model
from moelab.provenance import Provenance, write_json
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
run = sm.wildcards.run
c, a, spec = sm.params.construct, sm.params.ablation, sm.params.spec
prov = Provenance(
    config={"construct": c, "construct_ablation": a, "spec": spec},
    inputs=[sm.input.dense],
    seed=sm.params.seed,
)
dense, tokenizer = load_model(sm.input.dense)
texts = {Path(p).stem: [r["text"] for r in read_jsonl(p)] for p in sm.input.data}
out = construct_variant(
    dense,
    tokenizer,
    spec,
    seed=sm.params.seed,
    texts=texts,
    calib_tokens=a["calib_tokens"],
    calib_seq_len=a["calib_seq_len"],
    remainder=a["remainder"],
    **router_options(c),
)
stats = {
    **out.stats,
    "spec": spec,
    "parameters": {"dense": count_parameters(dense), "moe": count_parameters(out.model)},
}
save_model(out.model, tokenizer, Path(sm.output.model))
save_partition(out.partition, sm.output.partition, {"run": run, "seed": sm.params.seed})
write_json(sm.output.stats, stats)
for path in (sm.output.model, sm.output.partition, sm.output.stats):
    prov.write(path, extra={"timing_s": stats["timing_s"]})
log.info("%s: %s", run, stats["timing_s"])
