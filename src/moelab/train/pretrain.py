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
from moelab.train.dist import fsdp_requested
from moelab.train.loop import train_and_save

VAL_BLOCKS = 4  # held-out blocks per domain


class PretrainSource:
    """Batches of packed blocks, ``labels = input_ids`` (the model shifts them); stateless per step."""

    def __init__(self, sampler: DomainSampler):
        self.sampler = sampler

    def batch(self, step: int) -> dict:
        ids, domains = self.sampler.batch(step)
        return {"input_ids": ids, "labels": ids.clone(), "domains": domains}

    def state_dict(self) -> dict:
        return {"domain_weights": dict(self.sampler.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_weights(state["domain_weights"])


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


def run_pretrain(
    model_dir: Path,
    data: dict[str, Path],
    section: dict,
    out_dir: Path,
    log_csv: Path,
    ckpt_dir: Path,
    seed: int,
    device: str = "cpu",
    dtype: str = "float32",
) -> dict:
    """Load ``model_dir``, train it as ``section`` (the config's ``pretrain:``) says, save to ``out_dir``.

    Resumes from ``ckpt_dir`` when it holds a complete checkpoint. Returns a summary with per-domain
    validation losses before and after training and the training throughput.
    """
    model, tokenizer = load_model(model_dir, dtype=dtype, device=device)
    blocks = load_domain_blocks(data, tokenizer, section["seq_len"])
    train_blocks, val_blocks = split_validation(blocks)
    sampler = DomainSampler(train_blocks, section["domain_weights"], section["batch_size"], seed)
    before = domain_losses(model, val_blocks, device)
    summary = train_and_save(
        model, tokenizer, PretrainSource(sampler), section, seed,
        model_dir=model_dir, data=data, out_dir=out_dir, log_csv=log_csv, ckpt_dir=ckpt_dir, device=device,
    )  # fmt: skip
    if fsdp_requested():
        # FSDP shards cannot run outside their wrapper: score the saved model instead
        model, _ = load_model(out_dir, dtype=dtype, device=device)
    after = domain_losses(model, val_blocks, device)
    summary.update(
        val_loss_before=before,
        val_loss_after=after,
        train_blocks={d: len(b) for d, b in train_blocks.items()},
    )
    return summary
