"""Copy one evaluation data set into resources/ (rule download_eval_data)."""

from pathlib import Path

from moelab.evaluate.export import export_eval_task
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, 0)
out = Path(sm.output[0])
prov = Provenance(config={"task": sm.wildcards.task})
export_eval_task(sm.wildcards.task, Path(sm.params.eval_dir))
prov.write(out, checksums=True)  # re-verified by every step that reads it
log.info("evaluation data for %s in %s", sm.wildcards.task, out)
