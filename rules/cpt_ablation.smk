# LLaMA-MoE continual pre-training data ablations (sec. 4, "Continual pre-training"; its Tables "sampling" and
# "filtering"), not part of `rule all` (target llama_moe_sampling). Every run starts from the constructed MoE
# (results/models/moe) and trains cpt_ablation.steps steps with the main `pretrain:` settings, its own data
# mixture (static uniform / LLaMA mix / Sheared mix / proportional, or Sheared-LLaMA dynamic batch loading) and
# its corpora (raw, or resources/data/pretrain_filtered/<filter>). Runs in cpt_ablation.headline train with every
# seed of cpt_ablation.seeds. Each run is then scored: downstream average on cpt_ablation.tasks and held-out loss
# per domain on the raw corpora's held-out blocks (the same text for every run, filtered or not).

wildcard_constraints:
    cpt_run="|".join(sorted({r["run"] for r in CPT_RUNS.values()})) or "none",
    seed=r"\d+",


rule cpt_ablation_train:
    input:
        unpack(reference_input),
        model="results/models/moe",
        data=cpt_run_data,
    output:
        config=f"{CPT_DIR}/train_config.json",
        model=temp(directory(f"{CPT_DIR}/model")),
        log_csv=f"{CPT_DIR}/log.csv",
        rounds=f"{CPT_DIR}/rounds.csv",
    params:
        # in the job's process; checkpoints only serve a resume after a kill and are deleted after the run
        **{
            **train_params(
                "pretrain",
                ckpt_dir="results/checkpoints/cpt_ablation/{cpt_run}/seed{seed}",
                launcher=asdict(LauncherConfig()),
                discard_checkpoints=True,
            ),
            "train": lambda wc: {**train_section(config, "pretrain"), **cpt_run(wc)["train"]},
            "seed": lambda wc: cpt_run(wc)["seed"],
        },
    log:
        f"logs/cpt_ablation/{{cpt_run}}/seed{{seed}}/train.log",
    benchmark:
        f"benchmarks/runs/cpt_ablation/{{cpt_run}}/seed{{seed}}/train.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpu=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"


rule cpt_ablation_eval:
    input:
        model=f"{CPT_DIR}/model",
        heldout=pretrain_data(),
        data=CPT_EVAL_DATA,
    output:
        f"{CPT_DIR}/eval.json",
    params:
        tasks=CPT_ABLATION.get("tasks", []),
        limit=CPT_ABLATION.get("eval_limit"),
        seq_len=config["pretrain"]["seq_len"],
        batch_size=config["evaluate"]["batch_size"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        f"logs/cpt_ablation/{{cpt_run}}/seed{{seed}}/eval.log",
    benchmark:
        f"benchmarks/runs/cpt_ablation/{{cpt_run}}/seed{{seed}}/eval.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/cpt_ablation_eval.py"


CPT_REPORT_CONFIG = {"cpt_ablation": CPT_ABLATION, "pretrain": config["pretrain"]}


rule cpt_ablation_table:
    input:
        evals=lambda wc: cpt_run_files("eval.json", CPT_ABLATION.get(wc.table, [])),
        rounds=lambda wc: cpt_run_files("rounds.csv", CPT_ABLATION.get(wc.table, [])),
    output:
        csv=f"{LLAMA_MOE}/table_{{table}}.csv",
        md=report(
            f"{LLAMA_MOE}/table_{{table}}.md",
            caption="../report/llama_moe_cpt_ablation_table.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
    wildcard_constraints:
        table="sampling|filtering",
    params:
        runs=lambda wc: CPT_ABLATION.get(wc.table, []),
        config=CPT_REPORT_CONFIG,
        title=lambda wc: heading("llama_moe", f"table_{wc.table}"),
    log:
        "logs/report/llama_moe_table_{table}.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_table_{table}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_cpt_ablation_table.py"


rule llama_moe_fig_sampling_loss:
    input:
        rounds=cpt_run_files("rounds.csv", CPT_ABLATION.get("sampling", [])),
    output:
        png=report(
            f"{LLAMA_MOE}/fig_sampling_loss.png",
            caption="../report/llama_moe_fig_sampling_loss.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
        pdf=f"{LLAMA_MOE}/fig_sampling_loss.pdf",
    params:
        title=heading("llama_moe", "fig_sampling_loss"),
        config=CPT_REPORT_CONFIG,
    log:
        "logs/report/llama_moe_fig_sampling_loss.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_fig_sampling_loss.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sampling_loss.py"


rule llama_moe_fig_sampling_weights:
    input:
        rounds=cpt_run_files("rounds.csv", cpt_dynamic_runs(CPT_ABLATION.get("sampling", []))),
    output:
        png=report(
            f"{LLAMA_MOE}/fig_sampling_weights.png",
            caption="../report/llama_moe_fig_sampling_weights.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
        pdf=f"{LLAMA_MOE}/fig_sampling_weights.pdf",
    params:
        title=heading("llama_moe", "fig_sampling_weights"),
        config=CPT_REPORT_CONFIG,
    log:
        "logs/report/llama_moe_fig_sampling_weights.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_fig_sampling_weights.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sampling_weights.py"


rule llama_moe_sampling:
    input:
        expand(f"{LLAMA_MOE}/table_{{table}}.{{ext}}", table=("sampling", "filtering"), ext=("csv", "md")),
        rules.llama_moe_fig_sampling_loss.output,
        rules.llama_moe_fig_sampling_weights.output,
