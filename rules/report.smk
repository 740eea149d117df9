# Stage 7: paper tables and figures, published numbers beside ours.

LLAMA_MOE = "results/papers/llama_moe"


rule llama_moe_table_main:
    input:
        evals=expand("results/eval/{stage}.json", stage=STAGES),
    output:
        csv=f"{LLAMA_MOE}/table_main.csv",
        md=report(f"{LLAMA_MOE}/table_main.md", caption="../report/llama_moe_table_main.rst", category="LLaMA-MoE"),
    params:
        stages=STAGES,
        config=config,
    log:
        "logs/report/llama_moe_table_main.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_table_main.py"


rule llama_moe_fig_pretrain_loss:
    input:
        log_csv="results/pretrain/log.csv",
    output:
        png=report(
            f"{LLAMA_MOE}/fig_pretrain_loss.png",
            caption="../report/llama_moe_fig_pretrain_loss.rst",
            category="LLaMA-MoE",
        ),
        pdf=f"{LLAMA_MOE}/fig_pretrain_loss.pdf",
    params:
        config=config["pretrain"],
    log:
        "logs/report/llama_moe_fig_pretrain_loss.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_loss_curve.py"


rule llama_moe:
    input:
        rules.llama_moe_table_main.output,
        rules.llama_moe_fig_pretrain_loss.output,
        "resources/manifest.json",
