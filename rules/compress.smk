# Stage 5: Block Drop by cosine similarity of block inputs and outputs on calibration text.


rule compress:
    input:
        model="results/models/sft",
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
        mem_mb=8000,
        runtime=30,
        gpu=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/compress.py"
