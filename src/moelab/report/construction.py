"""Construction ablation tables: LLaMA-MoE (arXiv 2406.16554) sec. 3.1 methods and configurations, LLaMA-MoE v2
(arXiv 2411.15708) granularity and MLP-vs-attention MoE.

One row per construction run: validation loss and downstream average right after construction and after the
same short continual pre-training (CPT); the paper's finding is stated next to whether it holds for our run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from moelab.report.tables import load_published

PAPER_FINDING = (
    "Paper's finding (LLaMA-MoE sec. 3.1, construction ablation): after continual pre-training, "
    "Independent-Random is at least as good as every other construction (it was used for the released models)."
)
METHOD_LABELS = {
    "random": "Independent-Random",
    "sequential": "Sequential (v2 vanilla)",
    "clustering": "Independent-Clustering",
    "coactivation": "Co-activation graph (MoEfication)",
    "sharing_inner": "Sharing-Inner",
    "sharing_inter": "Sharing-Inter (residual)",
}


RUN_RECORDS = ("stats", "cpt", "eval_construct", "eval_cpt")


def read_run_records(runs: Sequence[str], files: Mapping[str, Sequence[str | Path]]) -> dict[str, dict]:
    """The records of each construction run, as `construction_table` and `variant_table` take them.

    Args:
        runs: run names, in table order.
        files: for each of RUN_RECORDS (stats.json, cpt_summary.json, eval_construct.json, eval_cpt.json of
            results/construct/<run>/), one JSON file per run in `runs` order (a rule's named inputs).
    Returns: run -> {record: parsed JSON}.
    Raises: KeyError naming a missing record kind; ValueError when a kind has not one file per run.
    """
    out: dict[str, dict] = {run: {} for run in runs}
    for key in RUN_RECORDS:
        paths = list(files[key])
        if len(paths) != len(runs):
            raise ValueError(f"{len(paths)} {key} files for {len(runs)} construction runs")
        for run, path in zip(runs, paths, strict=True):
            out[run][key] = json.loads(Path(path).read_text())
    return out


def ablation_scale(cfg: Mapping) -> dict:
    """The scale of the ablation runs, as the notes functions take it.

    Args:
        cfg: config with the ``construct_ablation`` and ``pretrain`` sections.
    Returns: {"steps": CPT steps per run, "tokens_per_step": pretrain batch_size x seq_len, "eval_limit":
        examples per task (None = all)}.
    """
    a, pre = cfg["construct_ablation"], cfg["pretrain"]
    return {
        "steps": a["steps"],
        "tokens_per_step": pre["batch_size"] * pre["seq_len"],
        "eval_limit": a.get("eval_limit"),
    }


def mean_domain_loss(losses: dict[str, float]) -> float:
    """Unweighted mean over domains of per-domain validation losses (nats/token).

    Raises: ValueError for an empty mapping.
    """
    if not losses:
        raise ValueError("no per-domain validation losses to average")
    return sum(losses.values()) / len(losses)


def construction_table(runs: dict[str, dict]) -> pd.DataFrame:
    """The construction ablation table.

    Args:
        runs: method -> {"stats": construction stats (see `moelab.construct.construct_moe`),
            "cpt": run_pretrain summary (val_loss_before / val_loss_after per domain),
            "eval_construct", "eval_cpt": run_lm_eval summaries ("average" in [0, 1]) right after construction
            and after CPT}.
    Returns: DataFrame with columns method, label, experts (shared + routed), top_k, overlap (neurons, summed
        over layers), construct_s, loss_construct, loss_cpt (mean per-domain validation loss, nats/token),
        downstream_construct, downstream_avg (percent, after construction / after CPT), rank_cpt (1 = lowest
        loss after CPT).
    Raises: KeyError naming the method whose record lacks a field.
    """
    rows = []
    for method, run in runs.items():
        for key in ("stats", "cpt", "eval_construct", "eval_cpt"):
            if key not in run:
                raise KeyError(f"construction run {method!r} has no {key!r} record")
        s, cpt = run["stats"], run["cpt"]
        shared = s["num_shared_experts"]
        rows.append(
            {
                "method": method,
                "label": METHOD_LABELS.get(method, method),
                "experts": f"{shared}+{s['routed_experts']}" if shared else str(s["routed_experts"]),
                "top_k": s["top_k"],
                "overlap": sum(s["overlap"]),
                "construct_s": round(s["timing_s"]["total"], 1),
                "loss_construct": round(mean_domain_loss(cpt["val_loss_before"]), 4),
                "loss_cpt": round(mean_domain_loss(cpt["val_loss_after"]), 4),
                "downstream_construct": round(100 * run["eval_construct"]["average"], 1),
                "downstream_avg": round(100 * run["eval_cpt"]["average"], 1),
            }
        )
    df = pd.DataFrame(rows)
    df["rank_cpt"] = df["loss_cpt"].rank(method="min").astype(int)
    return df


def construction_notes(
    df: pd.DataFrame, steps: int, tokens_per_step: int, eval_limit: int | None
) -> list[str]:
    """Notes under the table: the paper's finding, whether it holds here, and the scale of our run."""
    notes = [PAPER_FINDING]
    if "random" not in set(df["method"]):
        notes.append("Our outcome: Independent-Random was not in construction_ablation.methods; not checked.")
    else:
        best_loss = ", ".join(df.loc[df["loss_cpt"] == df["loss_cpt"].min(), "method"])
        best_down = ", ".join(df.loc[df["downstream_avg"] == df["downstream_avg"].max(), "method"])
        rnd = df[df["method"] == "random"].iloc[0]
        holds = rnd["loss_cpt"] <= df["loss_cpt"].min()
        notes.append(
            f"Our outcome: the finding {'holds' if holds else 'does not hold'} on loss after CPT "
            f"(lowest: {best_loss}, {df['loss_cpt'].min():.4f}; random: {rnd['loss_cpt']:.4f}, rank "
            f"{int(rnd['rank_cpt'])} of {len(df)}); best downstream average (ties listed): {best_down} "
            f"({df['downstream_avg'].max():.1f}%; random {rnd['downstream_avg']:.1f}%)."
        )
    limit = "all" if eval_limit is None else eval_limit
    notes.append(
        f"Scale: {steps} CPT steps of {tokens_per_step} tokens (paper: 200B tokens), the main run's pretrain "
        f"settings otherwise; downstream average over the local tasks with {limit} examples per task, so "
        "differences of a few points are within noise. Losses are mean per-domain validation LM losses "
        "(nats/token) on held-out blocks; overlap counts neurons owned by more than one expert (Sharing-Inner)."
    )
    return notes


VARIANT_FINDINGS = {
    "configurations": (
        "Paper's finding (LLaMA-MoE Table 2, 200B tokens): 4/16 (3.5B activated, avg 57.7) ~ 2/8 (3.5B, 57.6) > "
        "2/16 (3.0B, 55.5): at equal activated parameters the granularity matters little, fewer activated "
        "parameters cost about two points."
    ),
    "granularity": (
        "LLaMA-MoE v2 compares granularities (8e top-2, 16e top-4, 64e top-8) and 1+7top1 built from "
        "Llama-3-8B-Instruct; its ablation numbers are not verified here (layout only). Published main-table "
        "rows: 8top2 and 1+7top1 are within about one point on average after post-training."
    ),
    "mlp_vs_attention": (
        "LLaMA-MoE v2 builds attention MoE (experts = GQA groups) and MLP MoE; its ablation numbers are not "
        "verified here (layout only)."
    ),
}


def _config_key(label: str) -> tuple[int, int] | None:
    """(num_experts, top_k) from a published model name like "LLaMA-MoE-3.5B (4/16)"; None if absent."""
    m = re.search(r"\((\d+)/(\d+)\)", label)
    return (int(m.group(2)), int(m.group(1))) if m else None


def published_configuration_averages(published: pd.DataFrame) -> dict[tuple[int, int], float]:
    """{(num_experts, top_k): published average (percent)} of the LLaMA-MoE rows of table "main".

    Args: published: `moelab.report.load_published("llama_moe")`.
    """
    rows = published[(published["table"] == "main") & (published["task"] == "average")]
    out = {}
    for model, value in zip(rows["model"], rows["value"], strict=True):
        key = _config_key(model)
        if key is not None and model.startswith("LLaMA-MoE") and pd.notna(value):
            out[key] = float(value)
    return out


def variant_published(table: str) -> dict[tuple[int, int], float] | None:
    """Published averages a variant table puts beside ours: LLaMA-MoE's main-table configurations for
    ``configurations``; None for the LLaMA-MoE v2 tables (their ablation numbers are not verified here).

    Args: table: a key of VARIANT_FINDINGS.
    """
    if table != "configurations":
        return None
    return published_configuration_averages(load_published("llama_moe"))


def describe_mlp(stats: dict) -> str:
    """ "8e top-2", "1+7e top-1" or "dense" from construction stats."""
    if not stats.get("mlp_moe", True) or not stats.get("routed_experts"):
        return "dense"
    shared = stats.get("num_shared_experts", 0)
    experts = f"{shared}+{stats['routed_experts']}e" if shared else f"{stats['routed_experts']}e"
    return f"{experts} top-{stats['top_k']}"


def describe_attention(stats: dict) -> str:
    """ "3e top-2" (attention experts) or "dense"."""
    a = stats.get("attention")
    return f"{a['num_experts']}e top-{a['top_k']}" if a else "dense"


def variant_table(
    runs: dict[str, dict], published: dict[tuple[int, int], float] | None = None
) -> pd.DataFrame:
    """One row per construction run of a LLaMA-MoE / v2 ablation.

    Args:
        runs: run name -> {"stats" (moelab.construct.construct_variant stats + "parameters"), "cpt",
            "eval_construct", "eval_cpt"} as in `construction_table`.
        published: optional {(num_experts incl. shared, top_k incl. shared): published average (percent)}; adds
            the columns published, ours (= downstream_avg) and delta (ours - published, points).
    Returns: DataFrame with columns run, method, mlp, attention, params_m, active_m (millions), loss_construct,
        loss_cpt (nats/token), downstream_construct, downstream_avg (percent), rank_cpt [, published, ours, delta].
    Raises: KeyError naming a run whose record lacks a field.
    """
    base = construction_table(runs)
    rows = []
    for run, rec in runs.items():
        s = rec["stats"]
        moe = s["parameters"]["moe"]
        rows.append(
            {
                "run": run,
                "method": s.get("method") or "-",
                "mlp": describe_mlp(s),
                "attention": describe_attention(s),
                "params_m": round(moe["total"] / 1e6, 1),
                "active_m": round(moe["active"] / 1e6, 1),
            }
        )
    df = pd.DataFrame(rows)
    cols = ["loss_construct", "loss_cpt", "downstream_construct", "downstream_avg", "rank_cpt"]
    df[cols] = base[cols].to_numpy()
    df["rank_cpt"] = df["rank_cpt"].astype(int)
    if published is not None:
        keys = [
            (s["num_experts"], s["top_k"] + s.get("num_shared_experts", 0))
            if s.get("attention") is None
            else None
            for s in (rec["stats"] for rec in runs.values())
        ]
        df["published"] = [published.get(k, "not published") if k else "not published" for k in keys]
        df["ours"] = df["downstream_avg"]
        df["delta"] = [
            round(o - p, 1) if isinstance(p, float) else ""
            for o, p in zip(df["ours"], df["published"], strict=True)
        ]
    return df


def variant_notes(
    table: str, df: pd.DataFrame, steps: int, tokens_per_step: int, eval_limit: int | None
) -> list[str]:
    """Notes under a variant table: the paper's finding, our outcome (lowest loss after CPT), the scale."""
    best = df.loc[df["loss_cpt"] == df["loss_cpt"].min()]
    order = " < ".join(f"{r.run} ({r.loss_cpt:.4f})" for r in df.sort_values("loss_cpt").itertuples())
    notes = [
        VARIANT_FINDINGS[table],
        f"Our outcome: lowest loss after CPT: {', '.join(best['run'])}; order by loss after CPT: {order}.",
    ]
    limit = "all" if eval_limit is None else eval_limit
    notes.append(
        f"Scale: {steps} CPT steps of {tokens_per_step} tokens per run (paper: billions of tokens); downstream "
        f"averages over the local 0-shot tasks with {limit} examples per task (differences of a few points are "
        "noise); active_m counts routed experts at top_k/N and attention experts at top_k/E (moelab.io)."
    )
    return notes
