"""Continual pre-training of a (converted) model on packed domain text (LLaMA-MoE sec. "Continual pre-training").

Each packed block of ``seq_len`` tokens comes from one domain, drawn by the static domain weights; a few
blocks per domain are held out to measure the per-domain validation loss before and after training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from moelab.data.packing import pack_texts, read_jsonl
from moelab.io import load_model, mean_loss
from moelab.mixture import DomainSampler
from moelab.train.config import TrainRunConfig
from moelab.train.dist import fsdp_requested
from moelab.train.loop import SamplerSource, train_and_save

VAL_BLOCKS = 4  # held-out blocks per domain


class PretrainSource(SamplerSource):
    """Batches of packed blocks, ``labels = input_ids`` (the model shifts them); stateless per step."""

    def batch(self, step: int) -> dict:
        ids, domains = self.sampler.batch(step)
        return {"input_ids": ids, "labels": ids.clone(), "domains": domains}


def load_domain_blocks(data: dict[str, Path], tokenizer, seq_len: int) -> dict[str, torch.Tensor]:
    """Pack every domain's JSONL ``text`` field into blocks [n, seq_len]."""
    return {d: pack_texts((r["text"] for r in read_jsonl(p)), tokenizer, seq_len) for d, p in data.items()}


def split_validation(blocks: dict[str, torch.Tensor], n_val: int = VAL_BLOCKS):
    """(train, validation) blocks per domain; the last ``n_val`` blocks of each domain are held out.

    Raises:
        ValueError: a domain has too few blocks to hold out ``n_val`` and still train.
    """
    train_b, val_b = {}, {}
    for d, b in blocks.items():
        if len(b) <= n_val:
            raise ValueError(
                f"domain {d!r} packs into only {len(b)} blocks; need more than {n_val} (raise pretrain_max_chars)"
            )
        train_b[d], val_b[d] = b[:-n_val], b[-n_val:]
    return train_b, val_b


def domain_losses(model, val_blocks: dict[str, torch.Tensor], device: str = "cpu") -> dict[str, float]:
    """Mean LM loss (nats/token) per domain on held-out blocks."""
    return {d: round(mean_loss(model, [{"input_ids": b.to(device)}]), 4) for d, b in val_blocks.items()}


def run_pretrain(cfg: TrainRunConfig) -> dict:
    """Load ``cfg.model``, train it on ``cfg.data`` (packed domain text) as ``cfg`` says, save to ``cfg.out_dir``.

    Resumes from ``cfg.ckpt_dir`` when it holds a complete checkpoint of the same run. Returns a summary
    with per-domain validation losses before and after training and the training throughput.

    Raises:
        ValueError: a domain too small to hold out validation blocks, or bad domain weights (names it).
    """
    data = {d: Path(p) for d, p in cfg.data.items()}
    model, tokenizer = load_model(Path(cfg.model), dtype=cfg.dtype, device=cfg.device)
    blocks = load_domain_blocks(data, tokenizer, cfg.seq_len)
    train_blocks, val_blocks = split_validation(blocks)
    sampler = DomainSampler(train_blocks, cfg.domain_weights, cfg.batch_size, cfg.seed)
    before = domain_losses(model, val_blocks, cfg.device)
    summary = train_and_save(model, tokenizer, PretrainSource(sampler), cfg)
    if fsdp_requested():
        # FSDP shards cannot run outside their wrapper: score the saved model instead
        model, _ = load_model(Path(cfg.out_dir), dtype=cfg.dtype, device=cfg.device)
    after = domain_losses(model, val_blocks, cfg.device)
    summary.update(
        val_loss_before=before,
        val_loss_after=after,
        train_blocks={d: len(b) for d, b in train_blocks.items()},
    )
    return summary
