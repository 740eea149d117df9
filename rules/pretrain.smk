# Stage 3: continual pre-training on packed domain sequences with static domain weights.
# Checkpoints live outside the rule's outputs (results/checkpoints/pretrain) so a killed job resumes.
# scripts/train.py writes the run's resolved config (results/pretrain/train_config.json) and runs
# `python -m moelab.train` on it: in the job (launcher kind none) or as launcher.num_processes processes under
# torchrun / accelerate launch (DDP, or FSDP for 7-8B models) inside the job; gpu = num_processes.


rule pretrain:
    input:
        model="results/models/moe",
        data=pretrain_data(),
    output:
        config="results/pretrain/train_config.json",
        model=directory("results/models/pretrain"),
        log_csv="results/pretrain/log.csv",
    params:
        **train_params("pretrain", ckpt_dir="results/checkpoints/pretrain"),
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
