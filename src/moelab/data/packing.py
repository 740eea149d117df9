"""Tokenise + pack pretraining text into fixed-length blocks; read JSONL records.

LLaMA-MoE (arXiv 2406.16554, Sec. 4.1) packs SlimPajama into 4096-token sequences; each packed block is then
drawn from one domain by the domain weights (``moelab.mixture.DomainSampler``).
"""

from __future__ import annotations

import json
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


def encode_documents(
    texts: Iterable[str], tokenizer, *, batch_size: int = 512, sep_token_id: int | None = None
) -> list[np.ndarray]:
    """Tokenise documents, each followed by the separator (EOS) token: the pieces :func:`pack_texts` joins.

    Args: as :func:`pack_texts`.
    Returns: one int64 array ``[len(doc_i) + 1]`` per document, in order (no special tokens but the separator).
    Raises: ValueError if there is no separator token.
    """
    sep = tokenizer.eos_token_id if sep_token_id is None else sep_token_id
    if sep is None:
        raise ValueError("pack_texts: the tokenizer has no eos_token_id; pass sep_token_id")
    chunks: list[np.ndarray] = []
    batch: list[str] = []

    def flush() -> None:
        ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False)["input_ids"]
        for doc in ids:
            chunks.append(np.asarray(doc + [sep], dtype=np.int64))
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return chunks


def pack_documents(chunks: list[np.ndarray], seq_len: int) -> torch.Tensor:
    """Join encoded documents (:func:`encode_documents`) and cut the stream into full ``seq_len`` blocks.

    Returns: LongTensor [n_blocks, T] (block b = stream[b*T : (b+1)*T]; the incomplete tail is dropped).
    Raises: ValueError if ``seq_len`` < 1 or the documents hold fewer than ``seq_len`` tokens.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    stream = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    n_blocks = len(stream) // seq_len
    if n_blocks < 1:
        raise ValueError(
            f"pack_texts: {len(chunks)} documents gave {len(stream)} tokens, fewer than one block of seq_len={seq_len}"
        )
    return torch.from_numpy(stream[: n_blocks * seq_len].reshape(n_blocks, seq_len).copy())


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
    chunks = encode_documents(texts, tokenizer, batch_size=batch_size, sep_token_id=sep_token_id)
    return pack_documents(chunks, seq_len)
