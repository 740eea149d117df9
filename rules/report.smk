# Stage 7: every paper's tables and figures under results/papers/<paper>/, published numbers beside ours.
# Registry: moelab.report.papers (OUTPUTS, PENDING). One generated rule per table (<paper>_<table>), one rule per
# figure family, one index.md per paper, a target per paper and `papers` (all of them, without the construction
# ablation). Rebuild one file by naming it: snakemake --cores all results/papers/llama_moe/table_main.md
include: "report_common.smk"


for _spec in TABLES:

    rule:
        name:
            f"{_spec.paper}_{_spec.name}"
        input:
            unpack(table_inputs(_spec)),
        output:
            csv=f"{PAPERS_DIR}/{_spec.paper}/{_spec.name}.csv",
            md=report(
                f"{PAPERS_DIR}/{_spec.paper}/{_spec.name}.md",
                caption=f"../report/{_spec.paper}_{_spec.name}.rst",
                category=PAPER_LABELS[_spec.paper],
            ),
        params:
            paper=_spec.paper,
            table=_spec.name,
            sources=table_sources(_spec),
            config=PAPER_TABLE_CONFIG,
        log:
            f"logs/report/{_spec.paper}_{_spec.name}.log",
        benchmark:
            f"benchmarks/runs/report/{_spec.paper}_{_spec.name}.tsv"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        conda:
            "../envs/report.yaml"
        script:
            "../scripts/report_paper_table.py"


rule llama_moe_fig_pretrain_loss:
    input:
        logs=["results/pretrain/log.csv"],
    output:
        png=report(
            f"{LLAMA_MOE}/fig_pretrain_loss.png",
            caption="../report/llama_moe_fig_pretrain_loss.rst",
            category=PAPER_LABELS["llama_moe"],
        ),
        pdf=f"{LLAMA_MOE}/fig_pretrain_loss.pdf",
    params:
        labels=[f"{PAPER_LABELS['llama_moe']} (ours, demo scale)"],
        title=heading("llama_moe", "fig_pretrain_loss"),
        config=config["pretrain"],
    log:
        "logs/report/llama_moe_fig_pretrain_loss.log",
    benchmark:
        "benchmarks/runs/report/llama_moe_fig_pretrain_loss.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_loss_curve.py"


for (_paper, _fig), (_stage, _kind, _spec_panel) in EXPERT_LOAD.items():

    rule:
        name:
            f"{_paper}_{_fig}"
        input:
            **expert_load_inputs(_stage, _spec_panel),
        output:
            png=report(
                f"{PAPERS_DIR}/{_paper}/{_fig}.png",
                caption=f"../report/{_paper}_{_fig}.rst",
                category=PAPER_LABELS[_paper],
            ),
            pdf=f"{PAPERS_DIR}/{_paper}/{_fig}.pdf",
        params:
            kind=_kind,
            title=f"{PAPER_LABELS[_paper]}: expert load per {SOURCE_LABELS[_kind]} ({_stage} model)",
        log:
            f"logs/report/{_paper}_{_fig}.log",
        benchmark:
            f"benchmarks/runs/report/{_paper}_{_fig}.tsv"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        conda:
            "../envs/report.yaml"
        script:
            "../scripts/report_expert_load.py"


rule paper_index:
    output:
        f"{PAPERS_DIR}/{{paper}}/index.md",
    params:
        text=lambda wc: index_markdown(wc.paper),
    log:
        "logs/report/{paper}_index.log",
    benchmark:
        "benchmarks/runs/report/{paper}_index.tsv"
    wildcard_constraints:
        paper="|".join(PAPERS),
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_index.py"


for _paper in PAPERS:

    rule:
        name:
            _paper
        input:
            paper_targets(_paper, own=True),


rule papers:
    input:
        paper_targets(*PAPERS),
        "resources/manifest.json",
