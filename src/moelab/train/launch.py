"""Run a training stage from its ``train_config.json``: in this process or relaunched under a launcher.

``python -m moelab.train CONFIG.json`` (``__main__.py``) and the workflow's training rules (scripts/train.py)
both call :func:`run_training`. The config's ``launcher`` (:class:`moelab.train.config.LauncherConfig`) says how:

- ``kind: none``: the stage runs in the calling process (the demo's single-process path).
- ``kind: torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node N -m moelab.train
  CONFIG`` (plain DDP; the CPU multi-process path, gloo).
- ``kind: accelerate``: ``python -m accelerate.commands.launch --config_file FILE --num_processes N -m
  moelab.train CONFIG`` (DDP or FSDP as the checked-in config file ``config/accelerate/*.yaml`` says).

Each launched process runs the same entry point on the same file; :data:`WORKER_ENV` tells it to train
instead of launching again. The main process writes the model, the logs and the summary (``summary`` of the
config); after a preemption the processes resume from the same checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from moelab.train.config import LauncherConfig, TrainRunConfig

WORKER_ENV = "MOELAB_TRAIN_WORKER"  # set in the launched processes: train here, do not launch again


def launch_command(launcher: LauncherConfig | dict, config_path: str | Path) -> list[str]:
    """The command line that runs ``python -m moelab.train CONFIG`` as ``launcher.num_processes`` processes.

    Args:
        launcher: the launcher (a :class:`LauncherConfig` or the config's ``launcher:`` section).
        config_path: the ``train_config.json`` file.

    Raises:
        ValueError: a launcher section :class:`LauncherConfig` rejects (names the key).
    """
    if not isinstance(launcher, LauncherConfig):
        launcher = LauncherConfig.from_section(launcher)
    n = launcher.num_processes
    module = ["-m", "moelab.train", str(config_path)]
    if launcher.kind == "none":
        return [sys.executable, *module]
    if launcher.kind == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            *module,
        ]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launcher.accelerate_config]
    cmd += [f"--num_processes={n}"]
    if launcher.mixed_precision:
        cmd += [f"--mixed_precision={launcher.mixed_precision}"]
    return [*cmd, *module]


def run_stage(cfg: TrainRunConfig) -> dict:
    """Train the stage ``cfg`` describes in this process (one of the launched ones, or the only one).

    Returns:
        the stage's summary (:func:`moelab.train.pretrain.run_pretrain` / :func:`moelab.train.sft.run_sft`).

    Raises:
        ValueError: ``device: cuda`` without a GPU; bf16 where the GPU lacks it.
    """
    from moelab.runtime import resolve_device, resolve_dtype
    from moelab.train.pretrain import run_pretrain
    from moelab.train.sft import run_sft

    resolve_dtype(resolve_device(cfg.device), cfg.dtype)
    return {"pretrain": run_pretrain, "sft": run_sft}[cfg.stage](cfg)


def run_training(config_path: str | Path, log_path: str | Path | None = None) -> dict:
    """Run the stage of a ``train_config.json`` as its launcher says; write and return its summary.

    In this process for ``launcher.kind: none`` (or inside a launched process); otherwise the launcher
    starts ``launcher.num_processes`` processes of ``python -m moelab.train CONFIG`` and the main one writes
    the summary, read back here. With ``discard_checkpoints`` the checkpoint folder is deleted afterwards.

    Args:
        config_path: the file :meth:`TrainRunConfig.write` wrote.
        log_path: file the launched processes' output is appended to (default: inherit stdout).

    Raises:
        ValueError: a bad config (names the key).
        RuntimeError: the launched processes failed (names the exit status and the log file) or wrote no
            summary.
    """
    from moelab.provenance import write_json

    cfg = TrainRunConfig.read(config_path)
    summary_path = Path(cfg.summary)
    if not cfg.launcher.multiprocess or os.environ.get(WORKER_ENV):
        summary = run_stage(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            write_json(summary_path, summary)
    else:
        summary_path.unlink(missing_ok=True)
        cmd = launch_command(cfg.launcher, config_path)
        print("launching:", " ".join(cmd), flush=True)
        out = open(log_path, "a") if log_path else None  # noqa: SIM115 - closed below
        try:
            proc = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                env={**os.environ, WORKER_ENV: "1"},
            )
        finally:
            if out:
                out.close()
        if proc.returncode != 0:
            raise RuntimeError(
                f"training launcher exited with status {proc.returncode}; see {log_path or 'stderr'}"
            )
        if not summary_path.is_file():
            raise RuntimeError(f"training launcher finished without writing {summary_path}")
        summary = json.loads(summary_path.read_text())
    if cfg.discard_checkpoints and not os.environ.get(WORKER_ENV):
        shutil.rmtree(cfg.ckpt_dir, ignore_errors=True)
    return summary
