"""PAD-Net: partially dynamic networks (arXiv 2211.05528, ACL 2023), and the dynamic layers it builds on.

- ``options.py`` (torch-free): layer types, partition methods, FFN forms and the argument checks.
- ``conv.py``: CondConv2d and DYConv2d (K kernels mixed by a per-example attention), the DY-Conv temperature
  schedule (:func:`dyconv_temperature`, :func:`set_temperature`).
- ``partial.py``: the partially dynamic weight l_d M (.) W_dyn(x) + l_s (1 - M) (.) W_static
  (:class:`PartiallyDynamic`, :class:`PADConv2d`) and :func:`make_conv` (layer type -> module).
- ``moe.py``: :class:`PADExperts`, partially dynamic MoE experts sharing one mask and one static weight.
- ``partition.py``: Iterative Mode Partition (SNIP on the masks, one global threshold) and the random
  partition ablation.
- ``counting.py``: parameter and FLOP (multiply-add) counts.

Floor 4 (a stage package): imports torch and moelab's lower floors only. The names below load lazily, so that
``from moelab.dynamic import LAYER_TYPES`` (a config check) imports no torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "ACTIVATIONS": "options",
    "DYNAMIC_KINDS": "options",
    "FFN_TYPES": "options",
    "LAYER_TYPES": "options",
    "PARTITION_METHODS": "options",
    "check_kappa": "options",
    "check_num_kernels": "options",
    "CondConv2d": "conv",
    "DYConv2d": "conv",
    "DynamicConv2d": "conv",
    "KernelAttention": "conv",
    "dyconv_temperature": "conv",
    "per_example_conv2d": "conv",
    "set_temperature": "conv",
    "PADConv2d": "partial",
    "Partition": "partial",
    "PartiallyDynamic": "partial",
    "make_conv": "partial",
    "PADExperts": "moe",
    "dynamic_fraction": "partition",
    "dynamic_ratio": "partition",
    "iterative_mode_partition": "partition",
    "mask_saliency": "partition",
    "model_partitions": "partition",
    "partition_round": "partition",
    "reset_masks": "partition",
    "target_count": "partition",
    "conv_flops": "counting",
    "count_flops": "counting",
    "count_params": "counting",
    "expert_flops": "counting",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
