"""Materialise the released checkpoint a stage starts from (rule download_base_model; config <section>.base_model)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "0")  # a hub id needs the hub (setup forbids it otherwise)

from pathlib import Path  # noqa: E402

from moelab.models.materialise import materialise_base_model  # noqa: E402
from moelab.provenance import Provenance  # noqa: E402
from moelab.runtime import setup  # noqa: E402

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
spec = sm.params.spec
out = Path(sm.output[0])
prov = Provenance(config=spec, seed=sm.params.seed)
log.info("materialising %s (%s) into %s", spec["pretrained"], spec.get("format", "hf"), out)
resolved = materialise_base_model(spec, out)  # a Mixtral-format checkpoint becomes our LlamaMoE
prov.write(out, extra=resolved, checksums=True)  # re-verified by every step that reads it
log.info("base model written to %s", out)
