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
