# Stage 3: continual pre-training on packed domain sequences with static domain weights.
# Checkpoints live outside the rule's outputs (results/checkpoints/pretrain) so a killed job resumes.


rule pretrain:
    input:
        model="results/models/moe",
        data=expand("resources/data/pretrain/{domain}.jsonl", domain=config["data"]["pretrain_domains"]),
    output:
        model=directory("results/models/pretrain"),
        log_csv="results/pretrain/log.csv",
    params:
        train=config["pretrain"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
        ckpt_dir="results/checkpoints/pretrain",
    log:
        "logs/pretrain/pretrain.log",
    benchmark:
        "benchmarks/runs/pretrain/pretrain.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpus=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"
