# Helpers of rules/report.smk: paths, the registry's inputs, and which inputs the workflow can make.
import os
import sys

from moelab.papers import PAPER_LABELS, PAPERS
from moelab.report.papers import CLUSTER_LOCAL_RULES, OUTPUTS, TABLES, index_markdown
from moelab.report.papers.moe_compression import MOE_COMPRESSION_METHODS, MOE_COMPRESSION_RECIPE

PAPERS_DIR = "results/papers"
LLAMA_MOE = f"{PAPERS_DIR}/llama_moe"  # also used by rules/construct_ablation.smk


def compress_reports(spec):
    """recipe.json of every recipe row of a compression table that compress.methods builds."""
    stages = {r.ours.rsplit("/", 1)[0] for r in spec.rows if r.ours}
    return [f"results/{s}/recipe.json" for s in COMPRESS_STAGES if s in stages]


def compress_speed_records(spec):
    """Speed record (rule compress_speed) of every recipe row of a compression table that compress.methods builds."""
    stages = {r.ours.rsplit("/", 1)[0] for r in spec.rows if r.ours}
    return [f"results/compress/speed/{s.split('/', 1)[1]}.json" for s in COMPRESS_STAGES if s in stages]


# Inputs besides evaluation results, per table (read by scripts/report_paper_table.py).
TABLE_EXTRA_INPUTS = {
    ("moe_compression", "table_main"): {"compress_report": f"results/compress/{config['compress']['recipe']}/recipe.json"},
    **{
        ("moe_compression", name): {"compress_reports": compress_reports(spec), "compress_speed": compress_speed_records(spec)}
        for name, spec in (("table_methods", MOE_COMPRESSION_METHODS), ("table_recipe", MOE_COMPRESSION_RECIPE))
    },
    # our row of the final-weights table: every seed of the (first) dynamic headline run
    ("moe_sft", "table_final_weights"): {
        "final_weights": sft_run_files("summary.json", sft_dynamic_runs(SFT_MIXTURE.get("headline", []))[:1])
    },
}
ROUTING_DIR = "results/routing/{stage}"
PAPER_TABLE_CONFIG = {k: config[k] for k in ("model", "construct", "pretrain", "sft", "evaluate")}
PAPER_TABLE_CONFIG["sft_mixture"] = SFT_MIXTURE
# Expert-load figures from the routing CSVs: (paper, figure) -> routing stage, kind, with specialisation panel.
SOURCE_LABELS = {"pretrain_domain": "pretraining domain", "sft_domain": "SFT data set"}
EXPERT_LOAD = {
    ("llama_moe", "fig_expert_load"): ("pretrain", "pretrain_domain", True),
    ("moe_sft", "fig_expert_load_by_dataset"): ("sft", "sft_domain", True),
}


def heading(paper, name):
    """The title drawn in results/papers/<paper>/<name>.* (its registry entry's heading)."""
    return OUTPUTS[paper][name].heading


def producible(path):
    """The file exists or a rule of the workflow can make it (called lazily, once every rule is defined)."""
    return os.path.exists(path) or any(r.is_producer(path) for r in workflow.rules)


def eval_input(source):
    """Evaluation result of a source key ``stage/paper``, or None when evaluate.stages does not score the
    stage on the paper or no rule can make it yet (the table then shows "not reproduced yet" in that row)."""
    stage, paper = source.rsplit("/", 1)
    runs = (*SFT_MIX_STAGES, *POST_STAGES, *COMPRESS_STAGES)
    if (stage, paper) not in EVAL_TARGETS and stage not in runs:
        return None  # evaluate.stages does not score it; not an SFT mixture, post-training or compression run
    path = f"results/eval/{stage}/{paper}.json"
    return path if producible(path) else None


def table_inputs(spec):
    def inputs(wildcards):
        evals = [p for p in (eval_input(s) for s in spec.sources()) if p]
        return {"evals": evals, **TABLE_EXTRA_INPUTS.get((spec.paper, spec.name), {})}

    return inputs


def table_sources(spec):
    return lambda wildcards: [s for s in spec.sources() if eval_input(s)]


def expert_load_inputs(stage, with_specialisation):
    inputs = {"gate_load": f"{ROUTING_DIR.format(stage=stage)}/gate_load.csv"}
    if with_specialisation:
        inputs["specialisation"] = f"{ROUTING_DIR.format(stage=stage)}/specialisation.csv"
    return inputs


def figure_inputs_ready(paper, name):
    key = (paper, name)
    if key not in EXPERT_LOAD:
        return True
    stage, _, with_spec = EXPERT_LOAD[key]
    return all(producible(p) for p in expert_load_inputs(stage, with_spec).values())


def paper_targets(*papers, own=False):
    """Files of the papers' outputs that belong in `rule all` (not the construction ablation); with `own` (the
    paper's own target rule) also those kept out of `all` whose target is the paper's name. A figure whose
    routing CSVs no rule can make yet is left out (with a warning) until the routing rule exists."""

    def targets(wildcards):
        files = []
        for paper in papers:
            files.append(f"{PAPERS_DIR}/{paper}/index.md")
            for name, out in OUTPUTS[paper].items():
                if not out.in_all and not (own and out.target == paper):
                    continue
                if not figure_inputs_ready(paper, name):
                    print(f"report: skipping {paper}/{name}: no rule makes its routing CSVs yet", file=sys.stderr)
                    continue
                files += [f"{PAPERS_DIR}/{paper}/{name}.{ext}" for ext in out.extensions]
        return files

    return targets
