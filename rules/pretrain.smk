# Stage 3: continual pre-training on packed domain sequences with static domain weights.
# Checkpoints live outside the rule's outputs (results/checkpoints/pretrain) so a killed job resumes.
# config launcher: runs in the job (kind none) or as launcher.num_processes processes under torchrun /
# accelerate launch (DDP, or FSDP for 7-8B models) started by scripts/train.py inside the job; gpu = num_processes.


rule pretrain:
    input:
        model="results/models/moe",
        data=expand("resources/data/pretrain/{domain}.jsonl", domain=config["data"]["pretrain_domains"]),
    output:
        model=directory("results/models/pretrain"),
        log_csv="results/pretrain/log.csv",
    params:
        train=train_section(config, "pretrain"),
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
        launcher=LAUNCHER,
        ckpt_dir="results/checkpoints/pretrain",
    log:
        "logs/pretrain/pretrain.log",
    benchmark:
        "benchmarks/runs/pretrain/pretrain.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=12000,
        runtime=120,
        gpu=train_gpus(),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"
