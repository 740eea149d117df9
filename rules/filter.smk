# Data filtering (LLaMA-MoE sec. 4, "Continual pre-training"): each pretraining domain through the fluency filter
# (drop the highest-perplexity fraction under the dense model), the rule-based advertisement / boilerplate filter,
# or both (ads, then fluency), into resources/data/pretrain_filtered/{filter}/; what each removes per domain
# (documents, tokens, examples) goes to results/filters/{filter}/{domain}.csv, joined by rule filter_report.
# Rule score_fluency scores each domain's documents once under the dense model; fluency and both reuse the scores.
# Not in `all`. A filter gets only its own settings as params, so changing one filter reruns only its outputs.


rule score_fluency:
    input:
        data="resources/data/pretrain/{domain}.jsonl",
        model=model_dir("dense"),
    output:
        "results/filters/fluency_scores/{domain}.csv",
    params:
        max_tokens=config["data"]["filters"]["fluency"]["max_tokens"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/filters/fluency_scores/{domain}.log",
    benchmark:
        "benchmarks/runs/filters/fluency_scores/{domain}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=int(config["device"] == "cuda"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/score_fluency.py"


rule filter_pretrain_data:
    input:
        unpack(fluency_scores_input),  # fluency / both: the domain's scores (rule score_fluency)
        data="resources/data/pretrain/{domain}.jsonl",
        model=model_dir("dense"),  # its tokenizer counts the report's tokens
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
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
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
