"""``python -m moelab.train.cli SPEC.json``: one training stage, started by torchrun / accelerate launch.

Every process runs this; accelerate's ``Accelerator`` (in :func:`moelab.train.loop.train`) reads the
launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, FSDP settings) and builds the process group. The
main process writes the model, the logs and ``spec["summary"]``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STAGES = ("pretrain", "sft")


def run_spec(spec: dict) -> dict:
    """Run the stage a spec describes and return its summary.

    Args:
        spec: ``{"stage": "pretrain" | "sft", "model": dir, "data": {domain: jsonl}, "section": the config's
            ``pretrain:`` / ``sft:`` section, "out_dir", "log_csv", "ckpt_dir", "seed", "device", "dtype"}``.

    Raises:
        ValueError: unknown stage; ``device: cuda`` without a GPU; bf16 where the GPU lacks it.
    """
    from moelab.runtime import resolve_device, resolve_dtype
    from moelab.train.pretrain import run_pretrain
    from moelab.train.sft import run_sft

    if spec["stage"] not in STAGES:
        raise ValueError(f"training spec: stage {spec['stage']!r} is not one of {list(STAGES)}")
    device = resolve_device(spec["device"])
    dtype = resolve_dtype(device, spec["dtype"])
    run = {"pretrain": run_pretrain, "sft": run_sft}[spec["stage"]]
    return run(
        Path(spec["model"]),
        {d: Path(p) for d, p in spec["data"].items()},
        spec["section"],
        Path(spec["out_dir"]),
        Path(spec["log_csv"]),
        Path(spec["ckpt_dir"]),
        int(spec["seed"]),
        device,
        dtype,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of every launched process: read the spec, pin the local GPU, run, write the summary."""
    import torch

    from moelab.runtime import setup

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m moelab.train.cli SPEC.json")
    spec = json.loads(Path(args[0]).read_text())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    setup(None, max(1, int(spec.get("threads", 1)) // world), int(spec["seed"]))
    if spec["device"] == "cuda" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" = this process's GPU
    summary = run_spec(spec)
    if int(os.environ.get("RANK", "0")) == 0 and spec.get("summary"):
        Path(spec["summary"]).write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
