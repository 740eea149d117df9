"""Copy one evaluation data set into resources/ (rule download_eval_data)."""

from pathlib import Path

from moelab.evaluate.export import export_eval_task
from moelab.files import drop_stale_manifest
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, 0)
out = Path(sm.output[0])
drop_stale_manifest(out)  # resources/manifest.json no longer describes what is downloaded
prov = Provenance(config={"task": sm.wildcards.task})
export_eval_task(sm.wildcards.task, Path(sm.params.eval_dir))
prov.write(out)
log.info("evaluation data for %s in %s", sm.wildcards.task, out)
