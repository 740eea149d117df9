# Shared helpers: config checks, paths of each stage's model, the envs used by the rules.
import os
import re
from dataclasses import asdict

import yaml

from moelab.adapters.plan import large_sparse_variants, sweep_runs, sweep_variants, table_variants
from moelab.config import (
    check_workflow_config,
    compress_recipes,
    cpt_ablation_runs,
    post_training_runs,
    sft_mixture_runs,
    train_section,
)
from moelab.evaluate.plan import STAGES, paper_plan, planned_tasks
from moelab.mixture.strategies import STRATEGIES
from moelab.resources import job_resources
from moelab.train.config import LauncherConfig

# Idle OpenMP threads sleep instead of spinning: the MoE layer's many mid-sized kernels otherwise stall
# whenever another process holds a core (measured 0.55x vs 1.76x dense tokens/s, benchmarks/README.md).
# Jobs inherit this; it must be set before torch is imported in the job.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")



def _yaml_file(path):
    if not os.path.exists(path):  # no config.yaml in the working directory: the --configfile list is all
        return {}
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


# Every check the config alone decides, before any job (moelab.config.check_workflow_config): NaN / inf, empty
# maps in overlays, cross-key consistency, the model's sizes (read without weights), local model folders.
check_workflow_config(
    config,
    _yaml_file("config.yaml"),  # the Snakefile's configfile, read from the working directory
    [(str(p), _yaml_file(p)) for p in workflow.overwrite_configfiles],
)

DENSE = "resources/models/dense"
# Stages whose model is the one another stage starts from: our own (the default), or a released checkpoint
# named by <section>.base_model (paper scale: MoE-SFT tunes LLaMA-MoE-v1-3.5B, compression takes Mixtral-8x7B).
BASE_STAGES = {
    "sft_base": ("sft", f"results/models/{config['sft']['from_stage']}"),
    "compress_base": ("compress", "results/models/sft"),
}
MAX_THREADS = 16  # Snakemake lowers it to --cores
# Compression recipes (checked by check_workflow_config): name -> steps; stage compress is the headline recipe.
COMPRESS_RECIPES = compress_recipes(config)
# stages of the recipes evaluated (results/eval/compress/<recipe>/<paper>.json; compress.methods)
COMPRESS_STAGES = [f"compress/{r}" for r in config["compress"].get("methods") or []]
# The model each continual pre-training run (the pretrain rule's {cpt_model}) starts from - the constructed MoE,
# and the dense baseline of its activated FFN width (made by construct_activated).
CPT_START = {"pretrain": "results/models/moe", "pretrain_active": "results/models/dense_active"}


wildcard_constraints:
    stage="|".join(STAGES),
    cpt_model="|".join(CPT_START),
    domain=r"[a-z0-9]+",
    task=r"[a-z0-9_]+",


LAUNCHER = asdict(LauncherConfig.from_section(config.get("launcher")))  # checked by check_workflow_config above


def sized(rule_name, key):
    """The `key` resource (mem_mb, runtime, gpu, disk_mb) of a job of `rule_name` at each attempt, sized from the
    config by moelab.resources.job_resources (memory and runtime grow per retry; config job_resources overrides)."""
    return lambda wildcards, attempt: job_resources(config, rule_name, attempt, dict(wildcards.items()))[key]


def pretrain_data():
    """The pretraining text files, one JSONL per domain of data.pretrain_domains."""
    return expand("resources/data/pretrain/{domain}.jsonl", domain=config["data"]["pretrain_domains"])


def cpt_start(wildcards):
    """The model the {cpt_model} wildcard's continual pre-training starts from (CPT_START)."""
    return CPT_START[wildcards.cpt_model]


def reference_input(wildcards=None):
    """{"reference": the dense model's measured held-out loss} unless pretrain.mixture.reference_loss fixes it."""
    if (config["pretrain"].get("mixture") or {}).get("reference_loss"):
        return {}
    return {"reference": "results/pretrain/reference_loss.json"}


def sft_data():
    """The instruction data files, one JSONL per data set of data.sft_domains."""
    return expand("resources/data/sft/{domain}.jsonl", domain=config["data"]["sft_domains"])


def train_params(section, ckpt_dir, launcher=LAUNCHER, discard_checkpoints=False, **overrides):
    """The params of each training job, from which scripts/train.py builds moelab.train.TrainRunConfig.

    The hyperparameters of config section `section` (pretrain, sft_stage1, sft) with `overrides`, and the
    run's stage, seed, device, dtype, launcher and checkpoint folder.
    """
    return {
        "stage": "pretrain" if section == "pretrain" else "sft",
        "train": {**train_section(config, section), **overrides},
        "seed": config["seed"],
        "device": config["device"],
        "dtype": config["dtype"],
        "launcher": launcher,
        "ckpt_dir": ckpt_dir,
        "discard_checkpoints": discard_checkpoints,
    }


