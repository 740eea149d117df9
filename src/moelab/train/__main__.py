"""``python -m moelab.train CONFIG.json``: run one training stage from its resolved config.

The one entry point of training: every training rule (pretrain, sft, sft_stage1, the ablation's
construct_cpt) runs it on the ``train_config.json`` it wrote, and so does every process a launcher starts
(``moelab.train.launch``). In a launched process, accelerate's ``Accelerator`` (in
:func:`moelab.train.loop.train`) reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, FSDP
settings) and builds the process group.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> dict:
    """Read the config, set threads / seeds, pin this process's GPU, run (or launch) the stage.

    Returns:
        the stage's summary (also written to the config's ``summary`` file).
    """
    import torch

    from moelab.runtime import setup
    from moelab.train.config import TrainRunConfig
    from moelab.train.launch import run_training

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m moelab.train CONFIG.json")
    cfg = TrainRunConfig.read(args[0])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    setup(None, max(1, cfg.threads // world), cfg.seed)
    if cfg.device == "cuda" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" = this process's GPU
    return run_training(args[0])


if __name__ == "__main__":
    main()
