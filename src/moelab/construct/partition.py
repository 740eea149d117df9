"""Neuron partitions: sizes, checks, statistics and safetensors round trip.

A partition is `partition[layer][expert]` = sorted LongTensor of the FFN neuron ids (rows of gate_proj/up_proj,
columns of down_proj) that expert owns (LLaMA-MoE, arXiv 2406.16554, sec. 2.2). With shared experts (Sharing-Inter,
LLaMA-MoE v2 "1+7top1") the first `num_shared_experts` sets of every layer are the shared ones, as
`moelab.construct.dense_to_moe` expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REMAINDER_POLICIES = ("error", "spread")


def split_sizes(
    total: int, parts: int, remainder: str = "error", what: str = "intermediate_size"
) -> list[int]:
    """Sizes of `parts` near-equal parts of `total` neurons.

    Args:
        total: neurons to split (e.g. intermediate_size I).
        parts: number of experts N.
        remainder: "error" = N must divide I; "spread" = the first I mod N experts get one extra neuron.
        what: name of `total` used in error messages.
    Returns: list of N positive ints summing to `total`.
    Raises: ValueError naming both numbers if N does not divide I under "error", if a part would be empty,
        or for an unknown remainder policy.
    """
    if remainder not in REMAINDER_POLICIES:
        raise ValueError(f"remainder policy {remainder!r} is not one of {REMAINDER_POLICIES}")
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {what}={total} into num_experts={parts} non-empty experts")
    base, extra = divmod(total, parts)
    if extra and remainder == "error":
        raise ValueError(
            f"num_experts={parts} does not divide {what}={total} (remainder {extra}); "
            "choose another num_experts or remainder='spread'"
        )
    return [base + (1 if e < extra else 0) for e in range(parts)]


def check_partition(partition, intermediate_size: int, exact_cover: bool = True) -> None:
    """Raise ValueError if `partition` is not sorted, unique and in range, or (when `exact_cover`) if some
    layer's sets are not disjoint with union range(intermediate_size). The message names layer and expert."""
    for layer, experts in enumerate(partition):
        for e, idx in enumerate(experts):
            if idx.dtype != torch.long or idx.dim() != 1 or idx.numel() == 0:
                raise ValueError(f"partition[{layer}][{e}] must be a non-empty 1-D LongTensor")
            if not torch.equal(idx, idx.unique()):  # unique() sorts
                raise ValueError(f"partition[{layer}][{e}] is not sorted or repeats neuron ids")
            if idx[0] < 0 or idx[-1] >= intermediate_size:
                raise ValueError(
                    f"partition[{layer}][{e}] has ids outside [0, intermediate_size={intermediate_size})"
                )
        if exact_cover:
            flat = torch.cat(list(experts)).sort().values
            if not torch.equal(flat, torch.arange(intermediate_size)):
                raise ValueError(
                    f"partition[{layer}] is not an exact cover of range({intermediate_size}): "
                    f"{flat.numel()} ids, {flat.unique().numel()} distinct"
                )


def is_exact_cover(partition, intermediate_size: int) -> bool:
    """True if every layer's sets are disjoint and cover range(intermediate_size)."""
    try:
        check_partition(partition, intermediate_size, exact_cover=True)
    except ValueError:
        return False
    return True


def partition_stats(partition, intermediate_size: int, num_shared_experts: int = 0) -> dict:
    """Per-layer statistics of a partition (JSON-serialisable).

    Returns: {"num_layers", "num_experts" (sets per layer, shared included), "num_shared_experts",
        "expert_sizes": [[int]] per layer (shared first), "shared_neurons": [int] per layer,
        "overlap": [int] per layer = sum of set sizes - distinct neurons (0 for an exact cover),
        "coverage": [float] per layer = distinct neurons / intermediate_size, "exact_cover": bool}.
    """
    sizes = [[int(idx.numel()) for idx in layer] for layer in partition]
    distinct = [int(torch.cat(list(layer)).unique().numel()) for layer in partition]
    return {
        "num_layers": len(partition),
        "num_experts": len(partition[0]),
        "num_shared_experts": int(num_shared_experts),
        "expert_sizes": sizes,
        "shared_neurons": [sum(s[:num_shared_experts]) for s in sizes],
        "overlap": [sum(s) - d for s, d in zip(sizes, distinct, strict=True)],
        "coverage": [round(d / intermediate_size, 6) for d in distinct],
        "exact_cover": is_exact_cover(partition, intermediate_size),
    }


def save_partition(partition, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a partition as safetensors, one tensor "layer.{l}.expert.{e}" per set; `metadata` (str values
    after JSON encoding) goes into the safetensors header. An empty partition (MLPs left dense, e.g. an
    attention-MoE-only run) writes a file with no tensors. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"layer.{layer}.expert.{e}": idx.contiguous()
        for layer, experts in enumerate(partition)
        for e, idx in enumerate(experts)
    }
    meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
    meta["shape"] = json.dumps([len(partition), len(partition[0]) if partition else 0])
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def load_partition(path: str | Path) -> list[list[torch.Tensor]]:
    """Read a partition written by `save_partition`.

    Raises: FileNotFoundError for a missing file; ValueError if a layer/expert tensor is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"partition file {path} does not exist")
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        num_layers, num_experts = json.loads(fh.metadata()["shape"])
    out = []
    for layer in range(num_layers):
        row = []
        for e in range(num_experts):
            key = f"layer.{layer}.expert.{e}"
            if key not in tensors:
                raise ValueError(f"partition file {path} lacks tensor {key}")
            row.append(tensors[key])
        out.append(row)
    return out
