# Stage 6: lm-eval on each stage's model, once per paper whose task set the stage is scored on
# (config evaluate.stages); per-task results are cached by model checksum, shots, limit, suite, lm-eval version.
from moelab.evaluate.plan import evaluation_targets

EVAL = config["evaluate"]
EVAL_TARGETS = evaluation_targets(EVAL)
EVAL_SETTINGS = {k: EVAL.get(k) for k in ("suite", "code_sandbox", "batch_size", "max_fewshot", "cache")}


rule evaluate:
    input:
        model=lambda wc: model_dir(wc.stage),
        data=eval_data,
    output:
        "results/eval/{stage}/{paper}.json",
    params:
        stage=lambda wc: wc.stage,
        plan=lambda wc: paper_plan(EVAL, wc.paper),
        evaluate=EVAL_SETTINGS,
        eval_dir="resources/data/eval",
        cache_dir=EVAL["cache_dir"],
        seed=config["seed"],
        device=config["device"],
        dtype=config["dtype"],
    wildcard_constraints:
        paper="|".join(EVAL["papers"]) or "none",
    log:
        "logs/evaluate/{stage}/{paper}.log",
    benchmark:
        "benchmarks/runs/evaluate/{stage}/{paper}.tsv"
    threads: MAX_THREADS
    resources:
        mem_mb=sized("evaluate", "mem_mb"),
        runtime=sized("evaluate", "runtime"),
        disk_mb=sized("evaluate", "disk_mb"),
        gpu=sized("evaluate", "gpu"),
    conda:
        "../envs/evaluation.yaml"
    script:
        "../scripts/evaluate.py"


rule evaluations:
    input:
        [f"results/eval/{stage}/{paper}.json" for stage, paper in EVAL_TARGETS],
