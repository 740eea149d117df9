"""Adapters on a frozen pretrained encoder, pruned at initialisation (SparseAdapter, arXiv 2210.04284).

- ``options.py`` (torch-free): adapter kinds, pruner names, the sparsity check and the Large-Sparse rule.
- ``modules.py``: Houlsby, Pfeiffer and parallel bottleneck adapters (ours) and LoRA (peft) on a BERT /
  RoBERTa encoder; freezing; parameter counts for the tables.
- ``masks.py``: binary masks applied in forward as ``W * M``, one global threshold over all adapters.
- ``pruners.py``: the five pruning-at-initialisation scores (random, magnitude, SNIP, GraSP, SynFlow) and
  :func:`prune`.
- ``data.py``: the offline text classification tasks, split into train / dev / test by seed.
- ``train.py``: the classification loop (frozen encoder + adapters + linear head, AdamW, accuracy).

``sparsity`` is the fraction of weights REMOVED everywhere (the upstream CLI's ``--sparsity`` was the fraction
kept). The names below load lazily, so that a config check importing the option names imports no torch.
"""

from __future__ import annotations

import importlib

_WHERE = {
    # options (torch-free)
    "ADAPTER_KINDS": "options",
    "DATA_PRUNERS": "options",
    "INITS": "options",
    "NONLINEARITIES": "options",
    "PRUNERS": "options",
    "check_sparsity": "options",
    "large_sparse": "options",
    "FULL_FT": "options",
    "parse_variant": "options",
    "variant_name": "options",
    # data (text classification tasks)
    "TASKS": "data",
    "TaskDataError": "data",
    "read_offline_task": "data",
    "read_task": "data",
    "split_examples": "data",
    "write_task": "data",
    # train (classification loop)
    "TrainConfig": "train",
    "accuracy": "train",
    "batch_order": "train",
    "prepare_model": "train",
    "run_classifier": "train",
    "tokenizer_encoder": "train",
    "train_classifier": "train",
    # modules
    "AdapterSpec": "modules",
    "BottleneckAdapter": "modules",
    "HoulsbyOutput": "modules",
    "ParallelOutput": "modules",
    "PfeifferOutput": "modules",
    "add_adapters": "modules",
    "adapter_linears": "modules",
    "adapter_parameter_names": "modules",
    "encoder_layers": "modules",
    "freeze_for_adapters": "modules",
    "full_finetuning": "modules",
    "head_parameter_names": "modules",
    "parameter_counts": "modules",
    # masks
    "WeightMask": "masks",
    "attach_masks": "masks",
    "bake_masks": "masks",
    "global_masks": "masks",
    "is_masked": "masks",
    "mask_of": "masks",
    "mask_summary": "masks",
    "raw_weight": "masks",
    "set_masks": "masks",
    # pruners
    "grasp_scores": "pruners",
    "magnitude_scores": "pruners",
    "ones_forward": "pruners",
    "prune": "pruners",
    "random_scores": "pruners",
    "snip_scores": "pruners",
    "synflow_masks": "pruners",
    "synflow_scores": "pruners",
    "zero_score_tensors": "pruners",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
