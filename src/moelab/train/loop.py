"""One small training loop for continual pre-training and instruction tuning (nanoGPT-style).

AdamW (beta1, beta2), weight decay, gradient clipping, linear warm-up then cosine decay to
``min_lr_ratio * lr`` (LLaMA-MoE, sec. "Continual pre-training": peak 2e-4, 100 warm-up steps, cosine to
10% of peak, clip 1.0, wd 0.1, betas 0.9/0.95). Every step appends a row to a CSV log; every
``save_every`` steps a checkpoint (model, optimiser, RNG and data-sampler state together) is written and
counts only once its completion marker exists, so a killed run resumes exactly where it left off.
"""

from __future__ import annotations

import contextlib
import csv
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from moelab.io import aux_value, lm_loss, save_model
from moelab.provenance import fingerprint
from moelab.train.checkpoint import (
    claim_checkpoint_dir,
    gather_full_state,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from moelab.train.config import TrainConfig, TrainRunConfig
from moelab.train.dist import is_fsdp, label_tokens, make_accelerator, reduce_sum, split_batch

LOG_FIELDS = (
    "step",
    "loss",
    "lm_loss",
    "aux_loss",
    "lr",
    "grad_norm",
    "tokens",
    "tokens_per_s",
    "elapsed_s",
    "domains",
    "domain_loss",
    "weights",
)


class BatchSource(Protocol):
    """What the loop draws batches from: ``batch(step)`` plus a resumable state."""

    def batch(
        self, step: int
    ) -> dict: ...  # input_ids [B, T], labels [B, T], optional attention_mask, domains

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class SamplerSource:
    """A :class:`BatchSource` over a ``moelab.mixture`` sampler, whose state is the source's state."""

    def __init__(self, sampler):
        self.sampler = sampler

    @property
    def weights(self) -> dict[str, float]:
        """The sampler's current source weights (what the step log records)."""
        return self.sampler.weights

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup_steps``, cosine to ``min_lr_ratio*lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights and biases are not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def _read_log(path: Path, upto_step: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= upto_step]


def train(
    model: torch.nn.Module,
    source: BatchSource,
    cfg: TrainConfig,
    ckpt_dir: Path,
    log_csv: Path,
    device: str = "cpu",
    on_checkpoint: Callable[[int], None] | None = None,
    run_id: str | None = None,
    accelerator=None,
) -> dict:
    """Train ``model`` for ``cfg.steps`` steps, resuming from the newest complete checkpoint in ``ckpt_dir``.

    Single process (the demo's CPU path): one forward/backward per step on the whole batch. Several
    processes (``torchrun`` / ``accelerate launch``) and/or ``cfg.micro_batch_size``: each process takes its
    rows of the same global batch and accumulates micro-batches (``moelab.train.dist``); DDP or FSDP
    wrapping, device placement and the process group come from ``accelerator``. Only the main process writes
    the log and the checkpoints.

    Args:
        model: an HF causal LM; ``model(**batch).loss`` is the training loss (for LlamaMoE it already
            includes ``balance_loss_weight * aux_loss``).
        source: yields batches ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T], ...}``; B is the
            global batch (every process draws the same one).
        ckpt_dir: folder for ``step-XXXXXX`` checkpoints (kept after the run; the latest k are kept).
        log_csv: per-step log with columns ``LOG_FIELDS`` (tokens = non-padding input tokens so far).
        run_id: fingerprint of the run's inputs and settings; checkpoints of a different run found in
            ``ckpt_dir`` are discarded (never resumed), so a changed config or input model restarts training.
        accelerator: an ``accelerate.Accelerator``; default :func:`moelab.train.dist.make_accelerator`.
    Returns:
        summary dict: final step, final loss (mean of the last 5 steps), tokens, tokens/s, resumed_from,
        number of processes.
    Raises:
        FloatingPointError: a non-finite loss (names the step).
        ValueError: the batch does not split over processes / micro-batches (names the config keys).
    """
    ckpt_dir, log_csv = Path(ckpt_dir), Path(log_csv)
    acc = accelerator if accelerator is not None else make_accelerator(device)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    unwrapped = model
    if not is_fsdp(acc):
        model.to(acc.device)
    optimizer = make_optimizer(model, cfg)
    model, optimizer = acc.prepare(model, optimizer)
    torch.manual_seed(cfg.seed)
    if main:
        claim_checkpoint_dir(ckpt_dir, run_id)
    acc.wait_for_everyone()
    start, resumed_from = 0, None
    if (found := resume_checkpoint(ckpt_dir)) is not None:
        start = load_checkpoint(found, unwrapped, optimizer, source, accelerator=acc, wrapped=model)
        resumed_from = str(found)
    rows = _read_log(log_csv, start) if start else []
    tokens = int(rows[-1]["tokens"]) if rows else 0
    acc.wait_for_everyone()  # every process has read the log before the main process rewrites it
    simple = world == 1 and cfg.micro_batch_size is None
    fh = writer = None
    if main:
        log_csv.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log_csv, "w", newline="")  # noqa: SIM115 - closed below
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        fh.flush()
    try:
        model.train()
        t0 = time.time()
        elapsed0 = float(rows[-1]["elapsed_s"]) if rows else 0.0
        run_tokens = 0
        # evaluation rounds (pretraining: held-out loss per domain, dynamic mixture update) before a step
        round_fn = getattr(source, "evaluation_round", None)
        eval_model = model if is_fsdp(acc) else unwrapped  # FSDP shards only run inside their wrapper
        steps = range(start, cfg.steps)
        bar = tqdm(steps, initial=start, total=cfg.steps, desc="train", mininterval=5, disable=not main)
        for step in bar:
            if round_fn is not None:
                round_fn(step, eval_model, acc.device)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = source.batch(step)
            domains = batch.pop("domains", None)
            n_tok = (
                int(batch["attention_mask"].sum())
                if "attention_mask" in batch
                else batch["input_ids"].numel()
            )
            if simple:  # one forward on the whole batch: the single-process path, unchanged
                batch = {k: v.to(acc.device) for k, v in batch.items()}
                out = model(**batch)
                loss = out.loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                acc.backward(loss)
                loss_v, lm_v, aux_v = loss.item(), lm_loss(unwrapped, out), aux_value(out)
                by_domain = domain_row_losses(out.logits, batch["labels"], domains) if domains else {}
            else:
                by_domain = {}  # per-row losses are not gathered over micro-batches / processes
                loss_v, lm_v, aux_v = _accumulate(model, unwrapped, optimizer, acc, batch, cfg, world, rank)
                if not math.isfinite(loss_v):
                    raise FloatingPointError(f"non-finite training loss {loss_v} at step {step}")
            grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            tokens += n_tok
            run_tokens += n_tok
            dt = time.time() - t0
            row = {
                "step": step + 1,
                "loss": round(loss_v, 5),
                "lm_loss": round(lm_v, 5),
                "aux_loss": round(aux_v, 5),
                "lr": f"{lr:.3e}",
                "grad_norm": round(float(grad_norm), 4),
                "tokens": tokens,
                "tokens_per_s": round(run_tokens / max(dt, 1e-9), 1),
                "elapsed_s": round(elapsed0 + dt, 2),
                "domains": " ".join(sorted(set(domains))) if domains else "",
                "domain_loss": _pairs(by_domain, 4),
                "weights": _pairs(getattr(source, "weights", None) or {}, 4),
            }
            if main:
                writer.writerow(row)
                fh.flush()
            bar.set_postfix(loss=row["loss"], tok_s=row["tokens_per_s"])
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(
                    ckpt_dir, step + 1, unwrapped, optimizer, source, keep=cfg.keep_checkpoints,
                    accelerator=acc, wrapped=model,
                )  # fmt: skip
                if on_checkpoint:
                    on_checkpoint(step + 1)
        if round_fn is not None:
            round_fn(cfg.steps, eval_model, acc.device)  # the round after the last step
    finally:
        if fh is not None:
            fh.close()
    acc.wait_for_everyone()
    rows = _read_log(log_csv, cfg.steps)
    last = [float(r["lm_loss"]) for r in rows[-5:]]
    return {
        "steps": cfg.steps,
        "final_lm_loss": sum(last) / len(last) if last else None,
        "tokens": tokens,
        "tokens_per_s": float(rows[-1]["tokens_per_s"]) if rows else None,
        "resumed_from": resumed_from,
        "processes": world,
        "config": asdict(cfg),
    }


