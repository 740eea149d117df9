# Data filtering (LLaMA-MoE sec. 4, "Continual pre-training"): each pretraining domain through the fluency filter
# (drop the highest-perplexity fraction under the dense model), the rule-based advertisement / boilerplate filter,
# or both (ads, then fluency), into resources/data/pretrain_filtered/{filter}/; what each removes per domain
# (documents, tokens, examples) goes to results/filters/{filter}/{domain}.csv, joined by rule filter_report.
# Not in `all`. A filter gets only its own settings as params, so changing one filter reruns only its outputs.


rule filter_pretrain_data:
    input:
        data="resources/data/pretrain/{domain}.jsonl",
        # fluency / both: the scoring model; every filter: the tokenizer that counts the report's tokens
        model=model_dir("dense"),
    output:
        data="resources/data/pretrain_filtered/{filter}/{domain}.jsonl",
        report="results/filters/{filter}/{domain}.csv",
    params:
        settings=filter_settings,
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    wildcard_constraints:
        filter="|".join(FILTER_STEPS),
    log:
        "logs/filters/{filter}/{domain}.log",
    benchmark:
        "benchmarks/runs/filters/{filter}/{domain}.tsv"
    threads: lambda wildcards: MAX_THREADS if scores_fluency(wildcards) else 1
    resources:
        mem_mb=lambda wildcards: 8000 if scores_fluency(wildcards) else 2000,
        runtime=30,
        gpu=lambda wildcards: int(config["device"] == "cuda" and scores_fluency(wildcards)),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/filter_pretrain_data.py"


rule filter_report:
    input:
        expand(
            "results/filters/{filter}/{domain}.csv",
            filter=FILTER_STEPS,
            domain=config["data"]["pretrain_domains"],
        ),
    output:
        "results/filters/report.csv",
    log:
        "logs/filters/report.log",
    benchmark:
        "benchmarks/runs/filters/report.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/filter_report.py"
