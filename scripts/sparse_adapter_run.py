"""One SparseAdapter run (adapter kind, pruner, sparsity, width) on every task, every seed (rule sparse_adapter_run)."""

from moelab.adapters.data import read_task
from moelab.adapters.encoder import classifier_loader
from moelab.adapters.train import TrainConfig, run_classifier, tokenizer_encoder
from moelab.provenance import Provenance, write_json
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
variant, tasks, seeds = sm.wildcards.variant, list(sm.params.tasks), list(sm.params.seeds)
log = setup(sm.log[0], sm.threads, seeds[0])
cfg = TrainConfig.from_section(sm.params.train)
resolve_device(sm.params.device)
prov = Provenance(config={"variant": variant, "tasks": tasks, "seeds": seeds, **cfg.to_dict()},
                  inputs=[sm.input.encoder, *sm.input.data], seed=seeds[0])  # fmt: skip
from transformers import AutoTokenizer  # noqa: E402

encode = tokenizer_encoder(AutoTokenizer.from_pretrained(sm.input.encoder), cfg.max_len)
load = classifier_loader(sm.input.encoder)
result = {"variant": variant, "tasks": {}}
for task, path in zip(tasks, sm.input.data, strict=True):
    splits = read_task(path, task)
    result["tasks"][task] = {"seeds": [run_classifier(load, encode, splits, variant, cfg, s) for s in seeds]}
write_json(sm.output[0], result)
test = {t: [r["test_acc"] for r in v["seeds"]] for t, v in result["tasks"].items()}
prov.write(sm.output[0], extra={"test_acc": test})
