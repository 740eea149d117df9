"""Training: continual pre-training and instruction tuning with checkpoint/resume, from one typed config.

``config.py`` (the run's typed config, no torch), ``__main__.py`` + ``launch.py`` (``python -m moelab.train
CONFIG.json``: in this process or under torchrun / accelerate launch), ``loop.py`` + ``checkpoint.py`` +
``dist.py`` (the loop), ``pretrain.py`` / ``sft.py`` (the two stages).

Names are imported on first use, so the workflow reads ``moelab.train.config`` at parse time without
importing torch.
"""

import importlib

_EXPORTS = {
    "LauncherConfig": "config",
    "TrainConfig": "config",
    "TrainRunConfig": "config",
    "latest_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "lr_at": "loop",
    "train": "loop",
    "run_training": "launch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
