# LLaMA-MoE v2 two-stage post-training at demo scale (arXiv 2411.15708, sec. 3); target llama_moe_v2, not in
# `rule all`. Every run of post_training.table instruction-tunes a construction run's model (rule
# construct_method, rules/construct_ablation.smk) right after construction with the `sft:` settings: two-stage
# (stage1: general data, then stage2: math/code emphasis) or one-stage (their step-weighted mix, equal steps),
# each stage scoring the same held-out dev examples (moelab.config.post_training_runs). Each seed is evaluated
# on the llama_moe_v2 task set; a run's seeds are merged into results/eval/<run>/llama_moe_v2.json, which the v2
# main table reads (rows v2_post, v2_shared), and table_post_training compares the schedules.


wildcard_constraints:
    pt_run="|".join(POST_STAGES) or "none",
    pt_stage="stage1|stage2|one_stage",


rule post_train:
    input:
        model=post_stage_start,
        data=sft_data(),
    output:
        config=f"{POST_DIR}/{{pt_stage}}/train_config.json",
        model=temp(directory(f"{POST_DIR}/{{pt_stage}}/model")),
        log_csv=f"{POST_DIR}/{{pt_stage}}/log.csv",
        summary=f"{POST_DIR}/{{pt_stage}}/summary.json",
    params:
        # checkpoints only serve a resume after a kill and are deleted after the stage
        **{
            **train_params(
                "sft",
                ckpt_dir="results/checkpoints/post_training/{pt_run}/seed{seed}/{pt_stage}",
                discard_checkpoints=True,
            ),
            "train": lambda wc: {**train_section(config, "sft"), **post_run(wc)["stages"][wc.pt_stage]},
            "seed": lambda wc: post_run(wc)["seed"],
        },
    log:
        "logs/post_training/{pt_run}/seed{seed}/{pt_stage}.log",
    benchmark:
        "benchmarks/runs/post_training/{pt_run}/seed{seed}/{pt_stage}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("post_train", "mem_mb"),
        runtime=sized("post_train", "runtime"),
        disk_mb=sized("post_train", "disk_mb"),
        gpu=sized("post_train", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"


# the llama_moe_v2 task set on one seed's final model (the evaluate rule's script, cache and settings)
use rule evaluate as post_train_eval with:
    input:
        model=post_final_model,
        data=eval_data,
    output:
        f"{POST_DIR}/{{paper}}.json",
    params:
        stage=lambda wc: f"{wc.pt_run}/seed{wc.seed}",
        plan=lambda wc: paper_plan(EVAL, wc.paper),
        evaluate=EVAL_SETTINGS,
        eval_dir="resources/data/eval",
        cache_dir=EVAL["cache_dir"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    wildcard_constraints:
        paper="llama_moe_v2",
    resources:
        mem_mb=sized("post_train_eval", "mem_mb"),
        runtime=sized("post_train_eval", "runtime"),
        disk_mb=sized("post_train_eval", "disk_mb"),
        gpu=sized("post_train_eval", "gpu"),
    log:
        "logs/post_training/{pt_run}/seed{seed}/{paper}.log",
    benchmark:
        "benchmarks/runs/post_training/{pt_run}/seed{seed}/{paper}.tsv"


use rule sft_mixture_seeds as post_train_seeds with:
    input:
        seeds=lambda wc: post_run_files(f"{wc.paper}.json", [wc.pt_run]),
        peers=lambda wc: seed_peers(POST_RUNS, wc.pt_run, "results/eval/{run}/%s.json" % wc.paper),
    output:
        "results/eval/{pt_run}/{paper}.json",
    params:
        seeds=lambda wc: [r["seed"] for r in POST_RUNS.values() if r["run"] == wc.pt_run],
    wildcard_constraints:
        paper="llama_moe_v2",
    log:
        "logs/post_training/{pt_run}/{paper}_seeds.log",
    benchmark:
        "benchmarks/runs/post_training/{pt_run}/{paper}_seeds.tsv"


rule llama_moe_v2_table_post_training:
    input:
        summaries=post_final_files("summary.json", POST_TRAINING.get("table", [])),
        evals=post_run_files("llama_moe_v2.json", POST_TRAINING.get("table", [])),
    output:
        csv=f"{PAPERS_DIR}/llama_moe_v2/table_post_training.csv",
        md=report(
            f"{PAPERS_DIR}/llama_moe_v2/table_post_training.md",
            caption="../report/llama_moe_v2_table_post_training.rst",
            category=PAPER_LABELS["llama_moe_v2"],
        ),
    params:
        runs=POST_TRAINING.get("table", []),
        title=heading("llama_moe_v2", "table_post_training"),
        config={"post_training": POST_TRAINING, "sft": config["sft"], "construct_ablation": ABLATION},
    log:
        "logs/report/llama_moe_v2_table_post_training.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_v2_table_post_training.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_post_training.py"
