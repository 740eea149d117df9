# Stage 5: compression recipes (Expert Slimming / Trimming, moelab.compress; arXiv 2406.02500): each recipe's
# steps in order on our SFT model, or compress.base_model (a released checkpoint such as Mixtral-8x7B, rule
# download_base_model). compress.recipe is the headline (stage compress, in `all`: model_dir("compress")).


wildcard_constraints:
    recipe="|".join(map(re.escape, COMPRESS_RECIPES)),


rule compress:
    input:
        model=model_dir("compress_base"),
        calib=f"resources/data/pretrain/{config['compress']['calib_domain']}.jsonl",
        recovery=compress_recovery_text,
    output:
        model=directory("results/compress/{recipe}/model"),
        report="results/compress/{recipe}/recipe.json",
    params:
        compress={k: v for k, v in config["compress"].items() if k.startswith("calib_")},
        steps=lambda wc: COMPRESS_RECIPES[wc.recipe],
        seed=config["seed"],
        device=config["device"],
    log:
        "logs/compress/{recipe}.log",
    benchmark:
        "benchmarks/runs/compress/{recipe}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("compress", "mem_mb"),
        runtime=sized("compress", "runtime"),
        disk_mb=sized("compress", "disk_mb"),
        gpu=sized("compress", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/compress.py"


# compress.methods: every recipe's model on the compression paper's task set (the evaluate rule's script, cache and
# settings); table_methods / table_recipe read them and their speed records (rules/compress_speed.smk; target
# moe_compression_methods, not in `all`).
use rule evaluate as compress_eval with:
    input:
        model="results/compress/{recipe}/model",
        data=eval_data,
    output:
        "results/eval/compress/{recipe}/{paper}.json",
    params:
        stage=lambda wc: f"compress/{wc.recipe}",
        plan=lambda wc: paper_plan(EVAL, wc.paper),
        evaluate=EVAL_SETTINGS,
        eval_dir="resources/data/eval",
        cache_dir=EVAL["cache_dir"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    wildcard_constraints:
        paper="moe_compression",
    resources:
        mem_mb=sized("compress_eval", "mem_mb"),
        runtime=sized("compress_eval", "runtime"),
        disk_mb=sized("compress_eval", "disk_mb"),
        gpu=sized("compress_eval", "gpu"),
    log:
        "logs/compress/{recipe}/{paper}.log",
    benchmark:
        "benchmarks/runs/compress/{recipe}/{paper}.tsv"


rule moe_compression_methods:
    input:
        expand("results/papers/moe_compression/{table}.{ext}", table=("table_methods", "table_recipe", "table_speed"), ext=("csv", "md")),
        expand("results/papers/moe_compression/fig_tradeoff.{ext}", ext=("png", "pdf")),  # rules/compress_speed.smk
