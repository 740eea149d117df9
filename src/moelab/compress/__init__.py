"""Compression of MoE models: expert slimming and expert trimming (arXiv 2406.02500).

- ``recipe.py`` (torch-free): recipe steps, their parameters and the config check.
- ``registry.py``: method name -> function, and :func:`run_recipe`.
- ``calibration.py``: per-expert calibration inputs (routed tokens only).
- Expert Trimming: ``drop.py`` (Block Drop), ``layer_drop.py``, ``expert_drop.py``.
- Expert Slimming: ``prune.py`` (magnitude, Wanda, SparseGPT), ``quantize.py`` (RTN, GPTQ, AWQ).

The names below load lazily, so that the config check (``moelab.config``) imports no torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "DROP_MODES": "drop",
    "block_drop": "drop",
    "block_drop_scores": "drop",
    "block_hidden_states": "drop",
    "block_similarity": "drop",
    "choose_blocks": "drop",
    "drop_blocks": "drop",
    "check_recipes": "recipe",
    "check_step": "recipe",
    "STEP_PARAMS": "recipe",
    "COMPRESS_METHODS": "registry",
    "run_recipe": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
