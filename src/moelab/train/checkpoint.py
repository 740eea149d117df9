"""Training checkpoints: model, optimiser, RNG and data-sampler state saved together (torchtitan habit).

Layout: ``<ckpt_dir>/step-000040/`` holding ``model.safetensors``, ``optimizer.pt``, ``rng.pt``,
``sampler.json`` and, written last, ``COMPLETE``. A folder without ``COMPLETE`` (a save interrupted by a
kill) is ignored and overwritten. Only ``weights_only=True`` loads are used. Several processes: the main
process writes (DDP state is replicated) and ``rng.pt`` also holds every process's RNG state; under FSDP
the model and optimiser files are accelerate's FSDP checkpoint files instead of ``model.safetensors`` and
``optimizer.pt``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from moelab.train.dist import gather_rng_states, is_fsdp

MARKER = "COMPLETE"
RUN_FILE = "RUN"
log = logging.getLogger(__name__)


def _step_dir(ckpt_dir: Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step-{step:06d}"


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoint folders in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.glob("step-*") if (p / MARKER).exists())


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = complete_checkpoints(ckpt_dir)
    return found[-1] if found else None


def claim_checkpoint_dir(ckpt_dir: Path, run_id: str | None) -> None:
    """Make ``ckpt_dir`` belong to run ``run_id``: checkpoints of another run are deleted, never resumed."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if run_id is None:
        return
    owner = ckpt_dir / RUN_FILE
    if owner.exists() and owner.read_text().strip() != run_id:
        log.warning(
            "discarding checkpoints in %s: they belong to another run (config or inputs changed)", ckpt_dir
        )
        shutil.rmtree(ckpt_dir)
        ckpt_dir.mkdir(parents=True)
    owner.write_text(run_id + "\n")


def save_checkpoint(
    ckpt_dir: Path, step: int, model, optimizer, source, keep: int = 2, *, accelerator=None, wrapped=None
) -> Path:
    """Save everything needed to resume after ``step`` completed steps; prune to the newest ``keep``.

    With several processes this is a collective call: every process calls it, RNG states are gathered
    (``rng.pt`` holds rank 0's as ``torch`` and all of them as ``ranks``) and the main process writes.
    Under DDP the weights and optimiser state are replicated, so the main process's copies are saved;
    under FSDP, accelerate's FSDP helpers write model and optimiser state (sharded or full, as the FSDP
    config's ``fsdp_state_dict_type`` says) and every process takes part.

    Args:
        model: the unwrapped module (``wrapped``: what ``accelerator.prepare`` returned, for FSDP).
    """
    final = _step_dir(ckpt_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    main = accelerator is None or accelerator.is_main_process
    rng = gather_rng_states(accelerator)
    fsdp = is_fsdp(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if fsdp:
        from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

        accelerator.wait_for_everyone()
        plugin = accelerator.state.fsdp_plugin
        save_fsdp_model(plugin, accelerator, wrapped, str(tmp), 0)
        save_fsdp_optimizer(plugin, accelerator, optimizer, wrapped, str(tmp), 0)
    if main:
        if not fsdp:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"torch": rng[0], **({"ranks": rng} if len(rng) > 1 else {})}, tmp / "rng.pt")
        (tmp / "sampler.json").write_text(json.dumps({"step": step, "sampler": source.state_dict()}))
        (tmp / MARKER).write_text(f"{step}\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in complete_checkpoints(ckpt_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, model, optimizer, source, *, accelerator=None, wrapped=None) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns the number of completed steps.

    Every process loads the same files; each restores its own RNG state when the checkpoint has one per
    process (``ranks``), rank 0's otherwise.

    Raises:
        ValueError: the checkpoint is incomplete or its weights do not fit ``model``.
    """
    path = Path(path)
    if not (path / MARKER).exists():
        raise ValueError(f"checkpoint {path} is incomplete (no {MARKER} marker)")
    if is_fsdp(accelerator):
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        plugin = accelerator.state.fsdp_plugin
        load_fsdp_model(plugin, accelerator, wrapped, str(path), 0)
        load_fsdp_optimizer(plugin, accelerator, optimizer, wrapped, str(path), 0)
    else:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
            raise ValueError(
                f"checkpoint {path} does not fit the model: missing {missing}, unexpected {unexpected}"
            )
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    rank = 0 if accelerator is None else accelerator.process_index
    ranks = rng.get("ranks")
    torch.set_rng_state(ranks[rank] if ranks and rank < len(ranks) else rng["torch"])
    state = json.loads((path / "sampler.json").read_text())
    source.load_state_dict(state["sampler"])
    return int(state["step"])
