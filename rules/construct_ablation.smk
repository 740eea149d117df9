# Expert-construction ablations, not part of `rule all`:
# - LLaMA-MoE sec. 3.1: every method in construct_ablation.methods (target llama_moe_construction), plus the
#   paper's configurations (8/16 experts, top-2/4) as a second table;
# - LLaMA-MoE v2: granularity at equal activation and MLP MoE vs attention MoE (target llama_moe_v2_ablation).
# Every run is built from the dense model, evaluated right after construction, continually pre-trained with the
# main `pretrain:` settings for construct_ablation.steps steps, and evaluated again.

from moelab.config import ablation_runs
from moelab.report.construction import METHOD_LABELS

ABLATION = config.get("construct_ablation", {})
ABLATION_METHODS = ABLATION.get("methods", [])
RUN_SPECS = ablation_runs(config)
CONSTRUCT_DIR = "results/construct/{run}"
ABLATION_EVAL_DATA = expand("resources/data/eval/{task}", task=ABLATION.get("tasks", []))
LLAMA_MOE_V2 = "results/papers/llama_moe_v2"
PHASE_MODEL = {"construct": "model", "cpt": "cpt"}
# {table} of rule construct_variant_table (results/papers/<paper>/<table>) -> the construct_ablation key listing
# its runs (the table's kind)
VARIANT_TABLES = {
    "llama_moe/table_configurations": "configurations",
    "llama_moe_v2/table_granularity": "granularity",
    "llama_moe_v2/table_mlp_vs_attention": "mlp_vs_attention",
}


wildcard_constraints:
    run="|".join(RUN_SPECS) or "none",
    phase="construct|cpt",


rule construct_method:
    input:
        dense=DENSE,
        data=pretrain_data(),
    output:
        model=directory(f"{CONSTRUCT_DIR}/model"),
        partition=f"{CONSTRUCT_DIR}/partition.safetensors",
        stats=f"{CONSTRUCT_DIR}/stats.json",
    params:
        spec=lambda wc: RUN_SPECS[wc.run],
        construct=config["construct"],
        ablation=ABLATION,
        seed=config["seed"],
    log:
        "logs/construct/{run}.log",
    benchmark:
        "benchmarks/runs/construct/{run}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/construct_method.py"


rule construct_cpt:
    input:
        unpack(reference_input),
        model=f"{CONSTRUCT_DIR}/model",
        data=pretrain_data(),
    output:
        config=f"{CONSTRUCT_DIR}/train_config.json",
        model=directory(f"{CONSTRUCT_DIR}/cpt"),
        log_csv=f"{CONSTRUCT_DIR}/cpt_log.csv",
        summary=f"{CONSTRUCT_DIR}/cpt_summary.json",
    params:
        # in the job's process (the ablation never used the launcher); checkpoints (~3 GB per run) are only
        # needed to resume a killed job, so they are deleted after the run
        **train_params(
            "pretrain",
            ckpt_dir="results/checkpoints/construct/{run}",
            launcher=asdict(LauncherConfig()),
            discard_checkpoints=True,
            steps=ABLATION.get("steps", 1),
        ),
    log:
        "logs/construct/{run}_cpt.log",
    benchmark:
        "benchmarks/runs/construct/{run}_cpt.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpu=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"


rule construct_eval:
    input:
        model=lambda wc: f"results/construct/{wc.run}/{PHASE_MODEL[wc.phase]}",
        data=ABLATION_EVAL_DATA,
    output:
        f"{CONSTRUCT_DIR}/eval_{{phase}}.json",
    params:
        tasks=ABLATION.get("tasks", []),
        limit=ABLATION.get("eval_limit"),
        batch_size=config["evaluate"]["batch_size"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/construct/{run}_eval_{phase}.log",
    benchmark:
        "benchmarks/runs/construct/{run}_eval_{phase}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/construct_eval.py"


REPORT_CONFIG = {k: config[k] for k in ("construct", "construct_ablation", "pretrain")}


rule llama_moe_table_construction:
    input:
        **ablation_inputs(ABLATION_METHODS),
    output:
        csv=f"{LLAMA_MOE}/table_construction.csv",
        md=report(
            f"{LLAMA_MOE}/table_construction.md",
            caption="../report/llama_moe_table_construction.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
    params:
        runs=ABLATION_METHODS,
        specs=RUN_SPECS,
        config=REPORT_CONFIG,
        title=heading("llama_moe", "table_construction"),
    log:
        "logs/report/llama_moe_table_construction.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_table_construction.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_construction_table.py"


rule construct_variant_table:
    input:
        unpack(lambda wc: ablation_inputs(ABLATION.get(VARIANT_TABLES[wc.table], []))),
    output:
        csv="results/papers/{table}.csv",
        md=report(
            "results/papers/{table}.md",
            caption="../report/construct_variant_table.rst",
            category="Construction ablations",
            subcategory="{table}",
        ),
    wildcard_constraints:
        table="|".join(VARIANT_TABLES),
    params:
        runs=lambda wc: ABLATION.get(VARIANT_TABLES[wc.table], []),
        specs=RUN_SPECS,
        config=REPORT_CONFIG,
        table=lambda wc: VARIANT_TABLES[wc.table],
        title=lambda wc: heading(*wc.table.split("/")),
    log:
        "logs/report/{table}.log",
    benchmark:
        "benchmarks/runs/report/{table}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_variant_table.py"


rule llama_moe_fig_construction_loss:
    input:
        logs=run_files("cpt_log.csv", ABLATION_METHODS),
    output:
        png=report(
            f"{LLAMA_MOE}/fig_construction_loss.png",
            caption="../report/llama_moe_fig_construction_loss.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
        pdf=f"{LLAMA_MOE}/fig_construction_loss.pdf",
    params:
        labels=[METHOD_LABELS.get(m, m) for m in ABLATION_METHODS],
        title=heading("llama_moe", "fig_construction_loss"),
        config={**REPORT_CONFIG, "runs": {m: RUN_SPECS[m] for m in ABLATION_METHODS}},
    log:
        "logs/report/llama_moe_fig_construction_loss.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_fig_construction_loss.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_loss_curve.py"


rule llama_moe_construction:
    input:
        rules.llama_moe_table_construction.output,
        rules.llama_moe_fig_construction_loss.output,
        expand("{table}.{ext}", table=f"{LLAMA_MOE}/table_configurations", ext=("csv", "md")),


rule llama_moe_v2_ablation:
    input:
        expand(
            "{table}.{ext}",
            table=(f"{LLAMA_MOE_V2}/table_granularity", f"{LLAMA_MOE_V2}/table_mlp_vs_attention"),
            ext=("csv", "md"),
        ),
