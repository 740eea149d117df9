# MoE compression "Measurement" (arXiv 2406.02500): batch-1 speed and memory of every recipe of compress.methods
# beside the model it compressed (rule compress_speed, one job per recipe, the two models interleaved), then
# table_speed and fig_tradeoff; all of it in target moe_compression_methods, not in `all`.


rule compress_speed:
    input:
        parent=model_dir("compress_base"),
        model="results/compress/{recipe}/model",
    output:
        "results/compress/speed/{recipe}.json",
    params:
        speed=config["compress"]["speed"],
        steps=lambda wc: COMPRESS_RECIPES[wc.recipe],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/compress/speed/{recipe}.log",
    benchmark:
        "benchmarks/runs/compress/speed/{recipe}.tsv"
    threads: MAX_THREADS  # alone on the machine: a job beside it would slow both models' timings
    resources:
        mem_mb=sized("compress_speed", "mem_mb"),
        runtime=sized("compress_speed", "runtime"),
        disk_mb=sized("compress_speed", "disk_mb"),
        gpu=sized("compress_speed", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/compress_speed.py"


rule moe_compression_table_speed:
    input:
        speed=expand("results/compress/speed/{recipe}.json", recipe=config["compress"].get("methods") or []),
    output:
        csv=f"{PAPERS_DIR}/moe_compression/table_speed.csv",
        md=report(
            f"{PAPERS_DIR}/moe_compression/table_speed.md",
            caption="../report/moe_compression_table_speed.rst",
            category=PAPER_LABELS["moe_compression"],
        ),
    params:
        title=heading("moe_compression", "table_speed"),
        config={k: config["compress"][k] for k in ("speed", "methods")},
    log:
        "logs/report/moe_compression_table_speed.log",
    benchmark:
        "benchmarks/runs/report/moe_compression_table_speed.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_compression_speed.py"


rule moe_compression_fig_tradeoff:
    input:
        tables=expand(f"{PAPERS_DIR}/moe_compression/{{table}}.csv", table=("table_methods", "table_recipe")),
    output:
        png=report(
            f"{PAPERS_DIR}/moe_compression/fig_tradeoff.png",
            caption="../report/moe_compression_fig_tradeoff.rst",
            category=PAPER_LABELS["moe_compression"],
        ),
        pdf=f"{PAPERS_DIR}/moe_compression/fig_tradeoff.pdf",
    params:
        title=heading("moe_compression", "fig_tradeoff"),
        recipes={r: COMPRESS_RECIPES[r] for r in config["compress"].get("methods") or []},
        config={k: config["compress"][k] for k in ("speed", "methods")},
    log:
        "logs/report/moe_compression_fig_tradeoff.log",
    benchmark:
        "benchmarks/runs/report/moe_compression_fig_tradeoff.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_tradeoff.py"
