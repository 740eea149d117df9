"""Tokenise + pack pretraining text into fixed-length blocks, and sample blocks by domain weights.

LLaMA-MoE (arXiv 2406.16554, Sec. 4.1) packs SlimPajama into 4096-token sequences and draws each packed
block from one domain, the domain chosen by the current domain weights (static, or updated by Sheared-LLaMA
dynamic batch loading, arXiv 2310.06694 Sec. 3.2). ``DomainSampler`` implements that draw.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file of objects (blank lines are skipped).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file has no record, or a line is not a JSON object (names file and line number).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file {path} does not exist")
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            records.append(rec)
    if not records:
        raise ValueError(f"JSONL file {path} is empty")
    return records


def pack_texts(
    texts: Iterable[str], tokenizer, seq_len: int, *, batch_size: int = 512, sep_token_id: int | None = None
) -> torch.Tensor:
    """Tokenise documents, join them with a separator (EOS) token and cut into full blocks.

    Stream: ``doc_0 EOS doc_1 EOS ... doc_{n-1} EOS``; blocks are consecutive ``seq_len`` slices of it and
    the incomplete tail is dropped. No special tokens besides the separator are added.

    Args:
        texts: the documents.
        tokenizer: an HF tokenizer (fast tokenizers encode each batch in parallel).
        seq_len: tokens per block T.
        batch_size: documents tokenised per call.
        sep_token_id: separator; default ``tokenizer.eos_token_id``.

    Returns:
        LongTensor [n_blocks, T].

    Raises:
        ValueError: ``seq_len`` < 1, no separator token, or fewer than ``seq_len`` tokens in total
            (names how many documents and tokens were packed).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    sep = tokenizer.eos_token_id if sep_token_id is None else sep_token_id
    if sep is None:
        raise ValueError("pack_texts: the tokenizer has no eos_token_id; pass sep_token_id")
    chunks: list[np.ndarray] = []
    n_docs = 0
    batch: list[str] = []

    def flush() -> None:
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for doc in ids:
            chunks.append(np.asarray(doc + [sep], dtype=np.int64))
        batch.clear()

    for text in texts:
        batch.append(text)
        n_docs += 1
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    n_blocks = len(stream) // seq_len
    if n_blocks < 1:
        raise ValueError(
            f"pack_texts: {n_docs} documents gave {len(stream)} tokens, fewer than one block of seq_len={seq_len}"
        )
    return torch.from_numpy(stream[: n_blocks * seq_len].reshape(n_blocks, seq_len).copy())


def normalise_domain_weights(
    weights: dict[str, float], domains: list[str], what: str = "weights"
) -> np.ndarray:
    """Validate domain weights and return them normalised to sum 1, as float64 [len(domains)] in that order.

    Raises:
        ValueError: a key that is not a domain, a domain without a weight, a negative or non-finite
            weight, or a zero sum (the message starts with ``what`` and names the domain).
    """
    for key in weights:
        if key not in domains:
            raise ValueError(f"{what}: unknown domain {key!r} in weights; domains are {domains}")
    for key in domains:
        if key not in weights:
            raise ValueError(
                f"{what}: weights lack domain {key!r}; give every domain a weight (0 to skip it)"
            )
    w = np.array([float(weights[k]) for k in domains], dtype=np.float64)
    bad = [k for k, v in zip(domains, w, strict=True) if not math.isfinite(v) or v < 0]
    if bad:
        raise ValueError(f"{what}: weights of {bad} must be finite and non-negative, got {weights}")
    if w.sum() <= 0:
        raise ValueError(f"{what}: weights must have a positive sum, got {weights}")
    return w / w.sum()


class DomainSampler:
    """Draw batches of packed blocks, each row from one domain chosen by the domain weights.

    ``batch(step)`` is a pure function of ``(seed, step, current weights)``: resuming at step s yields
    the same batches as an uninterrupted run (no hidden iterator state). Rows are drawn with replacement:
    domain ~ Categorical(weights), then a block uniformly within that domain.

    Args:
        blocks: domain -> LongTensor [n_d, T] (same T for every domain, n_d >= 1).
        domain_weights: domain -> weight >= 0 (normalised here; the prob_map of LLaMA-MoE).
        batch_size: rows per batch B.
        seed: sampling seed.

    Raises:
        ValueError: empty domain, mismatched block lengths, bad weights (names the domain).
    """

    def __init__(
        self, blocks: dict[str, torch.Tensor], domain_weights: dict[str, float], batch_size: int, seed: int
    ):
        if not blocks:
            raise ValueError("DomainSampler: no domains given")
        if batch_size < 1:
            raise ValueError(f"DomainSampler: batch_size must be >= 1, got {batch_size}")
        self.domains = sorted(blocks)
        lengths = {k: v.shape[1] for k, v in blocks.items() if v.dim() == 2}
        for k in self.domains:
            if blocks[k].dim() != 2 or blocks[k].shape[0] < 1:
                raise ValueError(
                    f"DomainSampler: domain {k!r} needs blocks of shape [n >= 1, T], got {tuple(blocks[k].shape)}"
                )
        if len(set(lengths.values())) != 1:
            raise ValueError(f"DomainSampler: block lengths differ between domains: {lengths}")
        self.blocks = {k: blocks[k].long() for k in self.domains}
        self.batch_size = batch_size
        self.seed = seed
        self.set_weights(domain_weights)

    @property
    def weights(self) -> dict[str, float]:
        """Current normalised domain weights."""
        return dict(zip(self.domains, self._w.tolist(), strict=True))

    def set_weights(self, new: dict[str, float]) -> None:
        """Replace the domain weights (e.g. after a dynamic-mixing update); normalised to sum 1."""
        self._w = normalise_domain_weights(new, self.domains, "DomainSampler")

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        """The batch for training step ``step``.

        Returns:
            (LongTensor [B, T] of token ids, list of B domain names, one per row).
        """
        rng = np.random.default_rng([self.seed, step])
        which = rng.choice(len(self.domains), size=self.batch_size, p=self._w)
        rows, names = [], []
        for d in which:
            name = self.domains[d]
            idx = int(rng.integers(self.blocks[name].shape[0]))
            rows.append(self.blocks[name][idx])
            names.append(name)
        return torch.stack(rows), names
