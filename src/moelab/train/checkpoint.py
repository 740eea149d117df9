"""Training checkpoints: model, optimiser, RNG and data-sampler state saved together (torchtitan habit).

Layout: ``<ckpt_dir>/step-000040/`` holding ``model.safetensors``, ``optimizer.pt``, ``rng.pt``,
``sampler.json`` and, written last, ``COMPLETE`` (JSON: the step and every file's size in bytes). A folder
without ``COMPLETE`` (a save interrupted by a kill) is ignored and overwritten; one whose files no longer match
their ``COMPLETE`` sizes, or whose weights file is damaged (:func:`verify_checkpoint`), is skipped on resume
in favour of the previous complete one (:func:`resume_checkpoint`, which logs what it skipped and why). Only ``weights_only=True`` loads are used. Several processes: the main
process writes (DDP state is replicated) and ``rng.pt`` also holds every process's RNG state. Under FSDP
with ``fsdp_state_dict_type: FULL_STATE_DICT`` (config/accelerate/fsdp.yaml) the same two files hold the
full (unsharded) model and optimiser state gathered from every process; there ``optimizer.pt`` is keyed by
parameter name (torch.distributed.checkpoint.state_dict) instead of by index. Other FSDP state-dict types
use accelerate's FSDP checkpoint files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from moelab.errors import DamagedFileError
from moelab.files import verify_safetensors
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


def verify_checkpoint(path: Path) -> int:
    """Check a checkpoint folder against its ``COMPLETE`` marker without loading it.

    Every file the marker lists must exist with its recorded size, and ``model.safetensors`` (when there is
    one) must pass :func:`moelab.files.verify_safetensors`. A marker holding only the step (written before
    the marker listed files) checks the weights file alone.

    Returns:
        The checkpoint's step.

    Raises:
        FileNotFoundError: no ``COMPLETE`` marker (an interrupted save) or a listed file is missing (named).
        DamagedFileError: the marker does not parse, a file's size differs from the marker's, or the weights
            file is damaged; the message names the file and says to delete the checkpoint folder.
    """
    path = Path(path)
    marker = path / MARKER
    if not marker.is_file():
        raise FileNotFoundError(f"checkpoint {path} is incomplete (no {MARKER} marker): an interrupted save")
    try:
        record = json.loads(marker.read_text())
    except ValueError:
        raise DamagedFileError(marker, "not a checkpoint completion record") from None
    if isinstance(record, int):  # legacy marker: the step alone
        record = {"step": record, "files": {}}
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise DamagedFileError(marker, "not a checkpoint completion record")
    for name, size in record["files"].items():
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(
                f"checkpoint file {f} is missing; delete {path} (training resumes before it)"
            )
        if f.stat().st_size != size:
            raise DamagedFileError(f, f"{f.stat().st_size} bytes, {size} when the checkpoint was written")
    if (path / "model.safetensors").is_file():
        verify_safetensors(path / "model.safetensors")
    return int(record["step"])


def resume_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that verifies (:func:`verify_checkpoint`), or None to start from scratch.

    A damaged newer checkpoint is skipped with a warning naming it and the reason; when every checkpoint is
    damaged the warning says training starts from scratch. The same files give every process the same answer.
    """
    skipped = []
    for found in reversed(complete_checkpoints(ckpt_dir)):
        try:
            verify_checkpoint(found)
        except (OSError, ValueError) as err:
            log.warning("skipping damaged checkpoint %s: %s", found, err)
            skipped.append(found.name)
            continue
        if skipped:
            log.warning(
                "resuming from the previous complete checkpoint %s (skipped %s)", found, ", ".join(skipped)
            )
        return found
    if skipped:
        log.warning(
            "no intact checkpoint in %s (skipped %s): training starts from scratch",
            ckpt_dir,
            ", ".join(skipped),
        )
    return None


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


def _full_state(accelerator) -> bool:
    """Whether FSDP checkpoints are full state dicts gathered here (else accelerate's FSDP helpers)."""
    from torch.distributed.fsdp import StateDictType

    return accelerator.state.fsdp_plugin.state_dict_type in (StateDictType.FULL_STATE_DICT, None)


