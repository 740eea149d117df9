"""Training loops with checkpoint/resume for continual pre-training and instruction tuning."""

from moelab.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from moelab.train.loop import TrainConfig, lr_at, train

__all__ = ["TrainConfig", "latest_checkpoint", "load_checkpoint", "lr_at", "save_checkpoint", "train"]
