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
        mem_mb=4000,
        runtime=20,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/construct.py"
