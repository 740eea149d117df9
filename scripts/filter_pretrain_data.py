"""Rule filter_pretrain_data: one pretraining domain through the fluency, ad / boilerplate or both filters
(LLaMA-MoE sec. 4); writes the kept documents and the per-step report, each with its provenance. The fluency
step reads the domain's scores from rule score_fluency instead of running the model again."""

from moelab.data.filters import REPORT_FIELDS, apply_filters, check_settings, read_fluency_scores
from moelab.data.packing import read_jsonl
from moelab.files import write_csv, write_jsonl
from moelab.models.materialise import load_tokenizer
from moelab.provenance import Provenance
from moelab.runtime import setup

sm = snakemake  # noqa: F821
p, name, domain = sm.params, sm.wildcards.filter, sm.wildcards.domain
log = setup(sm.log[0], sm.threads, p.seed)
check_settings(name, p.settings)
prov = Provenance(config={"filter": name, "domain": domain, **p.settings}, inputs=list(sm.input), seed=p.seed)
docs = read_jsonl(sm.input.data)
scores = read_fluency_scores(sm.input.scores, len(docs)) if "scores" in sm.input.keys() else None
tokenizer = load_tokenizer(sm.input.model)
kept, rows = apply_filters(docs, name, p.settings, tokenizer, domain=domain, fluency=scores)
for row in rows:
    log.info("%s %s step %s: removed %d of %d documents, %d of %d tokens", domain, name, row["step"],
             row["documents_removed"], row["documents_in"], row["tokens_removed"], row["tokens_in"])  # fmt: skip
write_jsonl(kept, sm.output.data)
write_csv(rows, sm.output.report, REPORT_FIELDS)
counts = {k: rows[-1][k] for k in ("documents_in", "documents_kept", "tokens_in", "tokens_kept")}  # the total
for out in (sm.output.data, sm.output.report):
    prov.write(out, extra=counts)
