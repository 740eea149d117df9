"""Extract one pretraining domain or one instruction data set to JSONL (rules download_*_data)."""

from pathlib import Path

from moelab.data import sources
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
log = setup(sm.log[0], sm.threads, sm.params.seed)
out = Path(sm.output[0])
domain = sm.wildcards.domain
prov = Provenance(config=dict(sm.params), seed=sm.params.seed)
if sm.rule == "download_pretrain_data":
    stats = sources.extract_pretrain_domain(domain, out, max_chars=sm.params.max_chars, seed=sm.params.seed)
else:
    stats = sources.extract_sft_domain(domain, out, max_examples=sm.params.max_examples, seed=sm.params.seed)
prov.write(out, extra=stats)
log.info("%s: %s", domain, stats)
