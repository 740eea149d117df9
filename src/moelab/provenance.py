"""Provenance sidecars: every result file gets ``<file>.meta.json`` (ARCHITECTURE.md, Conventions).

The sidecar records what produced the result: the config slice the step used, the git commit, package
versions, sha256 of every input file, the seed and the wall time in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from moelab.files import CHECKSUMS, output_checksums, sha256_path, sidecar_path, verify_inputs

TRACKED_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "lm_eval", "snakemake", "moelab")


def git_commit(cwd: str | Path | None = None) -> str:
    """The current git commit (with ``-dirty`` if the tree has changes), or ``"unknown"`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for a missing package) plus the Python version."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def fingerprint(*parts) -> str:
    """sha256 of JSON-serialisable ``parts`` (paths are hashed by content), e.g. to name a training run."""
    resolved = [sha256_path(p) if isinstance(p, Path) else p for p in parts]
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


class Provenance:
    """Collects provenance for one step and writes the sidecars of its outputs.

    Usage::

        prov = Provenance(config=cfg_slice, inputs=[...], seed=1227)
        ...  # do the work
        prov.write(output_path, extra={"steps": 40})
    """

    def __init__(self, config: dict, inputs: Iterable[str | Path] = (), seed: int | None = None):
        """Start timing the step. Downloaded inputs are re-verified here, before the step uses them
        (`moelab.files.verify_inputs`: sizes and sha256 against those their download recorded).

        Raises:
            DamagedFileError: a downloaded input changed since the manifest was written (the file is named).
        """
        self.config = config
        self.inputs = [Path(p) for p in inputs]
        verify_inputs(self.inputs)
        self.seed = seed
        self.start = time.time()

    def record(self, extra: dict | None = None) -> dict:
        """The sidecar content as a dict (input hashes computed now)."""
        return {
            "config": self.config,
            "git_commit": git_commit(),
            "versions": package_versions(),
            "inputs": {str(p): sha256_path(p) for p in self.inputs},
            "seed": self.seed,
            "wall_time_s": round(time.time() - self.start, 3),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            **({"extra": extra} if extra else {}),
        }

    def write(self, output: str | Path, extra: dict | None = None, checksums: bool = False) -> Path:
        """Write ``<output>.meta.json`` (or ``<folder>/meta.json`` for a folder output); returns its path.

        checksums: also record the sha256 and size of the output's files (``extra["checksums"]``,
            `moelab.files.output_checksums`): the download rules do, and every later step re-verifies them.
        """
        target = sidecar_path(output)
        if checksums:
            extra = {**(extra or {}), CHECKSUMS: output_checksums(output)}
        write_json(target, self.record(extra))
        return target


def write_json(path: str | Path, obj) -> None:
    """Write JSON atomically (temp file + rename), so an interrupted write never looks complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