def gather_full_state(wrapped, accelerator, optimizer=None) -> tuple[dict, dict | None]:
    """The full model (and optimiser) state of an FSDP-wrapped model: a collective call on every process.

    Uses torch's ``torch.distributed.checkpoint.state_dict`` (FSDP1 and FSDP2 alike) instead of accelerate's
    ``save_fsdp_model`` / ``get_state_dict``: those force ``offload_to_cpu=True`` with several processes, and
    FSDP1's full state dict with ``offload_to_cpu`` crashes (SIGSEGV in the post-state-dict clone) when the
    parameters already live on the CPU. On GPUs the state is offloaded to rank 0's CPU (other ranks get
    ``{}``); on CPU every process gets it.

    Returns:
        ``(model_state, optim_state)``: parameter name -> full tensor (the unwrapped model's state-dict keys
        less tied copies such as ``lm_head.weight``, as ``save_pretrained`` writes them), and the optimiser
        state keyed by parameter name (None without ``optimizer``).
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=accelerator.device.type != "cpu")
    model_state = get_model_state_dict(wrapped, options=options)
    tied = getattr(accelerator.unwrap_model(wrapped), "all_tied_weights_keys", None) or {}
    model_state = {k: v for k, v in model_state.items() if k not in tied}  # gathered copies are not shared
    optim_state = None if optimizer is None else get_optimizer_state_dict(wrapped, optimizer, options=options)
    return model_state, optim_state


def _check_fit(path: Path, missing, unexpected) -> None:
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {missing}, unexpected {unexpected}"
        )


def _keyed_by_name(optim_state: dict) -> bool:
    return any(isinstance(p, str) for g in optim_state.get("param_groups", []) for p in g["params"])


def save_checkpoint(
    ckpt_dir: Path, step: int, model, optimizer, source, keep: int = 2, *, accelerator=None, wrapped=None
) -> Path:
    """Save everything needed to resume after ``step`` completed steps; prune to the newest ``keep``.

    With several processes this is a collective call: every process calls it, RNG states are gathered
    (``rng.pt`` holds rank 0's as ``torch`` and all of them as ``ranks``) and the main process writes.
    Under DDP the weights and optimiser state are replicated, so the main process's copies are saved;
    under FSDP the full state is gathered (:func:`gather_full_state`; accelerate's FSDP helpers for a
    sharded ``fsdp_state_dict_type``) and every process takes part.

    Args:
        model: the unwrapped module (``wrapped``: what ``accelerator.prepare`` returned, for FSDP).
    """
    final = _step_dir(ckpt_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    main = accelerator is None or accelerator.is_main_process
    rng = gather_rng_states(accelerator)
    fsdp = is_fsdp(accelerator)
    full = fsdp and _full_state(accelerator)
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if full:
        model_state, optim_state = gather_full_state(wrapped, accelerator, optimizer)
    elif fsdp:
        from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

        accelerator.wait_for_everyone()
        plugin = accelerator.state.fsdp_plugin
        save_fsdp_model(plugin, accelerator, wrapped, str(tmp), 0)
        save_fsdp_optimizer(plugin, accelerator, optimizer, wrapped, str(tmp), 0)
    if main:
        if full:
            save_file({k: v.contiguous() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
            torch.save(optim_state, tmp / "optimizer.pt")
        elif not fsdp:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"torch": rng[0], **({"ranks": rng} if len(rng) > 1 else {})}, tmp / "rng.pt")
        (tmp / "sampler.json").write_text(json.dumps({"step": step, "sampler": source.state_dict()}))
        files = {
            p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        (tmp / MARKER).write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n")
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
    process (``ranks``), rank 0's otherwise. Under FSDP (full state dict) every process reads the full
    files and keeps its shard (host memory: one full copy of model + optimiser state per process while
    loading).

    Raises:
        FileNotFoundError / DamagedFileError: as :func:`verify_checkpoint` (checked first; names the file).
        ValueError: the checkpoint is incomplete, its weights do not fit ``model``, or its optimiser state
            was written by another parallelism (FSDP vs DDP / single process: resume with the launcher
            config that wrote it, or delete the checkpoint folder).
    """
    path = Path(path)
    if not (path / MARKER).exists():
        raise ValueError(f"checkpoint {path} is incomplete (no {MARKER} marker)")
    verify_checkpoint(path)
    fsdp = is_fsdp(accelerator)
    if fsdp and _full_state(accelerator):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        optim_state = torch.load(path / "optimizer.pt", weights_only=True)
        if not _keyed_by_name(optim_state):
            raise ValueError(
                f"checkpoint {path} was written without FSDP (optimiser state keyed by index); resume it "
                "with the launcher config that wrote it, or delete the checkpoint folder"
            )
        options = StateDictOptions(full_state_dict=True, strict=False)
        result = set_model_state_dict(wrapped, load_file(path / "model.safetensors"), options=options)
        _check_fit(path, result.missing_keys, result.unexpected_keys)
        set_optimizer_state_dict(wrapped, optimizer, optim_state, options=options)
    elif fsdp:
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        plugin = accelerator.state.fsdp_plugin
        load_fsdp_model(plugin, accelerator, wrapped, str(path), 0)
        load_fsdp_optimizer(plugin, accelerator, optimizer, wrapped, str(path), 0)
    else:
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        _check_fit(path, missing, unexpected)
        optim_state = torch.load(path / "optimizer.pt", weights_only=True)
        if _keyed_by_name(optim_state):
            raise ValueError(
                f"checkpoint {path} was written by an FSDP run (optimiser state keyed by parameter name); "
                "resume it with the launcher config that wrote it, or delete the checkpoint folder"
            )
        optimizer.load_state_dict(optim_state)
    rng = torch.load(path / "rng.pt", weights_only=True)
    rank = 0 if accelerator is None else accelerator.process_index
    ranks = rng.get("ranks")
    torch.set_rng_state(ranks[rank] if ranks and rank < len(ranks) else rng["torch"])
    state = json.loads((path / "sampler.json").read_text())
    source.load_state_dict(state["sampler"])
    return int(state["step"])