def hub_spec(kind, domain):
    """The data.hub.<kind>.<domain> entry (with the shared shuffle buffer), or {} for data.source local."""
    if config["data"]["source"] != "hub":
        return {}
    hub = config["data"]["hub"]
    return {"shuffle_buffer": hub["shuffle_buffer"], **hub[kind][domain]}


def base_model(stage):
    """The config's base_model entry of a BASE_STAGES stage (None: the stage is our own pipeline's model)."""
    return config[BASE_STAGES[stage][0]].get("base_model")


def model_dir(stage):
    """Folder of the HF checkpoint of a pipeline stage (sft_base / compress_base: what SFT / compression start from)."""
    if stage in BASE_STAGES:
        return f"resources/models/{stage}" if base_model(stage) else BASE_STAGES[stage][1]
    if stage == "compress":
        return f"results/compress/{config['compress']['recipe']}/model"
    return DENSE if stage == "dense" else f"results/models/{stage}"


def compress_recovery_text(wc):
    """Text of a recipe's lora_recovery steps when compress.recovery_domain is not the calibration domain (else
    none: recovery then trains on the calibration text's documents that no calibration block touches)."""
    domain = config["compress"].get("recovery_domain") or config["compress"]["calib_domain"]
    recovers = any(s["method"] == "lora_recovery" for s in COMPRESS_RECIPES[wc.recipe])
    if not recovers or domain == config["compress"]["calib_domain"]:
        return []
    return [f"resources/data/pretrain/{domain}.jsonl"]


def eval_data(wildcards=None):
    """Data folders of the tasks of the {paper} wildcard's paper, or without one of every task some stage is
    evaluated on (local suite; config evaluate.papers/stages); none for the hub suite, which downloads its own."""
    ev = config["evaluate"]
    if ev["suite"] != "local":
        return []
    paper = getattr(wildcards, "paper", None)
    tasks = paper_plan(ev, paper)["tasks"] if paper else planned_tasks(ev)
    return expand("resources/data/eval/{task}", task=tasks)


def run_files(name, runs):
    """results/construct/<run>/<name> for each run."""
    return expand(f"results/construct/{{run}}/{name}", run=runs)


def ablation_inputs(runs):
    """The per-run records a construction table reads."""
    return {
        "stats": run_files("stats.json", runs),
        "cpt": run_files("cpt_summary.json", runs),
        "eval_construct": run_files("eval_construct.json", runs),
        "eval_cpt": run_files("eval_cpt.json", runs),
    }


# Data filters (rules/filter.smk): filter -> its steps in order (moelab.data.filters.steps; tests/test_data_filters.py
# checks they agree), written here rather than imported so that the Snakefile does not import torch.
FILTER_STEPS = {"fluency": ["fluency"], "ads": ["ads"], "both": ["ads", "fluency"]}


def filter_settings(wildcards):
    """The data.filters sections the {filter} wildcard's steps read (the schema fills their defaults)."""
    return {step: config["data"]["filters"][step] for step in FILTER_STEPS[wildcards.filter]}


def fluency_scores_input(wildcards):
    """{"scores": the domain's fluency scores} for the filters with a fluency step (fluency, both), else {}."""
    if "fluency" not in FILTER_STEPS[wildcards.filter]:
        return {}
    return {"scores": f"results/filters/fluency_scores/{wildcards.domain}.csv"}


# CPT data ablations (rules/cpt_ablation.smk): run/seed<seed> -> its settings (moelab.config.cpt_ablation_runs).
CPT_ABLATION = config.get("cpt_ablation", {})
CPT_RUNS = cpt_ablation_runs(config)
CPT_DIR = "results/cpt_ablation/{cpt_run}/seed{seed}"
CPT_EVAL_DATA = expand("resources/data/eval/{task}", task=CPT_ABLATION.get("tasks", []))


def cpt_run(wildcards):
    """The settings of run {cpt_run}/seed{seed} (moelab.config.cpt_ablation_runs)."""
    return CPT_RUNS[f"{wildcards.cpt_run}/seed{wildcards.seed}"]


def cpt_run_data(wildcards):
    """The corpora run {cpt_run} trains on: raw, or filtered by its `filter`."""
    kind = cpt_run(wildcards)["filter"]
    root = "resources/data/pretrain" if kind == "none" else f"resources/data/pretrain_filtered/{kind}"
    return expand(f"{root}/{{domain}}.jsonl", domain=config["data"]["pretrain_domains"])


def cpt_run_files(name, runs):
    """results/cpt_ablation/<run>/seed<seed>/<name> of every trained seed of each run in `runs`."""
    return [f"results/cpt_ablation/{key}/{name}" for key in CPT_RUNS if CPT_RUNS[key]["run"] in runs]


def cpt_dynamic_runs(runs):
    """The runs of `runs` whose mixture is dynamic (a strategy other than static)."""
    specs = CPT_ABLATION.get("runs", {})
    return [r for r in runs if specs[r].get("strategy", "static") != "static"]