@torch.no_grad()
def domain_row_losses(logits: torch.Tensor, labels: torch.Tensor, domains: list[str]) -> dict[str, float]:
    """Mean next-token loss (nats/token) of the rows of each domain in a batch.

    Args:
        logits: FloatTensor [B, T, V] (the model's output; position t predicts token t + 1).
        labels: LongTensor [B, T], -100 = not scored.
        domains: B names, the domain of each row.
    Returns:
        domain -> token-weighted mean loss over that domain's rows (domains without scored tokens are left out).
    """
    logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
    )
    mask = labels != -100
    out = {}
    for name in sorted(set(domains)):
        rows = torch.tensor([d == name for d in domains], device=nll.device)
        n = mask[rows].sum()
        if n > 0:
            out[name] = float(nll[rows].sum() / n)
    return out


def _pairs(d: dict[str, float], digits: int) -> str:
    """``{"web": 0.8531, ...}`` -> ``"web=0.8531 ..."`` (a step-log cell)."""
    return " ".join(f"{k}={round(float(v), digits)}" for k, v in sorted(d.items()))


def _accumulate(model, unwrapped, optimizer, acc, batch: dict, cfg: TrainConfig, world: int, rank: int):
    """Forward/backward this process's micro-batches of a global batch; returns the global (loss, lm, aux).

    Micro-batch i with n_i label tokens gets weight ``n_i / N`` (N = label tokens of the whole global
    batch), so summed over micro-batches and processes the gradient is that of the global token mean
    (times ``world``, undone by DDP's average). Gradients are synchronised on the last micro-batch only.
    """
    total = max(label_tokens(batch), 1)
    parts = split_batch(batch, rank, world, cfg.micro_batch_size)
    optimizer.zero_grad(set_to_none=True)
    sums = [0.0, 0.0, 0.0]
    for i, part in enumerate(parts):
        part = {k: v.to(acc.device) for k, v in part.items()}
        weight = label_tokens(part) / total
        sync = contextlib.nullcontext() if i == len(parts) - 1 else acc.no_sync(model)
        with sync:
            out = model(**part)
            acc.backward(out.loss * (weight * world))
        sums[0] += float(out.loss.detach()) * weight
        sums[1] += lm_loss(unwrapped, out) * weight
        sums[2] += aux_value(out) * weight
    return tuple(reduce_sum(sums, acc))


