# LLaMA-MoE expert-construction ablation (sec. 3.1): every method in construct_ablation.methods is built from
# the dense model, continually pre-trained with the main `pretrain:` settings for construct_ablation.steps
# steps, and evaluated; not part of `rule all` (run: snakemake --cores all llama_moe_construction).

ABLATION = config.get("construct_ablation", {})
ABLATION_METHODS = ABLATION.get("methods", [])
CONSTRUCT_DIR = "results/construct/{method}"
PRETRAIN_DATA = expand("resources/data/pretrain/{domain}.jsonl", domain=config["data"]["pretrain_domains"])


wildcard_constraints:
    method="|".join(ABLATION_METHODS) or "none",


rule construct_method:
    input:
        dense=DENSE,
        data=PRETRAIN_DATA,
    output:
        model=directory(f"{CONSTRUCT_DIR}/model"),
        partition=f"{CONSTRUCT_DIR}/partition.safetensors",
        stats=f"{CONSTRUCT_DIR}/stats.json",
    params:
        construct=config["construct"],
        ablation=ABLATION,
        seed=config["seed"],
    log:
        "logs/construct/{method}.log",
    benchmark:
        "benchmarks/runs/construct/{method}.tsv"
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
        model=f"{CONSTRUCT_DIR}/model",
        data=PRETRAIN_DATA,
    output:
        model=directory(f"{CONSTRUCT_DIR}/cpt"),
        log_csv=f"{CONSTRUCT_DIR}/cpt_log.csv",
        summary=f"{CONSTRUCT_DIR}/cpt_summary.json",
    params:
        train={**config["pretrain"], "steps": ABLATION.get("steps", 1)},
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
        ckpt_dir="results/checkpoints/construct/{method}",
    log:
        "logs/construct/{method}_cpt.log",
    benchmark:
        "benchmarks/runs/construct/{method}_cpt.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpus=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/construct_method.py"


rule construct_eval:
    input:
        model=f"{CONSTRUCT_DIR}/cpt",
        data=eval_data(),
    output:
        f"{CONSTRUCT_DIR}/eval.json",
    params:
        evaluate=config["evaluate"],
        limit=ABLATION.get("eval_limit"),
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/construct/{method}_eval.log",
    benchmark:
        "benchmarks/runs/construct/{method}_eval.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpus=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/construct_method.py"


rule llama_moe_table_construction:
    input:
        stats=expand(f"{CONSTRUCT_DIR}/stats.json", method=ABLATION_METHODS),
        cpt=expand(f"{CONSTRUCT_DIR}/cpt_summary.json", method=ABLATION_METHODS),
        evals=expand(f"{CONSTRUCT_DIR}/eval.json", method=ABLATION_METHODS),
    output:
        csv=f"{LLAMA_MOE}/table_construction.csv",
        md=report(
            f"{LLAMA_MOE}/table_construction.md",
            caption="../report/llama_moe_table_construction.rst",
            category="LLaMA-MoE",
        ),
    params:
        methods=ABLATION_METHODS,
        limit=ABLATION.get("eval_limit"),
        config={k: config[k] for k in ("construct", "construct_ablation", "pretrain", "evaluate")},
    log:
        "logs/report/llama_moe_table_construction.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_construction.py"


rule llama_moe_fig_construction_loss:
    input:
        logs=expand(f"{CONSTRUCT_DIR}/cpt_log.csv", method=ABLATION_METHODS),
    output:
        png=report(
            f"{LLAMA_MOE}/fig_construction_loss.png",
            caption="../report/llama_moe_fig_construction_loss.rst",
            category="LLaMA-MoE",
        ),
        pdf=f"{LLAMA_MOE}/fig_construction_loss.pdf",
    params:
        methods=ABLATION_METHODS,
        config={k: config[k] for k in ("construct_ablation", "pretrain")},
    log:
        "logs/report/llama_moe_fig_construction_loss.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_construction.py"


rule llama_moe_construction:
    input:
        rules.llama_moe_table_construction.output,
        rules.llama_moe_fig_construction_loss.output,
