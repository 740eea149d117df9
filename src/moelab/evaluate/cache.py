"""Per-task evaluation cache: a task already scored on the same model with the same settings is not re-run.

One JSON file per key under the cache folder (config `evaluate.cache_dir`, default results/eval/cache):

    <cache_dir>/<task>/<sha256 of the key, 32 hex>.json = {"key": {...}, "metrics": {...}, "primary": v,
                                                           "sha256": checksum of the other three}

A damaged entry (unparseable, another key, a checksum that does not match its content, or no checksum: written
before entries had one) is a miss with a warning naming the file: the task is rescored and the entry rewritten.

The key holds everything that changes a score: the model checksum (`model_sha256`: weights, config and tokenizer
files, not the provenance sidecar), task, shots used, example limit, suite, lm-eval version, seed (few-shot
sampling), dtype, and for the local suite a checksum of the task definition (its YAML templates, the task
package's Python helpers and the task's data folder). Not in the key: batch size and device, which change
scores only by float rounding. A change to moelab's harness code itself is not detected: delete the cache
folder after editing `moelab.evaluate.harness`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path

from moelab.provenance import fingerprint, sha256_path

log = logging.getLogger(__name__)

# Files of a checkpoint folder that determine its outputs (weights, configs, tokenizer, chat template).
MODEL_SUFFIXES = (".safetensors", ".json", ".jinja", ".model", ".txt")
MODEL_EXCLUDE = ("meta.json",)  # provenance sidecar: wall time and commit change on every rebuild


def model_sha256(model_dir: str | Path) -> str:
    """sha256 of a checkpoint folder's weights, config and tokenizer files (sidecars and hidden files excluded).

    Two folders with byte-identical weights and configs get the same checksum wherever they live.
    Raises:
        FileNotFoundError: the folder does not exist or holds no file with a weight/config suffix.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder {model_dir} does not exist")
    files = sorted(
        p
        for p in model_dir.rglob("*")
        if p.is_file()
        and p.suffix in MODEL_SUFFIXES
        and p.name not in MODEL_EXCLUDE
        and not any(part.startswith(".") for part in p.relative_to(model_dir).parts)
    )
    if not files:
        raise FileNotFoundError(f"model folder {model_dir} has no weight/config files to checksum")
    return fingerprint([(str(p.relative_to(model_dir)), sha256_path(p)) for p in files])


def lm_eval_version() -> str:
    """Installed lm-eval version (without importing it), "absent" if not installed."""
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return "absent"


def local_task_sha256(task: str, eval_dir: str | Path | None) -> str:
    """Checksum of a local task's definition: its YAML templates, the task package's .py files, its data folder.

    Templates are `moelab_<task>.yaml` and `moelab_<task>_*.yaml` (e.g. per-subject files) in
    `moelab.evaluate.tasks.TEMPLATE_DIR`; the data folder `<eval_dir>/<task>` is included when it exists.
    """
    from moelab.evaluate.tasks import TASK_PREFIX, TEMPLATE_DIR

    files = sorted(
        {
            *TEMPLATE_DIR.glob(f"{TASK_PREFIX}{task}.yaml"),
            *TEMPLATE_DIR.glob(f"{TASK_PREFIX}{task}_*.yaml"),
            *TEMPLATE_DIR.glob("*.py"),
        }
    )
    parts = [(p.name, sha256_path(p)) for p in files]
    if eval_dir is not None and (Path(eval_dir) / task).exists():
        parts.append(("data", sha256_path(Path(eval_dir) / task)))
    return fingerprint(parts)


class EvalCache:
    """Folder of per-task results keyed by `key(...)`; `get` returns None for a miss, `put` stores atomically.

    Usage::

        cache = EvalCache("results/eval/cache")
        key = cache.key(model_sha256(model_dir), "arc_easy", 0, 50, "local", seed=1227, dtype="float32",
                        eval_dir=Path("resources/data/eval"))
        entry = cache.get(key) or cache.put(key, metrics, primary)
    """

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root)
        self.enabled = enabled

    @staticmethod
    def key(
        model_sha: str,
        task: str,
        num_fewshot: int,
        limit: int | None,
        suite: str,
        *,
        seed: int,
        dtype: str,
        eval_dir: str | Path | None = None,
    ) -> dict:
        """The cache key of one task evaluation (a JSON-serialisable dict; see the module docstring)."""
        return {
            "model_sha256": model_sha,
            "task": task,
            "num_fewshot": int(num_fewshot),
            "limit": limit,
            "suite": suite,
            "lm_eval_version": lm_eval_version(),
            "seed": int(seed),
            "dtype": dtype,
            "task_sha256": local_task_sha256(task, eval_dir) if suite == "local" else None,
        }

    def path(self, key: dict) -> Path:
        """File of a key: `<root>/<task>/<first 32 hex of sha256(key)>.json`."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / key["task"] / f"{digest}.json"

    def get(self, key: dict) -> dict | None:
        """The stored entry {"key", "metrics", "primary", "sha256"} or None: a miss, the cache disabled, or a
        damaged file (logged as a warning naming it; the caller rescores and `put` rewrites it)."""
        if not self.enabled:
            return None
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            return self._damaged(path, f"unreadable ({err})")
        if not isinstance(entry, dict) or entry.get("key") != key:
            return self._damaged(path, "it holds another key's result")
        if "sha256" not in entry:
            return self._damaged(path, "it has no checksum (written by an older moelab)")
        if entry["sha256"] != _checksum(entry):
            return self._damaged(path, "its content does not match its checksum")
        return entry

    @staticmethod
    def _damaged(path: Path, problem: str) -> None:
        log.warning(
            "damaged evaluation cache entry %s: %s; rescoring that task and rewriting it", path, problem
        )
        return None

    def put(self, key: dict, metrics: dict, primary: float | None) -> dict:
        """Store one task's metrics (the `summarise` per-task dict) and primary value; returns the entry."""
        entry = json.loads(json.dumps({"key": key, "metrics": metrics, "primary": primary}, default=str))
        entry["sha256"] = _checksum(entry)
        if self.enabled:  # unique temp file + rename: parallel jobs writing the same key never mix bytes
            path = self.path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as fh:
                json.dump(entry, fh, indent=2)
            os.replace(fh.name, path)
        return entry


def _checksum(entry: dict) -> str:
    """sha256 of an entry's key, metrics and primary value (as stored in JSON)."""
    return fingerprint({k: entry.get(k) for k in ("key", "metrics", "primary")})
