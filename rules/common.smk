# Shared helpers: config checks, paths of each stage's model, the envs used by the rules.
import os

from moelab.config import check_config

# Idle OpenMP threads sleep instead of spinning: the MoE layer's many mid-sized kernels otherwise stall
# whenever another process holds a core (measured 0.55x vs 1.76x dense tokens/s, benchmarks/README.md).
# Jobs inherit this; it must be set before torch is imported in the job.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

check_config(config)

STAGES = ["dense", "moe", "pretrain", "sft", "compress"]
DENSE = "resources/models/dense"
MAX_THREADS = 16  # Snakemake lowers it to --cores


wildcard_constraints:
    stage="|".join(STAGES),
    domain=r"[a-z]+",
    task=r"[a-z_]+",


def model_dir(stage):
    """Folder of the HF checkpoint a pipeline stage produces."""
    return DENSE if stage == "dense" else f"results/models/{stage}"


def eval_data(wildcards=None):
    return expand("resources/data/eval/{task}", task=config["evaluate"]["tasks"])
