"""One small training loop for continual pre-training and instruction tuning (nanoGPT-style).

AdamW (beta1, beta2), weight decay, gradient clipping, linear warm-up then cosine decay to
``min_lr_ratio * lr`` (LLaMA-MoE, sec. "Continual pre-training": peak 2e-4, 100 warm-up steps, cosine to
10% of peak, clip 1.0, wd 0.1, betas 0.9/0.95). Every step appends a row to a CSV log; every
``save_every`` steps a checkpoint (model, optimiser, RNG and data-sampler state together) is written and
counts only once its completion marker exists, so a killed run resumes exactly where it left off.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from moelab.io import aux_value, lm_loss, save_model
from moelab.provenance import fingerprint
from moelab.train.checkpoint import claim_checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint

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
)


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (the config's ``pretrain:`` / ``sft:`` sections)."""

    steps: int
    lr: float
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    save_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 1227
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: dict, seed: int) -> TrainConfig:
        """Build from a config section (``pretrain:`` / ``sft:``), ignoring its data keys."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("seed", "extra")}
        return cls(**{k: v for k, v in section.items() if k in names}, seed=seed)

    def __post_init__(self):
        for key in ("steps", "save_every", "keep_checkpoints"):
            if int(getattr(self, key)) <= 0:
                raise ValueError(f"train config: {key} must be a positive integer, got {getattr(self, key)}")
        if self.warmup_steps < 0:
            raise ValueError(f"train config: warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            raise ValueError(f"train config: lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train config: min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        self.betas = tuple(self.betas)


class BatchSource(Protocol):
    """What the loop draws batches from: ``batch(step)`` plus a resumable state."""

    def batch(
        self, step: int
    ) -> dict: ...  # input_ids [B, T], labels [B, T], optional attention_mask, domains

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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
) -> dict:
    """Train ``model`` for ``cfg.steps`` steps, resuming from the newest complete checkpoint in ``ckpt_dir``.

    Args:
        model: an HF causal LM; ``model(**batch).loss`` is the training loss (for LlamaMoE it already
            includes ``balance_loss_weight * aux_loss``).
        source: yields batches ``{"input_ids": LongTensor[B, T], "labels": LongTensor[B, T], ...}``.
        ckpt_dir: folder for ``step-XXXXXX`` checkpoints (kept after the run; the latest k are kept).
        log_csv: per-step log with columns ``LOG_FIELDS`` (tokens = non-padding input tokens so far).
        run_id: fingerprint of the run's inputs and settings; checkpoints of a different run found in
            ``ckpt_dir`` are discarded (never resumed), so a changed config or input model restarts training.
    Returns:
        summary dict: final step, final loss (mean of the last 5 steps), tokens, tokens/s, resumed_from.
    """
    ckpt_dir, log_csv = Path(ckpt_dir), Path(log_csv)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    torch.manual_seed(cfg.seed)
    claim_checkpoint_dir(ckpt_dir, run_id)
    start, resumed_from = 0, None
    if (found := latest_checkpoint(ckpt_dir)) is not None:
        start = load_checkpoint(found, model, optimizer, source)
        resumed_from = str(found)
    rows = _read_log(log_csv, start) if start else []
    tokens = int(rows[-1]["tokens"]) if rows else 0
    log_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(log_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        model.train()
        t0 = time.time()
        elapsed0 = float(rows[-1]["elapsed_s"]) if rows else 0.0
        run_tokens = 0
        bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train", mininterval=5)
        for step in bar:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = source.batch(step)
            domains = batch.pop("domains", None)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            loss = out.loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            n_tok = (
                int(batch["attention_mask"].sum())
                if "attention_mask" in batch
                else batch["input_ids"].numel()
            )
            tokens += n_tok
            run_tokens += n_tok
            dt = time.time() - t0
            row = {
                "step": step + 1,
                "loss": round(loss.item(), 5),
                "lm_loss": round(lm_loss(model, out), 5),
                "aux_loss": round(aux_value(out), 5),
                "lr": f"{lr:.3e}",
                "grad_norm": round(float(grad_norm), 4),
                "tokens": tokens,
                "tokens_per_s": round(run_tokens / max(dt, 1e-9), 1),
                "elapsed_s": round(elapsed0 + dt, 2),
                "domains": " ".join(sorted(set(domains))) if domains else "",
            }
            writer.writerow(row)
            fh.flush()
            bar.set_postfix(loss=row["loss"], tok_s=row["tokens_per_s"])
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(ckpt_dir, step + 1, model, optimizer, source, keep=cfg.keep_checkpoints)
                if on_checkpoint:
                    on_checkpoint(step + 1)
    rows = _read_log(log_csv, cfg.steps)
    last = [float(r["lm_loss"]) for r in rows[-5:]]
    return {
        "steps": cfg.steps,
        "final_lm_loss": sum(last) / len(last) if last else None,
        "tokens": tokens,
        "tokens_per_s": float(rows[-1]["tokens_per_s"]) if rows else None,
        "resumed_from": resumed_from,
        "config": asdict(cfg),
    }


def train_and_save(
    model,
    tokenizer,
    source: BatchSource,
    section: dict,
    seed: int,
    *,
    model_dir: Path,
    data: dict[str, Path],
    out_dir: Path,
    log_csv: Path,
    ckpt_dir: Path,
    device: str = "cpu",
) -> dict:
    """:func:`train` a model loaded from ``model_dir`` on ``data``, then save it to ``out_dir``.

    The run's fingerprint (input model, data files, config section, seed) guards the checkpoints; the
    per-step log kept beside them is copied to ``log_csv``.
    """
    ckpt_dir = Path(ckpt_dir)
    run_id = fingerprint(Path(model_dir), *(Path(data[d]) for d in sorted(data)), section, seed)
    cfg = TrainConfig.from_section(section, seed)
    summary = train(model, source, cfg, ckpt_dir, ckpt_dir / "log.csv", device, run_id=run_id)
    save_model(model, tokenizer, out_dir)
    Path(log_csv).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ckpt_dir / "log.csv", log_csv)
    return summary
