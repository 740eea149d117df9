"""Rule score_fluency: each document's fluency score (mean NLL under the dense model) of one pretraining domain,
shared by the fluency and both filters (LLaMA-MoE sec. 4)."""

import numpy as np

from moelab.data.filters import check_max_tokens, fluency_scores, write_fluency_scores
from moelab.data.packing import read_jsonl
from moelab.io import load_model
from moelab.provenance import Provenance
from moelab.runtime import resolve_device, setup

sm = snakemake  # noqa: F821
p = sm.params
log = setup(sm.log[0], sm.threads, p.seed)
check_max_tokens(p.max_tokens)  # before loading the model
prov = Provenance(config={"max_tokens": p.max_tokens}, inputs=[sm.input.data, sm.input.model], seed=p.seed)
texts = [d["text"] for d in read_jsonl(sm.input.data)]
model, tokenizer = load_model(sm.input.model, dtype=p.dtype, device=resolve_device(p.device))
scores = fluency_scores(model, tokenizer, texts, p.max_tokens)
write_fluency_scores(scores, sm.output[0])
finite = scores[np.isfinite(scores)]
log.info("%s: %d documents scored (%d with nothing to score), mean NLL %.4f nats/token", sm.wildcards.domain,
         len(scores), len(scores) - len(finite), finite.mean() if len(finite) else float("nan"))  # fmt: skip
prov.write(sm.output[0], extra={"documents": len(scores)})
