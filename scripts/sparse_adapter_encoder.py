"""Materialise the SparseAdapter stage's encoder as an HF folder (rule sparse_adapter_encoder)."""

import os

if snakemake.params.encoder["source"] == "pretrained":  # noqa: F821 - a hub id needs the hub (setup forbids it)
    os.environ.setdefault("HF_HUB_OFFLINE", "0")

from moelab.adapters.encoder import materialise_encoder  # noqa: E402
from moelab.provenance import Provenance  # noqa: E402
from moelab.runtime import setup  # noqa: E402

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=sm.params.encoder, seed=sm.params.seed)
out = materialise_encoder(sm.params.encoder, sm.output[0], seed=sm.params.seed)
prov.write(out, checksums=True)
log.info("encoder (%s) written to %s", sm.params.encoder["source"], out)
