"""Materialise the dense model as a safetensors HF folder (rule download_model)."""

import os
from pathlib import Path

if snakemake.params.model["source"] == "pretrained":  # noqa: F821 - a hub id needs the hub (setup forbids it)
    os.environ.setdefault("HF_HUB_OFFLINE", "0")

from moelab.files import package_dir  # noqa: E402
from moelab.models import materialise  # noqa: E402
from moelab.provenance import Provenance  # noqa: E402
from moelab.runtime import setup  # noqa: E402

log = setup(snakemake.log[0], snakemake.threads, snakemake.params.seed)  # noqa: F821
m = snakemake.params.model  # noqa: F821
out = Path(snakemake.output[0])  # noqa: F821
prov = Provenance(config=m, seed=snakemake.params.seed)  # noqa: F821
resolved = None  # the hub commit of a pretrained source
if m["source"] == "gguf":
    materialise.materialise_gguf_model(m["gguf_package"], m["gguf_file"], out)
elif m["source"] == "pretrained":
    resolved = materialise.materialise_pretrained(m["pretrained"], out, revision=m.get("revision"))
else:
    tokenizer = package_dir(m["gguf_package"]) / m["gguf_file"]  # the real SmolLM2 tokenizer
    materialise.make_tiny_model(tokenizer, out, seed=snakemake.params.seed, **m["tiny"])  # noqa: F821
prov.write(out, extra=resolved, checksums=True)  # re-verified by every step that reads it
log.info("dense model written to %s", out)
