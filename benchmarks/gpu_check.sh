#!/usr/bin/env bash
# The GPU checks of issue #6 in one run, on a machine with a CUDA GPU (from the repository root, after `make setup`):
#   bash benchmarks/gpu_check.sh [OUT_DIR]            (default results/gpu_check; ~30-60 min on one GPU)
# 1. benchmarks/moe_layer.py in bf16 on the GPU: our MoE layer vs HF's Mixtral block and the dense FFN (ratios)
# 2. the demo DAG with the one switch (config/gpu.yaml: device cuda, bf16) through profiles/local, in a fresh
#    results tree; wall time per rule from Snakemake's benchmark files
# Everything goes to OUT_DIR (summary.tsv = rule, wall seconds); paste the numbers into README "Measured".
set -euo pipefail
OUT=${1:-results/gpu_check}
BIN=.venv/bin
mkdir -p "$OUT"
$BIN/python - <<'PY' | tee "$OUT/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script measures the GPU path"
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.device_count(), "GPU(s)")
PY
$BIN/python benchmarks/moe_layer.py --device cuda --dtype bfloat16 --json "$OUT/moe_layer_bf16.json" \
    | tee "$OUT/moe_layer_bf16.txt"
rm -rf benchmarks/runs                                   # per-rule timings of this run only
start=$(date +%s)
$BIN/snakemake --profile profiles/local --configfile config/gpu.yaml --forceall > "$OUT/demo_dag.log" 2>&1
echo "demo DAG on cuda/bf16: $(( $(date +%s) - start )) s" | tee "$OUT/demo_wall.txt"
find benchmarks/runs -name '*.tsv' | sort | while read -r f; do
    printf '%s\t%s\n' "${f#benchmarks/runs/}" "$(awk 'NR == 2 {print $1}' "$f")"
done | tee "$OUT/summary.tsv"
