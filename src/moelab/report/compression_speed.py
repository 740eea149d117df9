"""MoE compression speed table and trade-off figure (arXiv 2406.02500, "Measurement"; rules/compress_speed.smk).

Inputs: one speed record per recipe (``results/compress/speed/<recipe>.json``, written by
:func:`moelab.evaluate.compress_speed.measure_recipe`): the recipe's model and its parent, measured in one job.

``table_speed`` mirrors the paper's speed table (columns batch, prefill length, decode length, prefill tokens/s,
decode tokens/s, memory GB and %): one row per prompt length for the model before compression, then for every
recipe, plus our speed-ups, the weights at their storage width and FLOPs per token. The paper's per-length tokens/s
were not retrieved, so its only speed numbers beside ours are Table 3's speed-up (one 2048-token forward pass vs
bf16) and memory per method, given on the row whose prefill length is nearest 2048.

Units: tokens/s; speed-ups x (the compressed model's rate / the parent's, same job); GB = 2**30 bytes; GFLOPs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from moelab.compress.recipe import PRUNING, QUANTISATION, TRIMMING  # noqa: E402
from moelab.report.paper_table import _num  # noqa: E402
from moelab.report.papers.moe_compression import ORIGINAL, recipe_labels, recipe_source  # noqa: E402

PARENT_LABEL = "before compression (parent)"
PAPER_SPEED_LEN = 2048  # Table 3's speed-ups: one forward pass on 2048 tokens
SPEED_FIELDS = ("recipe", "steps", "rows", "summary", "models", "kernels", "fake_quantised", "prompt_lens")
TABLE_COLUMNS = (
    "model", "recipe", "kernels", "batch", "prefill_len", "decode_len", "prefill_tokens_per_s",
    "decode_tokens_per_s", "prefill_speedup", "decode_speedup", "memory_gb", "memory_pct", "storage_gb",
    "gflops_per_token", "flops_speedup", "published_speedup", "published_memory_gb", "published_from",
)  # fmt: skip


def read_speed(path: str | Path) -> dict:
    """One speed record (``results/compress/speed/<recipe>.json``), checked.

    Raises: ValueError naming the file: not JSON, a missing field of :data:`SPEED_FIELDS`, or rows without both
        the parent and the compressed model at every prompt length.
    """
    try:
        rec = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"speed record {path} is not valid JSON: {err}") from err
    missing = [k for k in SPEED_FIELDS if k not in rec]
    if missing:
        raise ValueError(f"speed record {path} lacks {missing} (written by rule compress_speed)")
    have = {(r["model"], r["prompt_len"]) for r in rec["rows"]}
    want = {(m, n) for m in ("parent", "compressed") for n in rec["prompt_lens"]}
    if have != want:
        raise ValueError(
            f"speed record {path}: rows {sorted(have)} are not parent + compressed at {rec['prompt_lens']}"
        )
    return rec


def kernels_tag(record: dict) -> str:
    """Short kernels cell: the dtype, and ``fake <b>-bit`` for quantise-dequantise recipes."""
    dtype = record.get("dtype", "float32")
    if not record["fake_quantised"]:
        return dtype
    bits = record["models"]["compressed"].get("storage_bits")
    return f"{dtype} (fake {bits}-bit: quantise-dequantise)"


def _published(published: pd.DataFrame | None, model: str | None) -> dict:
    """Table 3's speedup and memory_gb of a published model name (None where the CSV gives no number)."""
    if published is None or model is None:
        return {}
    pub = published[(published.table == "main") & (published.model == model)].set_index("task")
    out = {}
    for col in ("speedup", "memory_gb"):
        if col in pub.index and _num(pub.loc[col, "value"]):
            out[col] = float(pub.loc[col, "value"])
            out["source"] = pub.loc[col, "source"]
    return out


