"""Paper figures (PNG + PDF) drawn with matplotlib from our logs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_loss_curves(
    logs: dict[str, Path], out_png: Path, out_pdf: Path, title: str, smooth: int = 5
) -> None:
    """LM loss (without balance loss) against training tokens, one line per run.

    Args:
        logs: run label -> per-step CSV written by :func:`moelab.train.train` (columns tokens, lm_loss).
        smooth: width of the trailing moving average drawn over the raw curve (steps).
    Raises:
        ValueError: a log has no rows.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, path in logs.items():
        df = pd.read_csv(path)
        if df.empty:
            raise ValueError(f"training log {path} has no rows")
        line = ax.plot(df["tokens"], df["lm_loss"], alpha=0.3)[0]
        ax.plot(
            df["tokens"],
            df["lm_loss"].rolling(smooth, min_periods=1).mean(),
            color=line.get_color(),
            label=label,
        )
    ax.set_xlabel("training tokens")
    ax.set_ylabel("LM loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    fig.savefig(out_pdf)
    plt.close(fig)


def _pick_layers(layers: list[int], max_layers: int) -> list[int]:
    """Up to ``max_layers`` layers evenly spaced from the first to the last (both kept)."""
    if len(layers) <= max_layers:
        return layers
    step = (len(layers) - 1) / (max_layers - 1)
    return sorted({layers[round(i * step)] for i in range(max_layers)})


def plot_expert_load(
    gate_load: pd.DataFrame,
    specialisation: pd.DataFrame | None,
    kind: str,
    out_png: Path,
    out_pdf: Path,
    title: str,
    max_layers: int = 4,
    panel_title: str = "layer {layer}",
) -> list[int]:
    """Expert-load heatmaps (rows = data sources, columns = experts, colour = fraction of the source's
    top-k routing slots) for up to ``max_layers`` layers, and the specialisation score by layer.

    LLaMA-MoE (arXiv 2406.16554) expert-load figure: deeper layers route domains more distinctly;
    MoE-SFT (arXiv 2406.11256) expert-load distribution per data set.

    Args:
        gate_load: routing CSV rows (source, kind, layer, expert, tokens, fraction); ``fraction`` sums to
            top_k (or 1) over experts for one (source, layer).
        specialisation: rows (layer, score[, score_<kind>]) or None to skip that panel; ``score_<kind>``
            (specialisation among the sources of that kind, e.g. mean pairwise JS distance) is drawn when
            present, else ``score``.
        kind: the ``kind`` to plot (``pretrain_domain`` or ``sft_domain``).
        panel_title: each heatmap's title, formatted with its ``layer`` value (the start / end panels of
            :func:`moelab.report.sft_mixture.round_gate_load` use the round's step).
    Returns: the layers drawn.
    Raises:
        ValueError: no rows of that kind, or a required column is missing (names the column).
    """
    for col in ("source", "kind", "layer", "expert", "fraction"):
        if col not in gate_load.columns:
            raise ValueError(f"gate-load CSV has no column {col!r} (columns: {list(gate_load.columns)})")
    df = gate_load[gate_load["kind"] == kind]
    if df.empty:
        raise ValueError(
            f"gate-load CSV has no rows of kind {kind!r} (kinds: {sorted(set(gate_load['kind']))})"
        )
    layers = _pick_layers(sorted(df["layer"].unique().tolist()), max_layers)
    panels = len(layers) + (specialisation is not None)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.6), squeeze=False, layout="constrained")
    vmax = float(df["fraction"].max())
    for i, (ax, layer) in enumerate(zip(axes[0], layers, strict=False)):
        grid = df[df["layer"] == layer].pivot_table(index="source", columns="expert", values="fraction")
        im = ax.imshow(grid.to_numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(panel_title.format(layer=layer))
        ax.set_xticks(range(grid.shape[1]), [str(e) for e in grid.columns])
        ax.set_yticks(range(grid.shape[0]), list(grid.index) if i == 0 else [])
        ax.set_xlabel("expert")
    fig.colorbar(im, ax=list(axes[0][: len(layers)]), label="fraction of top-k routing slots", shrink=0.8)
    if specialisation is not None:
        if specialisation.empty or not {"layer", "score"} <= set(specialisation.columns):
            raise ValueError("specialisation CSV needs rows with columns layer, score")
        score = f"score_{kind}" if f"score_{kind}" in specialisation.columns else "score"
        ax = axes[0][-1]
        ax.plot(specialisation["layer"], specialisation[score], marker="o")
        ax.set_xlabel("layer")
        ax.set_ylabel("specialisation score")
        ax.set_title("specialisation by layer")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=150)
    fig.savefig(out_pdf)
    plt.close(fig)
    return layers
