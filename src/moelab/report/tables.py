"""Paper tables: published numbers (checked-in CSV with a source column) beside our measurements."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

# Column order of LLaMA-MoE's main table (official README) in our task names.
LLAMA_MOE_TASKS = (
    "sciq", "piqa", "winogrande", "arc_easy", "arc_challenge", "hellaswag",
    "logiqa", "boolq", "lambada", "nq_open", "mmlu",
)  # fmt: skip
# Accuracy of a random guess (%) per multiple-choice task, to say whether a score is above chance.
CHANCE = {
    "arc_easy": 25.0, "arc_challenge": 25.0, "piqa": 50.0, "sciq": 25.0, "boolq": 50.0,
    "hellaswag": 25.0, "winogrande": 50.0, "openbookqa": 25.0, "rte": 50.0, "logiqa": 25.0, "mmlu": 25.0,
}  # fmt: skip
NOT_YET = "not reproduced yet"
PAPER_CPT_TOKENS = 200e9  # LLaMA-MoE continual pre-training budget


def load_published(paper: str) -> pd.DataFrame:
    """Published numbers of ``paper`` from ``moelab/report/published/<paper>.csv``.

    Columns: paper, table, model, task, value (percent), shots, source, verified.

    Raises:
        FileNotFoundError: no published CSV for that paper.
    """
    path = resources.files("moelab.report") / "published" / f"{paper}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no published numbers for paper {paper!r} (expected {path})")
    with resources.as_file(path) as p:
        return pd.read_csv(p)


def main_table(published: pd.DataFrame, ours: dict[str, dict], tasks=LLAMA_MOE_TASKS) -> pd.DataFrame:
    """LLaMA-MoE main table: published rows, then one row per stage of our pipeline.

    Args:
        published: :func:`load_published` rows of table "main".
        ours: stage label -> evaluation result (``{"primary": {task: accuracy in [0, 1]}}``).
    Returns:
        DataFrame with columns model, source, <tasks...> (percent), average (paper's own, published rows),
        avg_common (mean over the tasks we evaluated, for every row). Cells we did not measure hold
        ``"not reproduced yet"``.
    """
    measured = sorted({t for res in ours.values() for t in res["primary"]}, key=list(tasks).index)
    rows = []
    for model, group in published[published["table"] == "main"].groupby("model", sort=False):
        vals = dict(zip(group["task"], group["value"], strict=True))
        row = {"model": model, "source": f"published ({group['source'].iloc[0]})"}
        row.update({t: vals.get(t) for t in tasks})
        row["average"] = vals.get("average")
        row["avg_common"] = round(sum(vals[t] for t in measured) / len(measured), 1) if measured else None
        rows.append(row)
    for label, res in ours.items():
        prim = {t: round(100 * v, 1) for t, v in res["primary"].items()}
        row = {"model": label, "source": "ours"}
        row.update({t: prim.get(t, NOT_YET) for t in tasks})
        row["average"] = NOT_YET
        row["avg_common"] = round(sum(prim[t] for t in measured) / len(measured), 1) if measured else None
        rows.append(row)
    return pd.DataFrame(rows)


def chance_average(tasks) -> float:
    """Mean chance accuracy (%) over ``tasks``."""
    return sum(CHANCE[t] for t in tasks) / len(tasks)


def write_table(df: pd.DataFrame, csv_path: Path, md_path: Path, title: str, notes: list[str]) -> None:
    """Write ``df`` as CSV and as Markdown (title, table, then the notes as paragraphs)."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(csv_path, index=False)
    body = df.fillna("").to_markdown(index=False)
    Path(md_path).write_text(f"# {title}\n\n{body}\n\n" + "\n\n".join(notes) + "\n")


def stage_labels(config: dict) -> dict[str, str]:
    """Row labels of our pipeline stages, e.g. ``"MoE 2/8 + CPT"``."""
    c = config["construct"]
    moe = f"MoE {c['top_k']}/{c['num_experts']} ({c['method']})"
    pre, sft = config["pretrain"], config["sft"]
    cpt_tokens = pre["steps"] * pre["batch_size"] * pre["seq_len"]
    return {
        "dense": "dense (start model)",
        "moe": f"{moe}, as constructed",
        "pretrain": f"{moe} + CPT ({cpt_tokens / 1e3:.0f}k tokens)",
        "sft": f"{moe} + CPT + SFT ({sft['steps']} steps)",
        "compress": f"{moe} + CPT + SFT + Block Drop ({config['compress']['n_drop']} blocks)",
    }


def llama_moe_main_notes(ours: dict[str, dict], config: dict, chance: float) -> list[str]:
    """Sentences under the main table: the paper's claim and whether it holds at our scale."""
    avg = {s: 100 * sum(r["primary"].values()) / len(r["primary"]) for s, r in ours.items()}
    lines = [
        "Paper claim (LLaMA-MoE, official README): after 200B tokens of continual pre-training, LLaMA-MoE-3.5B "
        "(2/8) reaches an average of 57.6 over 11 tasks, above the dense Sheared-LLaMA-2.7B (56.4) and "
        "Open-LLaMA-3B-v2 (55.6) of similar activated size.",
        f"Ours (demo scale; averages over the {len(next(iter(ours.values()))['primary'])} tasks we evaluate, "
        f"chance = {chance:.1f}): " + ", ".join(f"{s} {a:.1f}" for s, a in avg.items()) + ".",
    ]
    if {"dense", "moe", "pretrain"} <= avg.keys():
        tokens = (
            config["pretrain"]["steps"] * config["pretrain"]["batch_size"] * config["pretrain"]["seq_len"]
        )
        drop, rec = avg["dense"] - avg["moe"], avg["pretrain"] - avg["moe"]
        if avg["dense"] <= chance + 2.0:
            verdict = "cannot be judged here (the dense start model itself scores at chance)"
        elif avg["pretrain"] >= avg["dense"] - 1.0:
            verdict = "holds"
        else:
            verdict = "does not hold at this scale"
        lines.append(
            f"Construction costs {drop:.1f} points; continual pre-training recovers {rec:.1f} of them "
            f"({'above' if avg['pretrain'] > chance else 'not above'} chance after CPT). "
            f"The claim that the converted MoE matches its dense peer {verdict}: our CPT sees {tokens:,} tokens, "
            f"{tokens / PAPER_CPT_TOKENS:.1e} of the paper's 200B."
        )
    return lines
