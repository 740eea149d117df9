"""Data-parallel helpers for the training loop: one global batch, split over processes and micro-batches.

Every process draws the same global batch ``[B, T]`` from the (deterministic) batch source, keeps its
contiguous share of ``B / world`` rows and runs it in ``accum`` micro-batches of ``micro_batch_size`` rows:
``B = micro_batch_size x world x accum`` (global batch = per-device batch x processes x accumulation).
Each micro-batch loss is weighted by its share of the global batch's label tokens, so the summed gradient
is the gradient of the global token-mean loss whatever the split (exact for packed pretraining blocks and
for padded chat batches alike); DDP averages gradients over processes, hence the extra factor ``world``.

Device placement, DDP / FSDP wrapping and the process group come from accelerate's ``Accelerator``: under
``torchrun`` or ``accelerate launch`` it reads the launcher's environment; in a plain process it is a
single-process no-op wrapper (the CPU path of the demo). FSDP also runs on CPU processes (gloo), see
:func:`make_accelerator`; the CPU tests train through it.
"""

from __future__ import annotations

import os

import torch

IGNORE_INDEX = -100


def fsdp_requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


def make_accelerator(device: str = "cpu"):
    """An ``accelerate.Accelerator`` for ``device`` (``"cpu"`` forces CPU even where a GPU exists).

    Mixed precision, DDP vs FSDP and the process count come from the launcher (``accelerate launch
    --config_file config/accelerate/*.yaml`` or ``torchrun``); a plain process gets a single-process one.

    FSDP on CPU processes: accelerate 1.15 applies an FSDP launch config on accelerator devices only. On CPU
    its ``AcceleratorState`` keeps ``DistributedType.MULTI_CPU`` and drops the FSDP plugin (accelerate/state.py,
    the FSDP switch sits in the ``MULTI_GPU``-like branch only), so the run would silently be DDP. torch's FSDP
    does run on CPU with gloo, so here the state is switched to FSDP with the plugin built from the launch
    config, and the device to plain ``cpu`` (FSDP rejects accelerate's ``cpu:0`` as inconsistent with its
    compute device ``cpu``). This keeps the FSDP code path testable on CPU (tests/test_train_dist.py).

    Raises:
        ValueError: FSDP on CPU with ``fsdp_sync_module_states: true`` (accelerate broadcasts module states
            through an accelerator device; names the key to change).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    try:
        acc = Accelerator(cpu=(device == "cpu"))
    except RuntimeError as err:
        if fsdp_requested() and "no available devices" in str(err):
            raise ValueError(
                "FSDP on CPU processes needs fsdp_sync_module_states: false in the accelerate config "
                f"(accelerate syncs module states through an accelerator device): {err}"
            ) from err
        raise
    if fsdp_requested() and acc.distributed_type == DistributedType.MULTI_CPU:
        from accelerate.state import PartialState

        cpu = torch.device("cpu")
        # AcceleratorState re-reads PartialState's fields on every instantiation: change both, as
        # accelerate itself does for distributed_type on GPUs
        PartialState._shared_state.update(distributed_type=DistributedType.FSDP, device=cpu)
        acc.state.distributed_type, acc.state.device = DistributedType.FSDP, cpu
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* environment
    return acc


def label_tokens(batch: dict) -> int:
    """Tokens that carry loss in a causal-LM batch: labels shifted by one, ``-100`` excluded.

    Args:
        batch: ``{"input_ids": [B, T], "labels": [B, T] (optional; default input_ids)}``.
    """
    labels = batch.get("labels", batch["input_ids"])
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def split_batch(batch: dict, rank: int, world: int, micro_batch_size: int | None) -> list[dict]:
    """This process's micro-batches of a global batch.

    Args:
        batch: tensors ``[B, ...]`` (non-tensor values are dropped).
        rank, world: this process's index and the number of processes.
        micro_batch_size: rows per forward pass; ``None`` = all of this process's rows at once.

    Returns:
        ``accum`` dicts of ``[micro_batch_size, ...]`` tensors, rows ``rank*B/world ...`` in order.

    Raises:
        ValueError: ``B`` is not divisible by ``world``, or this process's rows by ``micro_batch_size``
            (names the config keys to change: ``batch_size``, ``micro_batch_size``, ``launcher.num_processes``).
    """
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    rows = next(iter(tensors.values())).shape[0]
    if rows % world:
        raise ValueError(
            f"batch_size={rows} is not divisible by launcher.num_processes={world}; "
            "the global batch must split evenly over processes"
        )
    per_rank = rows // world
    micro = per_rank if micro_batch_size is None else int(micro_batch_size)
    if micro < 1 or per_rank % micro:
        raise ValueError(
            f"micro_batch_size={micro_batch_size} does not divide the {per_rank} rows per process "
            f"(batch_size={rows} / launcher.num_processes={world})"
        )
    start = rank * per_rank
    return [{k: v[s : s + micro] for k, v in tensors.items()} for s in range(start, start + per_rank, micro)]


def gather_rng_states(accelerator) -> list[torch.Tensor]:
    """Every process's torch CPU RNG state, in rank order (a collective call: all processes must call it)."""
    state = torch.get_rng_state()
    if accelerator is None or accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return list(gather_object([state]))


def reduce_sum(values: list[float], accelerator) -> list[float]:
    """Sum floats over processes (a collective call); identity in a single process."""
    if accelerator is None or accelerator.num_processes == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").tolist()


def is_fsdp(accelerator) -> bool:
    """Whether the accelerator shards the model with FSDP (checkpoints then need a gathered state dict)."""
    from accelerate.utils import DistributedType

    return accelerator is not None and accelerator.distributed_type == DistributedType.FSDP
