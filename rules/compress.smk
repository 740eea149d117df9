# Stage 5: Block Drop by cosine similarity of block inputs and outputs on calibration text; compresses our SFT
# model, or compress.base_model (a released checkpoint such as Mixtral-8x7B, rule download_base_model).


rule compress:
    input:
        model=model_dir("compress_base"),
        calib=f"resources/data/pretrain/{config['compress']['calib_domain']}.jsonl",
    output:
        model=directory("results/models/compress"),
        scores="results/compress/block_scores.json",
    params:
        compress=config["compress"],
        seed=config["seed"],
        device=config["device"],
    log:
        "logs/compress/compress.log",
    benchmark:
        "benchmarks/runs/compress/compress.tsv"
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
