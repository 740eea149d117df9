# MoE-SFT data-mixture comparison (arXiv 2406.11256, Sec. 4, its main table). Every run of config
# sft_mixture.runs instruction-tunes the model SFT starts from (sft_base) for sft_mixture.steps steps with the
# `sft:` settings and its own mixture strategy (moelab.mixture: dynamic gate-load redundancy, the static and
# random baselines), holding out the same dev examples of each data set; headline runs train with every seed of
# sft_mixture.seeds and are in `rule all` (table_main, table_final_weights, fig_sampling_weights), the other
# runs form target moe_sft_baselines (table_baselines). Each seed is evaluated on MoE-SFT's task set, and the
# seeds of a run are merged into results/eval/sft_<run>/moe_sft.json, which the paper tables read.

wildcard_constraints:
    sft_run="|".join(sorted({r["run"] for r in SFT_RUNS.values()})) or "none",


rule sft_mixture_train:
    input:
        unpack(sft_weights_input),
        model=model_dir("sft_base"),
        data=sft_data(),
    output:
        config=f"{SFT_MIX_DIR}/train_config.json",
        model=temp(directory(f"{SFT_MIX_DIR}/model")),
        log_csv=f"{SFT_MIX_DIR}/log.csv",
        summary=f"{SFT_MIX_DIR}/summary.json",
    params:
        # checkpoints only serve a resume after a kill and are deleted after the run
        **{
            **train_params(
                "sft",
                ckpt_dir="results/checkpoints/sft_mixture/{sft_run}/seed{seed}",
                discard_checkpoints=True,
            ),
            "train": lambda wc: {**train_section(config, "sft"), **sft_run(wc)["train"]},
            "seed": lambda wc: sft_run(wc)["seed"],
        },
    log:
        "logs/sft_mixture/{sft_run}/seed{seed}/train.log",
    benchmark:
        "benchmarks/runs/sft_mixture/{sft_run}/seed{seed}/train.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("sft_mixture_train", "mem_mb"),
        runtime=sized("sft_mixture_train", "runtime"),
        disk_mb=sized("sft_mixture_train", "disk_mb"),
        gpu=sized("sft_mixture_train", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"


# MoE-SFT's task set on one seed's model (the evaluate rule's script, cache and settings)
use rule evaluate as sft_mixture_eval with:
    input:
        model=f"{SFT_MIX_DIR}/model",
        data=eval_data,
    output:
        f"{SFT_MIX_DIR}/{{paper}}.json",
    params:
        stage=lambda wc: f"sft_{wc.sft_run}",
        plan=lambda wc: paper_plan(EVAL, wc.paper),
        evaluate=EVAL_SETTINGS,
        eval_dir="resources/data/eval",
        cache_dir=EVAL["cache_dir"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    wildcard_constraints:
        paper="moe_sft",
    resources:
        mem_mb=sized("sft_mixture_eval", "mem_mb"),
        runtime=sized("sft_mixture_eval", "runtime"),
        disk_mb=sized("sft_mixture_eval", "disk_mb"),
        gpu=sized("sft_mixture_eval", "gpu"),
    log:
        "logs/sft_mixture/{sft_run}/seed{seed}/{paper}.log",
    benchmark:
        "benchmarks/runs/sft_mixture/{sft_run}/seed{seed}/{paper}.tsv"


rule sft_mixture_seeds:
    input:
        seeds=lambda wc: sft_run_files(f"{wc.paper}.json", [wc.sft_run]),
        # a one-seed baseline borrows the headline runs' seed spread (its verdicts then count training noise)
        peers=lambda wc: seed_peers(SFT_RUNS, wc.sft_run, "results/eval/sft_{run}/%s.json" % wc.paper),
    output:
        "results/eval/sft_{sft_run}/{paper}.json",
    params:
        seeds=lambda wc: [SFT_RUNS[k]["seed"] for k in SFT_RUNS if SFT_RUNS[k]["run"] == wc.sft_run],
    wildcard_constraints:
        paper="moe_sft",
    log:
        "logs/sft_mixture/{sft_run}/{paper}_seeds.log",
    benchmark:
        "benchmarks/runs/sft_mixture/{sft_run}/{paper}_seeds.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/merge_seeds.py"


rule moe_sft_fig_sampling_weights:
    input:
        summaries=sft_run_files("summary.json", sft_dynamic_runs(SFT_MIXTURE.get("headline", []))),
    output:
        png=report(
            f"{PAPERS_DIR}/moe_sft/fig_sampling_weights.png",
            caption="../report/moe_sft_fig_sampling_weights.rst",
            category=PAPER_LABELS["moe_sft"],
        ),
        pdf=f"{PAPERS_DIR}/moe_sft/fig_sampling_weights.pdf",
    params:
        title=heading("moe_sft", "fig_sampling_weights"),
        config={"sft_mixture": SFT_MIXTURE, "sft": config["sft"]},
    log:
        "logs/report/moe_sft_fig_sampling_weights.log",
    benchmark:
        "benchmarks/runs/report/moe_sft_fig_sampling_weights.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sft_sampling_weights.py"


rule moe_sft_baselines:
    input:
        expand(f"{PAPERS_DIR}/moe_sft/table_baselines.{{ext}}", ext=("csv", "md")),


rule moe_sft_fig_expert_load_dynamic:
    input:
        summaries=sft_run_files("summary.json", sft_dynamic_runs(SFT_MIXTURE.get("headline", []))[:1])[:1],
    output:
        png=report(
            f"{PAPERS_DIR}/moe_sft/fig_expert_load_dynamic.png",
            caption="../report/moe_sft_fig_expert_load_dynamic.rst",
            category=PAPER_LABELS["moe_sft"],
        ),
        pdf=f"{PAPERS_DIR}/moe_sft/fig_expert_load_dynamic.pdf",
    params:
        title=heading("moe_sft", "fig_expert_load_dynamic"),
        config={"sft_mixture": SFT_MIXTURE},
    log:
        "logs/report/moe_sft_fig_expert_load_dynamic.log",
    benchmark:
        "benchmarks/runs/report/moe_sft_fig_expert_load_dynamic.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sft_expert_load.py"
