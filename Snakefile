# moelab: build MoE models from dense LLaMA models, train, compress, evaluate, and mirror the papers' tables.
# Demo scale: `snakemake --cores all` (config.yaml). One table: `snakemake --cores all <its file>`.
import os

from snakemake.utils import min_version, validate

from moelab.config_keys import check_schema

min_version("9.0")


configfile: "config.yaml"


check_schema(config, os.path.join(workflow.basedir, "config/schema.yaml"))  # names the dotted key of a wrong value
validate(config, "config/schema.yaml")  # fills the schema's defaults


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/construct.smk"
include: "rules/pretrain.smk"
include: "rules/sft.smk"
include: "rules/evaluate.smk"
include: "rules/compress.smk"
include: "rules/routing.smk"
include: "rules/report.smk"
include: "rules/compress_speed.smk"
include: "rules/construct_ablation.smk"
include: "rules/filter.smk"
include: "rules/cpt_ablation.smk"
include: "rules/sft_mixture.smk"
include: "rules/post_training.smk"
include: "rules/sparse_adapter.smk"


# cluster runs: the report rules and the evaluation-data downloads run here, not one sbatch job each
workflow.localrules(*CLUSTER_LOCAL_RULES)  # the `localrules:` directive takes literal names only


rule all:
    input:
        rules.papers.input,
    default_target: True