def train_and_save(model, tokenizer, source: BatchSource, cfg: TrainRunConfig) -> dict:
    """:func:`train` a model loaded from ``cfg.model`` on ``cfg.data``, then save it to ``cfg.out_dir``.

    The run's fingerprint (input model, data files, hyperparameters, seed) guards the checkpoints in
    ``cfg.ckpt_dir``; the per-step log kept beside them is copied to ``cfg.log_csv``.
    """
    ckpt_dir = Path(cfg.ckpt_dir)
    data = cfg.data
    run_id = fingerprint(Path(cfg.model), *(Path(data[d]) for d in sorted(data)), cfg.section(), cfg.seed)
    acc = make_accelerator(cfg.device)
    summary = train(
        model, source, cfg.optim(), ckpt_dir, ckpt_dir / "log.csv", cfg.device, run_id=run_id, accelerator=acc
    )
    save_trained(acc, model, tokenizer, Path(cfg.out_dir))
    if acc.is_main_process:
        Path(cfg.log_csv).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt_dir / "log.csv", cfg.log_csv)
    return summary


def save_trained(accelerator, model, tokenizer, out_dir: Path) -> None:
    """Save the trained model + tokenizer as an HF folder from the main process (collective under FSDP).

    Single process and DDP: ``model`` (the unwrapped module) is saved as is. FSDP: the full state dict is
    gathered first (:func:`moelab.train.checkpoint.gather_full_state`; every process must call this).
    """
    if is_fsdp(accelerator):
        wrapped = accelerator._models[-1]  # the FSDP module accelerate prepared in train()
        state, _ = gather_full_state(wrapped, accelerator)
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(wrapped)
            tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            unwrapped.save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)
            shutil.rmtree(out_dir, ignore_errors=True)
            tmp.rename(out_dir)
    elif accelerator.is_main_process:
        save_model(model, tokenizer, out_dir)
    accelerator.wait_for_everyone()
