"""Paper tables: published numbers (checked-in CSV with source and verified columns) and our inputs.

The generic published-vs-ours builder is :mod:`moelab.report.paper_table`; the registry of every paper's
tables is :mod:`moelab.report.papers`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from moelab.report.paper_table import CHANCE, NOT_YET
from moelab.report.papers.llama_moe import LLAMA_MOE_TASKS

__all__ = [
    "CHANCE",
    "LLAMA_MOE_TASKS",
    "NOT_YET",
    "PAPER_CPT_TOKENS",
    "chance_average",
    "compression_extras",
    "load_published",
    "read_eval",
    "scale_note",
    "write_table",
]
PAPER_CPT_TOKENS = 200e9  # LLaMA-MoE continual pre-training budget
PUBLISHED_COLUMNS = ("paper", "table", "model", "task", "value", "shots", "source", "verified", "note")


def load_published(paper: str) -> pd.DataFrame:
    """Published numbers of ``paper`` from ``moelab/report/published/<paper>.csv``.

    Columns: paper, table, model, task, value (percent for accuracies; empty where the paper's numbers are
    not available here), shots, source (paper table / README), verified (bool), note.

    Raises:
        FileNotFoundError: no published CSV for that paper.
        ValueError: the CSV lacks one of the columns above (names it).
    """
    path = resources.files("moelab.report") / "published" / f"{paper}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no published numbers for paper {paper!r} (expected {path})")
    with resources.as_file(path) as p:
        df = pd.read_csv(p, keep_default_na=False, na_values=[""])
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"published/{paper}.csv lacks columns {missing}")
    df["verified"] = df["verified"].astype(str).str.lower().isin(["true", "yes", "1"])
    return df


def chance_average(tasks) -> float:
    """Mean chance accuracy (%) over ``tasks``."""
    return sum(CHANCE[t] for t in tasks) / len(tasks)


def write_table(df: pd.DataFrame, csv_path: Path, md_path: Path, title: str, notes: list[str]) -> None:
    """Write ``df`` as CSV and as Markdown (title, table, then the notes as paragraphs)."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv_path, index=False)
    body = df.astype(object).where(df.notna(), "").to_markdown(index=False)
    Path(md_path).write_text(f"# {title}\n\n{body}\n\n" + "\n\n".join(notes) + "\n")


def compression_extras(reports: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``extra`` cells of the compression tables from recipe reports (``results/compress/<recipe>/recipe.json``).

    Args:
        reports: source key of the compressed model's row (e.g. ``compress/moe_compression``, the headline, or
            ``compress/<recipe>/moe_compression``) -> its report (``params_before/after.total``: parameters).
    Returns:
        source -> {"params_m": total parameters in millions}; ``compress_base/moe_compression`` (the model before
        compression, the same for every recipe) gets ``params_before``.
    Raises:
        KeyError: naming the missing field.
    """
    out = {}
    for source, report in reports.items():
        for key, row in (("params_before", "compress_base/moe_compression"), ("params_after", source)):
            if key not in report or "total" not in report[key]:
                raise KeyError(f"recipe.json of {source} has no {key}.total")
            out[row] = {"params_m": round(report[key]["total"] / 1e6, 3)}
    return out


def scale_note(config: dict) -> str:
    """One sentence on the scale of our runs (model, CPT tokens vs the paper's 200B, SFT steps, eval limit)."""
    c, pre = config["construct"], config["pretrain"]
    tokens = pre["steps"] * pre["batch_size"] * pre["seq_len"]
    limit = config["evaluate"].get("limit")
    return (
        f"Our scale: start model from model.source={config['model']['source']}, MoE {c['top_k']}/{c['num_experts']} "
        f"({c['method']} split), CPT {tokens:,} tokens ({tokens / PAPER_CPT_TOKENS:.1e} of LLaMA-MoE's 200B), "
        f"SFT {config['sft']['steps']} steps, evaluation on "
        f"{'all' if limit is None else limit} examples per task, so differences of a few points are noise."
    )


def read_eval(path: str | Path) -> dict:
    """One evaluation result (``results/eval/{stage}/{paper}.json``), checked for the ``primary`` mapping.

    Raises:
        ValueError: naming the file when it is not JSON or has no ``primary`` {task: value in [0, 1]}.
    """
    import json

    try:
        res = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"evaluation result {path} is not valid JSON: {err}") from err
    prim = res.get("primary") if isinstance(res, dict) else None
    if not isinstance(prim, dict) or not all(isinstance(v, int | float) for v in prim.values()):
        raise ValueError(f"evaluation result {path} has no 'primary' mapping of task -> value in [0, 1]")
    return res