def _parent_rows(records: list[dict]) -> dict[int, dict]:
    """Per prompt length: the parent's median prefill / decode tokens/s over the records (one per job), its
    memory (median), and the decode range (min, max) across jobs."""
    by_len: dict[int, list[dict]] = {}
    for rec in records:
        for r in rec["rows"]:
            if r["model"] == "parent":
                by_len.setdefault(r["prompt_len"], []).append(r)
    out = {}
    for n, rows in sorted(by_len.items()):
        out[n] = {
            "prefill_tokens_per_s": statistics.median(r["prefill_tokens_per_s"] for r in rows),
            "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in rows),
            "memory_gb": statistics.median(r["memory_gb"] for r in rows),
            "decode_range": (
                min(r["decode_tokens_per_s"] for r in rows),
                max(r["decode_tokens_per_s"] for r in rows),
            ),
            "new_tokens": rows[0]["new_tokens"],
            "runs": len(rows),
        }
    return out


def speed_table(records: list[dict], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """The speed table: the parent's rows (medians over the jobs), then every recipe's rows, each by prompt length.

    Args:
        records: :func:`read_speed` records, in the order of the rows (compress.methods); all of one parent.
        published: :func:`moelab.report.tables.load_published` of ``moe_compression`` (None: no published cells).
    Returns: a DataFrame with :data:`TABLE_COLUMNS`; model = the table_methods / table_recipe row label of the
        recipe (its name when those tables lack it); published_speedup / published_memory_gb (Table 3) only on
        the row whose prefill length is nearest 2048, empty where no source gives them.
    Raises: ValueError: no records, or records of different prompt lengths or parents.
    """
    if not records:
        raise ValueError("no speed records (compress.methods is empty?)")
    lens = records[0]["prompt_lens"]
    parents = {rec["models"]["parent"]["path"] for rec in records}
    for rec in records:
        if rec["prompt_lens"] != lens:
            raise ValueError(
                f"speed records of different prompt lengths: {lens} vs {rec['prompt_lens']} ({rec['recipe']})"
            )
    if len(parents) != 1:
        raise ValueError(f"speed records of different parents: {sorted(parents)}")
    nearest = min(lens, key=lambda n: (abs(n - PAPER_SPEED_LEN), -n))
    labels = recipe_labels()
    base = records[0]["models"]["parent"]
    rows = []

    def add(model, recipe, kernels, n, new, r, size, pub):
        rows.append(
            {
                "model": model, "recipe": recipe, "kernels": kernels, "batch": 1, "prefill_len": n,
                "decode_len": new, "prefill_tokens_per_s": round(r["prefill_tokens_per_s"], 1),
                "decode_tokens_per_s": round(r["decode_tokens_per_s"], 2),
                "prefill_speedup": round(r["prefill_speedup"], 3), "decode_speedup": round(r["decode_speedup"], 3),
                "memory_gb": round(r["memory_gb"], 4), "memory_pct": round(r["memory_pct"], 1),
                "storage_gb": round(size["storage_bytes"] / 2**30, 4),
                "gflops_per_token": round(size["flops_per_token"] / 1e9, 4),
                "flops_speedup": round(base["flops_per_token"] / size["flops_per_token"], 3),
                "published_speedup": pub.get("speedup") if n == nearest else None,
                "published_memory_gb": pub.get("memory_gb") if n == nearest else None,
                "published_from": pub.get("source") if n == nearest else None,
            }
        )  # fmt: skip

    pub_parent = _published(published, ORIGINAL.published)
    for n, p in _parent_rows(records).items():
        r = {**p, "prefill_speedup": 1.0, "decode_speedup": 1.0, "memory_pct": 100.0}
        add(PARENT_LABEL, "", records[0].get("dtype", "float32"), n, p["new_tokens"], r, base, pub_parent)
    for rec in records:
        label, pub_name = labels.get(rec["recipe"], (rec["recipe"], None))
        pub = _published(published, pub_name)
        for r in sorted(
            (r for r in rec["rows"] if r["model"] == "compressed"), key=lambda r: r["prompt_len"]
        ):
            add(
                label,
                rec["recipe"],
                kernels_tag(rec),
                r["prompt_len"],
                r["new_tokens"],
                r,
                rec["models"]["compressed"],
                pub,
            )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def speed_notes(records: list[dict], df: pd.DataFrame) -> list[str]:
    """The notes under table_speed: protocol, memory, fake quantisation, published cells, headline, machine."""
    from moelab.evaluate.speed import format_machine

    first = records[0]
    parent = _parent_rows(records)
    ranges = ", ".join(
        f"{n}: {p['decode_range'][0]:.2f}-{p['decode_range'][1]:.2f}" for n, p in parent.items()
    )
    notes = [
        f"Protocol (arXiv 2406.02500, Measurement): batch 1, random prompt token ids, as many tokens generated as "
        f"the prompt (greedy, KV cache), {first['device']} {first['dtype']}; prefill tokens/s = prompt tokens / "
        f"median prefill seconds, decode tokens/s = 1 / median per-token seconds over {first['repeats']} timed "
        f"generations. Each recipe's job measures the model before compression and the recipe "
        f"{'with their repeats interleaved' if first['interleaved'] else 'one after the other'}; its speed-ups "
        f"divide the two rates of that job. The '{PARENT_LABEL}' rows give the median of the parent's "
        f"{len(records)} measurements (one per job); its decode tokens/s ranged over the jobs (prompt length: "
        f"min-max) {ranges}.",
        "memory_gb = peak memory of loading the model and one generation at that length (CPU: the peak RSS of a "
        "fresh process less its RSS before loading, i.e. without the interpreter and torch; CUDA: "
        "torch.cuda.max_memory_allocated), GB = 2^30 bytes; memory_pct = of the parent's in the same job. "
        "storage_gb = the weights at their storage width; flops_speedup = the parent's forward FLOPs per token / "
        "the recipe's (2 x active parameters, embedding lookup excluded): the speed-up if time followed FLOPs.",
    ]
    fake = [rec["recipe"] for rec in records if rec["fake_quantised"]]
    if fake:
        notes.append(
            f"Fake quantisation ({', '.join(fake)}): RTN / GPTQ / AWQ here are quantise-dequantise, so these models "
            f"run the same {first['dtype']} kernels as the parent; their decode speed-up and memory are those of "
            "a float32 model of the same shape (~1x unless the recipe also trims) and say nothing about 4-bit "
            "kernels. storage_gb counts their expert weights packed at the quantised width (scales and zeros "
            "included): a count, not a measurement. The paper's AWQ speed-ups (5.08x; 6.05x with Layer Drop) come "
            "from real 4-bit kernels, which this pipeline does not run."
        )
    pruned = [rec["recipe"] for rec in records if {s["method"] for s in rec["steps"]} & set(PRUNING)]
    if pruned:
        notes.append(
            f"Pruned recipes ({', '.join(pruned)}) keep zeros in dense matrices: dense kernels and dense storage, "
            "so no speed-up or memory saving is expected (2:4 / 4:8 would need a sparse kernel)."
        )
    with_pub = sorted(set(df.loc[df.published_speedup.notna() | df.published_memory_gb.notna(), "model"]))
    without = [m for m in dict.fromkeys(df.model) if m not in with_pub]
    notes.append(
        "Published: published_speedup / published_memory_gb are the paper's Table 3 (TMLR 2025, Mixtral-8x7B: "
        "speed-up of one forward pass on 2048 tokens vs bf16, memory of the bf16 / AWQ model), on the row whose "
        f"prefill length is nearest {PAPER_SPEED_LEN}; they are a prefill-like measure on a GPU, not our decode "
        "speed-up. No source gives the paper's tokens/s per prompt length (its speed table was not retrieved), "
        f"nor any published speed-up or memory for: {', '.join(without) or 'none'}."
    )
    head = next((rec for rec in records if rec["recipe"] == "awq_4bit+layer_drop"), None)
    if head is not None:
        s = head["summary"]
        notes.append(
            f"Headline (abstract: 6.05x speed-up, 20.0 GB, >92% retained; Table 3's AWQ 4-bit + Layer Drop): ours "
            f"at prompt {s['prompt_len']}: prefill x{s['prefill_speedup']:.2f}, decode x{s['decode_speedup']:.2f}, "
            f"memory {s['memory_gb']:.3f} GB ({100 * s['memory_ratio']:.0f}% of the parent), storage "
            f"{s['storage_gb']:.3f} GB ({100 * s['storage_ratio']:.0f}% of the parent's): the Layer Drop part "
            "is measured, the 4-bit part only counted."
        )
    notes.append(f"Machine: {format_machine(first['machine'])}.")
    return notes


def speed_extras(records: list[dict]) -> dict[str, dict[str, float]]:
    """``extra`` cells of table_methods / table_recipe from speed records, at each record's longest prompt length.

    Returns: source key (``compress/<recipe>/moe_compression``; the parent ``compress_base/moe_compression``) ->
        {"speedup": prefill speed-up, "decode_speedup", "memory_gb", "storage_gb"}; the parent gets 1.0, 1.0,
        the median of its memory over the records and its storage.
    """
    out = {}
    for rec in records:
        s = rec["summary"]
        out[recipe_source(rec["recipe"])] = {
            "speedup": round(s["prefill_speedup"], 3),
            "decode_speedup": round(s["decode_speedup"], 3),
            "memory_gb": round(s["memory_gb"], 4),
            "storage_gb": round(s["storage_gb"], 4),
        }
    if records:
        longest = max(records[0]["prompt_lens"])
        out[ORIGINAL.ours] = {
            "speedup": 1.0,
            "decode_speedup": 1.0,
            "memory_gb": round(_parent_rows(records)[longest]["memory_gb"], 4),
            "storage_gb": round(records[0]["models"]["parent"]["storage_bytes"] / 2**30, 4),
        }
    return out


def method_family(steps: list[dict]) -> str:
    """trimming / pruning / quantisation (one kind of step) or combined (several kinds)."""
    family = {**dict.fromkeys(TRIMMING, "trimming"), **dict.fromkeys(PRUNING, "pruning")}
    family.update(dict.fromkeys(QUANTISATION, "quantisation"))
    kinds = {family.get(s["method"], s["method"]) for s in steps}
    return kinds.pop() if len(kinds) == 1 else "combined"


ANNOTATE_MAX = 8  # more points than this: the legend names them (labels beside them overlap)
FAMILY_MARKERS = {"trimming": "o", "pruning": "s", "quantisation": "^", "combined": "D"}


def tradeoff_points(tables: list[pd.DataFrame], recipes: dict[str, list[dict]]) -> pd.DataFrame:
    """Our points of the trade-off figure from the long table_methods / table_recipe CSVs.

    Args:
        tables: long paper tables (columns row, column, ours, ours_from); a recipe in several tables counts once.
        recipes: recipe name -> steps (compress.recipes), for each point's family and whether it is fake-quantised.
    Returns: columns label, recipe, family, fake_quantised, retained (%), decode_speedup, speedup (prefill); only
        recipes whose retained and decode speed-up are both numbers.
    """
    pts = {}
    for t in tables:
        for source, cells in t[t.ours_from.fillna("").str.startswith("compress/")].groupby(
            "ours_from", sort=False
        ):
            recipe = source.split("/")[1]
            vals = dict(zip(cells.column, pd.to_numeric(cells.ours, errors="coerce"), strict=True))
            if recipe in pts or not all(_num(vals.get(k)) for k in ("retained", "decode_speedup")):
                continue
            steps = recipes.get(recipe, [])
            pts[recipe] = {
                "label": cells.row.iloc[0], "recipe": recipe, "family": method_family(steps) if steps else "combined",
                "fake_quantised": any(s["method"] in QUANTISATION for s in steps),
                "retained": vals["retained"], "decode_speedup": vals["decode_speedup"], "speedup": vals.get("speedup"),
            }  # fmt: skip
    return pd.DataFrame(
        list(pts.values()),
        columns=["label", "recipe", "family", "fake_quantised", "retained", "decode_speedup", "speedup"],
    )


def published_points(published: pd.DataFrame) -> pd.DataFrame:
    """Table 3's points: label, retained (% = average / the original's average), speedup (2048-token forward)."""
    pub = published[published.table == "main"]
    wide = pub.pivot_table(index="model", columns="task", values="value", aggfunc="first")
    ref = wide.loc[ORIGINAL.published, "average"]
    rows = wide[wide["speedup"].notna() & wide["average"].notna()]
    return pd.DataFrame(
        {"label": rows.index, "retained": 100 * rows["average"] / ref, "speedup": rows["speedup"]}
    ).reset_index(drop=True)


def plot_tradeoff(
    ours: pd.DataFrame,
    published: pd.DataFrame | None,
    out_png: Path,
    out_pdf: Path,
    title: str,
    prompt_len: int | None = None,
) -> None:
    """Performance retained (%) vs decode speed-up, one marker per method and amount (left), and the paper's
    Table 3 points (retained vs its 2048-token forward speed-up, right, when ``published`` has any).

    Markers: family (trimming o, pruning s, quantisation ^, combined D); hollow = fake-quantised (float32
    kernels: no low-bit speed-up is measurable here). Dashed lines: speed-up 1 and the paper's 92% claim.
    Points are labelled beside them when there are at most ANNOTATE_MAX, else only in the legend (below).
    Raises: ValueError: ``ours`` has no point (no recipe with both retained and a decode speed-up).
    """
    if ours.empty:
        raise ValueError(
            "no method has both a retained % and a decode speed-up (table_methods / table_recipe)"
        )
    panels = 2 if published is not None and not published.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 6.5), squeeze=False)
    ax = axes[0][0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, p in enumerate(ours.itertuples()):
        color = colors[i % len(colors)]
        ax.scatter(
            p.decode_speedup, p.retained, marker=FAMILY_MARKERS.get(p.family, "o"), s=50,
            facecolors="none" if p.fake_quantised else color, edgecolors=color, label=p.label,
        )  # fmt: skip
        if len(ours) <= ANNOTATE_MAX:
            ax.annotate(
                p.label, (p.decode_speedup, p.retained), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
    ax.scatter([1.0], [100.0], marker="*", s=120, color="black", label=PARENT_LABEL)
    at = f" at prompt {prompt_len}" if prompt_len else ""
    ax.set_xlabel(f"decode speed-up vs the parent (batch 1{at}; ours)")
    ax.set_ylabel("performance retained (%)")
    ax.set_title("ours (hollow: fake-quantised, float32 kernels)", fontsize=9)
    for a in axes[0]:
        a.axvline(1.0, color="grey", ls="--", lw=0.8)
        a.axhline(92.0, color="grey", ls=":", lw=0.8)
        a.grid(alpha=0.3)
    ax.legend(
        fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3
    )  # below: clear of the points
    if panels == 2:
        bx = axes[0][1]
        bx.scatter(published.speedup, published.retained, marker="x", color="tab:red")
        for p in published.itertuples():
            bx.annotate(
                p.label, (p.speedup, p.retained), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
        bx.set_xlabel("speed-up of one 2048-token forward pass vs bf16 (published)")
        bx.set_title("published: Mixtral-8x7B, TMLR 2025 Table 3", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    fig.savefig(out_pdf)
    plt.close(fig)
