"""Paper tables and figures: published numbers beside ours."""

from moelab.report.figures import plot_loss_curves
from moelab.report.tables import (
    CHANCE,
    LLAMA_MOE_TASKS,
    chance_average,
    load_published,
    main_table,
    write_table,
)

__all__ = [
    "CHANCE",
    "LLAMA_MOE_TASKS",
    "chance_average",
    "load_published",
    "main_table",
    "plot_loss_curves",
    "write_table",
]
