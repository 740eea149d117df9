"""Process set-up shared by the workflow's scripts: log redirection, threads, seeds, dtype."""

from __future__ import annotations

import logging
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def setup(log: str | Path | None, threads: int = 1, seed: int = 0) -> logging.Logger:
    """Send stdout/stderr (and tqdm progress) to ``log``, use ``threads`` CPU threads, seed every RNG.

    Also forbids hub downloads (``HF_HUB_OFFLINE``) unless the caller already set the variable, so the
    demo scale never touches the network.
    """
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        sys.stdout = sys.stderr = fh
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(max(1, int(threads)))
    seed_everything(seed)
    return logging.getLogger("moelab")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> str:
    """``device`` if available; raises ValueError for cuda without a GPU (config key ``device``)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("config device='cuda' but torch sees no CUDA device; set device: cpu")
    return device


def resolve_dtype(device: str, dtype: str) -> str:
    """``dtype`` if ``device`` can train in it (config keys ``device`` + ``dtype``, one GPU switch).

    bfloat16 runs on CPU (slowly) and on GPUs that support it (compute capability >= 8.0: A100, H100, ...).

    Raises:
        ValueError: unknown dtype, or bfloat16 on a GPU without bf16 support (names the keys to change).
    """
    if dtype not in DTYPES:
        raise ValueError(f"config dtype={dtype!r} is not one of {sorted(DTYPES)}")
    if dtype == "bfloat16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("config dtype='bfloat16' but this GPU has no bf16 support; set dtype: float32")
    return dtype
