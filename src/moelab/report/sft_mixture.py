"""MoE-SFT data-mixture comparison (arXiv 2406.11256, Sec. 4): seed-merged results, final weights, figures.

Every strategy trains from the same model at the same budget (rules/sft_mixture.smk). A run trained with
several seeds is evaluated per seed and merged here into one evaluation result
(``results/eval/sft_<run>/moe_sft.json``), which the generic paper table reads like any stage's; its standard
errors carry the seed spread, so a verdict on it counts training noise as well as the evaluation sample's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from moelab.report.cpt_ablation import mean_sd
from moelab.report.noise import task_se


def merge_seeds(results: Sequence[Mapping], seeds: Sequence[int], peers: Sequence[Mapping] = ()) -> dict:
    """One evaluation result from the per-seed results of one run (same tasks, shots and examples).

    ``primary[t]`` = mean over seeds; its standard error (``tasks[t]["primary_stderr"]``) is
    sqrt(se_eval^2 + sd^2 / k): se_eval = the largest per-seed evaluation SE (every seed is scored on the same
    examples, so that sampling error does not average out), sd = the sample standard deviation over the k seeds.
    A single-seed run has no sd of its own: it borrows the largest ``seed_sd[t]`` of ``peers`` (merged runs of
    the same stage trained with several seeds: the recipe's run-to-run noise), kept in ``borrowed_seed_sd``;
    without peers its sd counts as 0. ``seed_sd[t]`` (own, None for one seed) and ``per_seed[seed][t]`` keep the
    spread; ``average`` is the mean of the seeds' averages.

    Args:
        results: ``results/.../<run>/seed<seed>/<paper>.json`` records (rule evaluate's format).
        seeds: the training seed of each record, same order.
        peers: merged results of multi-seed runs (this function's output) whose seed sd a one-seed run borrows.

    Raises:
        ValueError: no result, a seed count that differs from the results, or results over different tasks.
    """
    if not results or len(results) != len(seeds):
        raise ValueError(f"merge_seeds: {len(results)} results for seeds {list(seeds)}")
    tasks = list(results[0]["primary"])
    for seed, res in zip(seeds, results, strict=True):
        if list(res["primary"]) != tasks:
            raise ValueError(
                f"merge_seeds: seed {seed} scored tasks {list(res['primary'])}, seed {seeds[0]} {tasks}"
            )
    primary, seed_sd, borrowed, task_stats = {}, {}, {}, {}
    for t in tasks:
        mean, sd = mean_sd([r["primary"][t] for r in results])
        if sd is None:
            lent = [p["seed_sd"][t] for p in peers if (p.get("seed_sd") or {}).get(t) is not None]
            if lent:
                borrowed[t] = max(lent)
        spread = sd if sd is not None else borrowed.get(t)
        ses = [s for s in (task_se(r, t) for r in results) if s is not None]
        se = (
            math.sqrt(max(ses, default=0.0) ** 2 + (spread or 0.0) ** 2 / len(results))
            if ses or spread
            else None
        )
        first = (results[0].get("tasks") or {}).get(t) or {}
        primary[t], seed_sd[t] = mean, sd
        task_stats[t] = {"primary": mean, "primary_stderr": se, "n": first.get("n")}
        if "num_fewshot" in first:
            task_stats[t]["num_fewshot"] = first["num_fewshot"]
    averages = [r["average"] for r in results if isinstance(r.get("average"), int | float)]
    keep = {
        k: results[0][k]
        for k in ("stage", "paper", "suite", "max_fewshot", "paper_fewshot")
        if k in results[0]
    }
    return {
        **keep,
        "primary": primary,
        "average": sum(averages) / len(averages) if len(averages) == len(results) else None,
        "tasks": task_stats,
        "seeds": [int(s) for s in seeds],
        "seed_sd": seed_sd,
        **({"borrowed_seed_sd": borrowed} if borrowed else {}),
        "per_seed": {str(s): dict(r["primary"]) for s, r in zip(seeds, results, strict=True)},
    }


def seed_note(spec, ours: Mapping[str, Mapping | None]) -> str | None:
    """A sentence naming the rows of table ``spec`` merged over seeds and each seed's value of the table's
    average (the mean of its task columns, percent) with their sample sd; None when no row was merged."""
    parts = []
    for source, res in ours.items():
        if not res or len(res.get("seeds") or ()) < 2:
            continue
        per_seed = []
        for primary in res["per_seed"].values():
            groups = [[primary.get(t) for t in c.our_tasks()] for c in spec.task_columns]
            if not groups or any(v is None for g in groups for v in g):
                break
            per_seed.append(100 * sum(sum(g) / len(g) for g in groups) / len(groups))
        else:
            _, sd = mean_sd(per_seed)
            values = ", ".join(f"{v:.2f}" for v in per_seed)
            parts.append(
                f"{source.split('/')[0]}: {len(per_seed)} seeds, average per seed {values} (sd {sd:.2f})"
            )
    if not parts:
        return None
    return (
        "Seeds: rows trained with several seeds show the mean; their standard errors add the seed spread to the "
        "evaluation sample's (sqrt(se^2 + sd^2/k)); a row trained with one seed adds the largest seed sd of those "
        "rows (the same recipe's run-to-run noise). " + "; ".join(parts) + "."
    )


def read_sft_run(summary_path: str | Path) -> dict:
    """One trained seed of a mixture run, ``results/sft_mixture/<run>/seed<seed>/summary.json``.

    Returns:
        {"run", "seed", "final_weights": {data set: weight}, "rounds": DataFrame (step, domain, loss, weight),
        "gate_loads": {step: {data set: [num_experts] counts}} (rounds with routing only)}.

    Raises:
        ValueError: a path not shaped like that, or a summary without rounds / final weights (not a mixture
            run's).
    """
    path = Path(summary_path)
    if not path.parent.name.startswith("seed") or not path.parent.name[4:].isdigit():
        raise ValueError(f"{path}: expected .../<run>/seed<seed>/summary.json")
    summary = json.loads(path.read_text())
    for key in ("rounds", "final_weights"):
        if key not in summary:
            raise ValueError(
                f"{path}: no {key!r}; not the summary of an sft.mixture run (rule sft_mixture_train)"
            )
    rows = [
        {"step": r["step"], "domain": d, "loss": r["losses"][d], "weight": r["weights"][d]}
        for r in summary["rounds"]
        for d in sorted(r["losses"])
    ]
    loads = {r["step"]: r["gate_loads"] for r in summary["rounds"] if r.get("gate_loads")}
    return {
        "run": path.parent.parent.name,
        "seed": int(path.parent.name[4:]),
        "final_weights": summary["final_weights"],
        "rounds": pd.DataFrame(rows),
        "gate_loads": loads,
    }


def final_weight_extras(runs: Sequence[dict], roles: Mapping[str, str], source: str) -> dict[str, dict]:
    """``{source: {role: percent}}``: the mean final weight over seeds of the data set standing in for each of the
    paper's data sets (``roles``: paper's name -> ours), for the ``extra`` columns of table_final_weights.

    Raises:
        ValueError: no run given, or a role naming a data set the runs did not train on.
    """
    if not runs:
        raise ValueError("final_weight_extras: no dynamic run")
    out = {}
    for role, ours in roles.items():
        if ours not in runs[0]["final_weights"]:
            raise ValueError(
                f"sft_mixture.roles.{role}={ours!r} is not a data set of the run ({sorted(runs[0]['final_weights'])})"
            )
        out[role] = round(100 * mean_sd([r["final_weights"][ours] for r in runs])[0], 2)
    return {source: out}


def final_weight_note(runs: Sequence[dict]) -> str:
    """The per-seed final weights (percent), so the table shows the spread behind its mean."""
    parts = [
        f"seed {r['seed']}: " + ", ".join(f"{d} {100 * w:.1f}" for d, w in sorted(r["final_weights"].items()))
        for r in runs
    ]
    return (
        f"Ours: mean over {len(runs)} seed(s) of the dynamic run's final weights; per seed "
        + "; ".join(parts)
        + "."
    )


def round_gate_load(run: dict) -> pd.DataFrame:
    """The gate loads of a mixture run's first and last evaluation rounds in the routing CSV's long format
    (source, kind, layer, expert, tokens, fraction), with ``layer`` = the round's step, for
    :func:`moelab.report.figures.plot_expert_load` (MoE-SFT's expert load per data set, start vs end).

    ``fraction`` = a data set's count for the expert / its total count (the distribution l_i the redundancy is
    computed from; with ``sft_mixture`` ``layers: all`` the experts of every MoE layer are concatenated).

    Raises:
        ValueError: the run has no round with gate loads (a dense model, or a run without rounds).
    """
    steps = sorted(run["gate_loads"])
    if not steps:
        raise ValueError(f"mixture run {run['run']} seed {run['seed']} has no round with gate loads")
    rows = []
    for step in (steps[0], steps[-1]):
        for source, counts in sorted(run["gate_loads"][step].items()):
            total = sum(counts) or 1
            rows += [
                {
                    "source": source,
                    "kind": "sft_domain",
                    "layer": step,
                    "expert": e,
                    "tokens": c,
                    "fraction": c / total,
                }
                for e, c in enumerate(counts)
            ]
    return pd.DataFrame(rows)
