# Stage 3: continual pre-training on packed domain sequences drawn by a data mixture (pretrain.mixture:
# static weights or Sheared-LLaMA dynamic batch loading). Every mixture.eval_interval steps an evaluation
# round measures the held-out loss per domain (results/pretrain/rounds.csv); rule reference_loss measures the
# dense model's, the reference a dynamic mixture compares with (unless mixture.reference_loss fixes it).
# Checkpoints live outside the rule's outputs (results/checkpoints/pretrain) so a killed job resumes.
# scripts/train.py writes the run's resolved config (results/pretrain/train_config.json) and runs
# `python -m moelab.train` on it: in the job (launcher kind none) or as launcher.num_processes processes under
# torchrun / accelerate launch (DDP, or FSDP for 7-8B models) inside the job; gpu = num_processes.


rule reference_loss:
    input:
        model=DENSE,
        data=pretrain_data(),
    output:
        "results/pretrain/reference_loss.json",
    params:
        seq_len=config["pretrain"]["seq_len"],
        seed=config["seed"],
        dtype=config["dtype"],
        device=config["device"],
    log:
        "logs/pretrain/reference_loss.log",
    benchmark:
        "benchmarks/runs/pretrain/reference_loss.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("reference_loss", "mem_mb"),
        runtime=sized("reference_loss", "runtime"),
        disk_mb=sized("reference_loss", "disk_mb"),
        gpu=sized("reference_loss", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/reference_loss.py"


rule pretrain:
    # {cpt_model}: pretrain = the constructed MoE; pretrain_active = the dense baseline with the MoE's
    # activated FFN width (rule construct_activated), trained with the same settings on the same budget.
    input:
        unpack(reference_input),
        model=cpt_start,
        data=pretrain_data(),
    output:
        config="results/{cpt_model}/train_config.json",
        model=directory("results/models/{cpt_model}"),
        log_csv="results/{cpt_model}/log.csv",
        rounds="results/{cpt_model}/rounds.csv",
    params:
        **train_params("pretrain", ckpt_dir="results/checkpoints/{cpt_model}"),
    log:
        "logs/pretrain/{cpt_model}.log",
    benchmark:
        "benchmarks/runs/pretrain/{cpt_model}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("pretrain", "mem_mb"),
        runtime=sized("pretrain", "runtime"),
        disk_mb=sized("pretrain", "disk_mb"),
        gpu=sized("pretrain", "gpu"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/train.py"
