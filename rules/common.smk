# Shared helpers: config checks, paths of each stage's model, the envs used by the rules.
from moelab.config import check_config

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
