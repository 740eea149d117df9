# Stage 4: instruction tuning with the chat template, loss on assistant tokens, uniform mixture; starts from our
# continually pre-trained model, or from sft.base_model (a released checkpoint, rule download_base_model);
# with sft.stage1 set, rule sft_stage1 trains a first stage that rule sft continues (LLaMA-MoE v2).
# scripts/train.py writes the run's resolved config (results/<stage>/train_config.json) and runs
# `python -m moelab.train` on it: in the job (launcher kind none) or as launcher.num_processes processes under
# torchrun / accelerate launch (DDP, or FSDP for 7-8B models) inside the job; gpu = num_processes.


rule sft:
    input:
        model="results/models/sft_stage1" if config["sft"].get("stage1") else model_dir("sft_base"),
        data=sft_data(),
    output:
        config="results/sft/train_config.json",
        model=directory("results/models/sft"),
        log_csv="results/sft/log.csv",
    params:
        **train_params("sft", ckpt_dir="results/checkpoints/sft"),
    log:
        "logs/sft/sft.log",
    benchmark:
        "benchmarks/runs/sft/sft.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("sft", "mem_mb"),
        runtime=sized("sft", "runtime"),
        disk_mb=sized("sft", "disk_mb"),
        gpu=sized("sft", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"


# sft.stage1: the same training job on the stage-1 settings, from what SFT would otherwise start from
use rule sft as sft_stage1 with:
    input:
        model=model_dir("sft_base"),
        data=rules.sft.input.data,
    output:
        config="results/sft_stage1/train_config.json",
        model=directory("results/models/sft_stage1"),
        log_csv="results/sft_stage1/log.csv",
    params:
        **train_params("sft_stage1", ckpt_dir="results/checkpoints/sft_stage1"),
    log:
        "logs/sft/sft_stage1.log",
    benchmark:
        "benchmarks/runs/sft/sft_stage1.tsv"
    resources:
        mem_mb=sized("sft_stage1", "mem_mb"),
        runtime=sized("sft_stage1", "runtime"),
        disk_mb=sized("sft_stage1", "disk_mb"),
        gpu=sized("sft_stage1", "gpu"),