# MoE-SFT data mixtures (rules/sft_mixture.smk): run/seed<seed> -> its settings (moelab.config.sft_mixture_runs).
SFT_MIXTURE = config.get("sft_mixture", {})
SFT_RUNS = sft_mixture_runs(config)
SFT_MIX_DIR = "results/sft_mixture/{sft_run}/seed{seed}"
SFT_MIX_STAGES = {f"sft_{r['run']}": r["run"] for r in SFT_RUNS.values()}  # stage of the merged result -> run


def sft_run(wildcards):
    """The settings of run {sft_run}/seed{seed} (moelab.config.sft_mixture_runs)."""
    return SFT_RUNS[f"{wildcards.sft_run}/seed{wildcards.seed}"]


def sft_run_files(name, runs):
    """results/sft_mixture/<run>/seed<seed>/<name> of every trained seed of each run in `runs`."""
    return [f"results/sft_mixture/{key}/{name}" for key in SFT_RUNS if SFT_RUNS[key]["run"] in runs]


def seed_peers(runs, run, pattern):
    """The merged results a one-seed run `run` of `runs` (id -> {"run", ...}) borrows its seed spread from:
    `pattern` (with {run}) of each run trained with several seeds; none for a run with several seeds itself."""
    counts = {}
    for r in runs.values():
        counts[r["run"]] = counts.get(r["run"], 0) + 1
    if counts.get(run, 0) > 1:
        return []
    return [pattern.format(run=r) for r, n in counts.items() if n > 1]


def sft_weights_input(wildcards):
    """{"final_weights": the summary of the run whose final weights {sft_run} trains with} (weights_from), or {}."""
    source = sft_run(wildcards)["weights_from"]
    return {"final_weights": f"results/sft_mixture/{source}/summary.json"} if source else {}


def sft_dynamic_runs(runs):
    """The runs of `runs` whose mixture strategy changes the weights during training."""
    specs = SFT_MIXTURE.get("runs", {})
    changing = [s for s, cls in STRATEGIES.items() if cls.dynamic and not cls.held_after_start]
    return [r for r in runs if (specs[r] or {}).get("strategy", "static") in changing]


# LLaMA-MoE v2 post-training (rules/post_training.smk): run/seed<seed> -> its settings
# (moelab.config.post_training_runs); a run's seeds are merged into results/eval/<run>/llama_moe_v2.json.
POST_TRAINING = config.get("post_training", {})
POST_RUNS = post_training_runs(config)
POST_DIR = "results/post_training/{pt_run}/seed{seed}"
POST_STAGES = sorted({r["run"] for r in POST_RUNS.values()})  # stages of the merged results


def post_run(wildcards):
    """The settings of run {pt_run}/seed{seed} (moelab.config.post_training_runs)."""
    return POST_RUNS[f"{wildcards.pt_run}/seed{wildcards.seed}"]


def post_stage_dir(key, stage):
    """results/post_training/<run>/seed<seed>/<stage> of a POST_RUNS id."""
    return f"results/post_training/{key}/{stage}"


def post_final_files(name, runs):
    """<name> in the last stage's folder of every trained seed of each run in `runs`."""
    return [
        f"{post_stage_dir(key, list(POST_RUNS[key]['stages'])[-1])}/{name}"
        for key in POST_RUNS
        if POST_RUNS[key]["run"] in runs
    ]


def post_run_files(name, runs):
    """results/post_training/<run>/seed<seed>/<name> of every trained seed of each run in `runs`."""
    return [f"results/post_training/{key}/{name}" for key in POST_RUNS if POST_RUNS[key]["run"] in runs]


def post_stage_start(wildcards):
    """The model stage {pt_stage} of run {pt_run}/seed{seed} starts from: the construction run's model, or the
    run's previous stage's."""
    run, key = post_run(wildcards), f"{wildcards.pt_run}/seed{wildcards.seed}"
    stages = list(run["stages"])
    i = stages.index(wildcards.pt_stage)
    if i == 0:
        return f"results/construct/{run['construct']}/model"
    return f"{post_stage_dir(key, stages[i - 1])}/model"


def post_final_model(wildcards):
    """The model after the last stage of run {pt_run}/seed{seed}."""
    key = f"{wildcards.pt_run}/seed{wildcards.seed}"
    return f"{post_stage_dir(key, list(post_run(wildcards)['stages'])[-1])}/model"


# SparseAdapter stage (rules/sparse_adapter.smk): its config section, run files and training settings.

SA = config["sparse_adapter"]
SA_DIR = "results/sparse_adapter"
SA_TRAIN_KEYS = ("steps", "batch_size", "lr", "full_ft_lr", "weight_decay", "warmup_steps", "max_len",
                 "eval_batch_size", "bottleneck", "prune_examples", "synflow_iterations")  # fmt: skip


def sa_runs(variants):
    """results/sparse_adapter/<run>.json of every run in `variants` (each once)."""
    return expand(f"{SA_DIR}/{{variant}}.json", variant=list(dict.fromkeys(variants)))
