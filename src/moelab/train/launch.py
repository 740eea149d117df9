"""Run a training stage in this process or as several processes under ``torchrun`` / ``accelerate launch``.

The workflow's training rules call :func:`run_training` with a *spec* (everything the stage needs:
input/output paths, the config section, seed, device, dtype) and the config's ``launcher:`` section:

- ``kind: none`` (default): the stage runs in the calling process (the demo's single-process path).
- ``kind: torchrun``: ``python -m torch.distributed.run --standalone --nproc_per_node N -m moelab.train.cli
  SPEC`` (plain DDP; the CPU multi-process path, gloo).
- ``kind: accelerate``: ``python -m accelerate.commands.launch --config_file FILE --num_processes N -m
  moelab.train.cli SPEC`` (DDP or FSDP as the checked-in config file ``config/accelerate/*.yaml`` says).

The spec is written as JSON beside the checkpoints (``<ckpt_dir>/launch.json``), so the resolved settings
of a run are kept with it; the processes resume from the same checkpoints after a preemption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LAUNCHERS = ("none", "torchrun", "accelerate")


def launch_command(launcher: dict, spec_path: str | Path) -> list[str]:
    """The command line that runs ``moelab.train.cli SPEC`` as ``launcher.num_processes`` processes.

    Args:
        launcher: the config's ``launcher:`` section ``{kind, num_processes, accelerate_config,
            mixed_precision}``.
        spec_path: the JSON spec file.

    Raises:
        ValueError: unknown ``launcher.kind``, ``num_processes`` < 1, or ``kind: none`` with several
            processes, or ``kind: accelerate`` without ``accelerate_config`` (names the key).
    """
    kind = launcher.get("kind", "none")
    n = int(launcher.get("num_processes", 1))
    if kind not in LAUNCHERS:
        raise ValueError(f"launcher.kind={kind!r} is not one of {list(LAUNCHERS)}")
    if n < 1:
        raise ValueError(f"launcher.num_processes must be >= 1, got {n}")
    module = ["-m", "moelab.train.cli", str(spec_path)]
    if kind == "none":
        if n > 1:
            raise ValueError("launcher.num_processes > 1 needs launcher.kind torchrun or accelerate")
        return [sys.executable, *module]
    if kind == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            *module,
        ]
    config_file = launcher.get("accelerate_config")
    if not config_file:
        raise ValueError(
            "launcher.kind accelerate needs launcher.accelerate_config (config/accelerate/*.yaml)"
        )
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file)]
    cmd += [f"--num_processes={n}"]
    if launcher.get("mixed_precision"):
        cmd += [f"--mixed_precision={launcher['mixed_precision']}"]
    return [*cmd, *module]


def is_multiprocess(launcher: dict | None) -> bool:
    """Whether the launcher section asks for a launcher process (any kind other than ``none``)."""
    return bool(launcher) and launcher.get("kind", "none") != "none"


def run_training(spec: dict, launcher: dict | None, log_path: str | Path | None = None) -> dict:
    """Run one training stage as ``spec`` says; in this process or under the launcher. Returns its summary.

    Args:
        spec: see :func:`moelab.train.cli.run_spec` (keys ``stage, model, data, section, out_dir, log_csv,
            ckpt_dir, seed, device, dtype``).
        launcher: the config's ``launcher:`` section (None = in this process).
        log_path: file the launched processes' output is appended to (default: inherit stdout).

    Raises:
        RuntimeError: the launched processes failed (names the exit status and the log file).
    """
    from moelab.train.cli import run_spec

    if not is_multiprocess(launcher):
        return run_spec(spec)
    ckpt_dir = Path(spec["ckpt_dir"])
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    spec_path = ckpt_dir / "launch.json"
    summary_path = ckpt_dir / "summary.json"
    summary_path.unlink(missing_ok=True)
    spec_path.write_text(json.dumps({**spec, "summary": str(summary_path)}, indent=1, default=str))
    cmd = launch_command(launcher, spec_path)
    print("launching:", " ".join(cmd), flush=True)
    out = open(log_path, "a") if log_path else None  # noqa: SIM115 - closed below
    try:
        proc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT if out else None, env=dict(os.environ)
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
    return json.loads(summary_path.read_text())
