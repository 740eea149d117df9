# Stage 2: dense LLaMA -> LLaMA-MoE (split each FFN into experts, add routers).


rule construct:
    input:
        dense=DENSE,
    output:
        model=directory("results/models/moe"),
    params:
        construct=config["construct"],
        seed=config["seed"],
    log:
        "logs/construct/moe.log",
    benchmark:
        "benchmarks/runs/construct/moe.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("construct", "mem_mb"),
        runtime=sized("construct", "runtime"),
        disk_mb=sized("construct", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/construct.py"


rule construct_activated:
    # The dense baseline of the MoE's activated size (LLaMA-MoE sec. 4): every FFN cut to the neurons of
    # activated_baseline.experts (null = experts 0 .. top_k-1), down projection x s/k, i.e. the MoE with its
    # router pinned to those experts (moelab.construct.activated).
    input:
        moe="results/models/moe",
    output:
        model=directory("results/models/dense_active"),
    params:
        experts=config["activated_baseline"]["experts"],
        seed=config["seed"],
    log:
        "logs/construct/dense_active.log",
    benchmark:
        "benchmarks/runs/construct/dense_active.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("construct_activated", "mem_mb"),
        runtime=sized("construct_activated", "runtime"),
        disk_mb=sized("construct_activated", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/construct_activated.py"
