# SparseAdapter (arXiv 2210.04284; moelab.adapters): adapters on a frozen pretrained encoder, pruned once at
# initialisation, on offline text classification tasks. One job per run trains every task and every seed of
# sparse_adapter.seeds (one process: imports and encoder load once). table_glue is in `all` (target
# sparse_adapter); the sparsity sweep and Large-Sparse are in target sparse_adapter_sweeps (not in `all`).
# Config, run files and sa_runs(): rules/common.smk. Run names: moelab.adapters.options.variant_name (houlsby_snip40, full_ft, ...).
SA_PAPER = f"{PAPERS_DIR}/sparse_adapter"


wildcard_constraints:
    variant=r"[a-z0-9_]+",


rule sparse_adapter_encoder:
    output:
        directory("resources/models/sa_encoder"),
    params:
        encoder=SA["encoder"],
        seed=config["seed"],
    log:
        "logs/sparse_adapter/encoder.log",
    benchmark:
        "benchmarks/runs/sparse_adapter/encoder.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/sparse_adapter_encoder.py"


rule sparse_adapter_data:
    output:
        "resources/data/textcls/{task}.jsonl",
    params:
        sizes=SA["sizes"],
        seed=config["seed"],
    log:
        "logs/sparse_adapter/data_{task}.log",
    benchmark:
        "benchmarks/runs/sparse_adapter/data_{task}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/sparse_adapter_data.py"


rule sparse_adapter_run:
    input:
        encoder="resources/models/sa_encoder",
        data=expand("resources/data/textcls/{task}.jsonl", task=SA["tasks"]),
    output:
        f"{SA_DIR}/{{variant}}.json",
    params:
        train={k: SA[k] for k in SA_TRAIN_KEYS},
        seeds=SA["seeds"],
        tasks=SA["tasks"],
        device=config["device"],
    log:
        "logs/sparse_adapter/{variant}.log",
    benchmark:
        "benchmarks/runs/sparse_adapter/{variant}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../envs/training.yaml"
    script:
        "../scripts/sparse_adapter_run.py"


rule sparse_adapter_table_glue:
    input:
        sa_runs(table_variants(SA)),
    output:
        csv=f"{SA_PAPER}/table_glue.csv",
        md=report(f"{SA_PAPER}/table_glue.md", caption="../report/sparse_adapter_table_glue.rst", category=PAPER_LABELS["sparse_adapter"]),
    params:
        table="glue",
        variants=table_variants(SA),
        config=SA,
    log:
        "logs/report/sparse_adapter_table_glue.log",
    benchmark:
        "benchmarks/runs/report/sparse_adapter_table_glue.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sparse_adapter.py"


use rule sparse_adapter_table_glue as sparse_adapter_table_large_sparse with:
    input:
        sa_runs([*large_sparse_variants(SA).values(), "full_ft"]),
    output:
        csv=f"{SA_PAPER}/table_large_sparse.csv",
        md=report(f"{SA_PAPER}/table_large_sparse.md", caption="../report/sparse_adapter_table_large_sparse.rst", category=PAPER_LABELS["sparse_adapter"]),
    params:
        table="large_sparse",
        variants=large_sparse_variants(SA),
        config=SA,
    log:
        "logs/report/sparse_adapter_table_large_sparse.log",
    benchmark:
        "benchmarks/runs/report/sparse_adapter_table_large_sparse.tsv"


rule sparse_adapter_figures:
    input:
        sa_runs(sweep_runs(SA)),
    output:
        sparsity_png=report(f"{SA_PAPER}/fig_sparsity.png", caption="../report/sparse_adapter_fig_sparsity.rst", category=PAPER_LABELS["sparse_adapter"]),
        sparsity_pdf=f"{SA_PAPER}/fig_sparsity.pdf",
        large_png=report(f"{SA_PAPER}/fig_large_sparse.png", caption="../report/sparse_adapter_fig_large_sparse.rst", category=PAPER_LABELS["sparse_adapter"]),
        large_pdf=f"{SA_PAPER}/fig_large_sparse.pdf",
    params:
        sweep=sweep_variants(SA),
        large=large_sparse_variants(SA),
        config=SA,
    log:
        "logs/report/sparse_adapter_figures.log",
    benchmark:
        "benchmarks/runs/report/sparse_adapter_figures.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/report_sparse_adapter_figures.py"


rule sparse_adapter_sweeps:
    input:
        rules.sparse_adapter_table_large_sparse.output,
        rules.sparse_adapter_figures.output,
