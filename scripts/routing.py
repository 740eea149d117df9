"""Routing analysis of one MoE stage's model over pretraining domains and SFT data sets (rule routing_analysis)."""

from pathlib import Path

import pandas as pd

from moelab.data.packing import read_jsonl
from moelab.evaluate.routing import (
    PRETRAIN_KIND,
    SFT_KIND,
    analyse_routing,
    pretrain_sequences,
    sft_sequences,
)
from moelab.models.materialise import load_tokenizer
from moelab.provenance import Provenance
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
cfg = sm.params.routing
log = setup(sm.log[0], sm.threads, sm.params.seed)
prov = Provenance(config=cfg, inputs=[sm.input.model, *sm.input.pretrain, *sm.input.sft], seed=sm.params.seed)
tokenizer = load_tokenizer(Path(sm.input.model))
tokens, seq_len = cfg["tokens"], cfg["seq_len"]
sources = {}
for domain, path in zip(sm.params.pretrain_domains, sm.input.pretrain, strict=True):
    texts = [r["text"] for r in read_jsonl(path)]
    sources[domain] = (PRETRAIN_KIND, pretrain_sequences(texts, tokenizer, tokens, seq_len))
for name, path in zip(sm.params.sft_domains, sm.input.sft, strict=True):
    key = name if name not in sources else f"sft_{name}"  # e.g. "code" is both a domain and a data set
    sources[key] = (SFT_KIND, sft_sequences(read_jsonl(path), tokenizer, tokens, seq_len))
tables = analyse_routing(
    Path(sm.input.model),
    sources,
    batch_size=cfg["batch_size"],
    device=resolve_device(sm.params.device),
    dtype=sm.params.dtype,
)
for name, rows in tables.items():
    pd.DataFrame(rows).to_csv(sm.output[name], index=False)
    prov.write(
        sm.output[name], extra={"tokens": {s: sum(len(x) for x in seqs) for s, (_, seqs) in sources.items()}}
    )
spec = pd.DataFrame(tables["specialisation"])
log.info("%s specialisation per layer:\n%s", sm.wildcards.stage, spec.to_string(index=False))
