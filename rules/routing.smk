# Routing analysis (LLaMA-MoE expert-load heatmaps, MoE-SFT gate loads): expert load per pretraining domain and SFT data set per
# MoE layer, expert co-selection, and a per-layer domain-specialisation score, for each MoE stage's model.

ROUTING_STAGES = config["routing"]["stages"]  # the schema fills the section's defaults
ROUTING_SETTINGS = {k: v for k, v in config["routing"].items() if k != "stages"}  # tokens, seq_len, batch_size


rule routing_analysis:
    input:
        model=lambda wc: model_dir(wc.stage),
        pretrain=pretrain_data(),
        sft=sft_data(),
    output:
        gate_load="results/routing/{stage}/gate_load.csv",
        coselection="results/routing/{stage}/coselection.csv",
        specialisation="results/routing/{stage}/specialisation.csv",
    params:
        routing=ROUTING_SETTINGS,
        pretrain_domains=config["data"]["pretrain_domains"],
        sft_domains=config["data"]["sft_domains"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    log:
        "logs/routing/{stage}.log",
    benchmark:
        "benchmarks/runs/routing/{stage}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("routing_analysis", "mem_mb"),
        runtime=sized("routing_analysis", "runtime"),
        disk_mb=sized("routing_analysis", "disk_mb"),
        gpu=sized("routing_analysis", "gpu"),
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/routing.py"


rule routing:
    input:
        expand(rules.routing_analysis.output, stage=ROUTING_STAGES),
