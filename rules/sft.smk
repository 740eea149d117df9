# Stage 4: instruction tuning with the chat template, loss on assistant tokens, uniform mixture.


rule sft:
    input:
        model="results/models/pretrain",
        data=expand("resources/data/sft/{domain}.jsonl", domain=config["data"]["sft_domains"]),
    output:
        model=directory("results/models/sft"),
        log_csv="results/sft/log.csv",
    params:
        train=config["sft"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
        ckpt_dir="results/checkpoints/sft",
    log:
        "logs/sft/sft.log",
    benchmark:
        "benchmarks/runs/sft/sft.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpus=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"
