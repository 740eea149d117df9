"""Calibration data (one home): seeded samples of packed token blocks for construction and compression.

Construction (co-activation, gradient importance, k-means router init: LLaMA-MoE sec. 3, LLaMA-MoE v2) draws a
token budget shared by the pretraining domains (:func:`calibration_blocks`); compression (Block Drop and the
pruning / quantisation methods: the MoE compression paper's 128 calibration sequences) draws a number of blocks
from one calibration text (:func:`sample_blocks`); LoRA recovery after compression trains on the documents of that
text that no calibration block touches (:func:`calibration_and_recovery`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from moelab.data.packing import encode_documents, pack_documents, pack_texts


def sample_blocks(
    texts: Iterable[str],
    tokenizer,
    seq_len: int,
    num_blocks: int,
    generator: torch.Generator,
    *,
    keep_order: bool = True,
    name: str = "calibration text",
) -> torch.Tensor:
    """Pack documents into blocks of ``seq_len`` tokens and draw ``num_blocks`` of them without replacement.

    Args:
        texts: documents, packed in order (``moelab.data.packing.pack_texts``).
        tokenizer: HF tokenizer of the model being calibrated.
        seq_len: tokens per block T.
        num_blocks: blocks to draw (all of them if fewer pack).
        generator: the seeded torch generator the draw (one ``randperm``) consumes.
        keep_order: return the drawn blocks in packing order (construction); False keeps the draw order
            (what the compress stage has always used: same seed, same blocks in the same order).
        name: what the texts are, for the error message.
    Returns: blocks [min(num_blocks, packed), T] int64.
    Raises: ValueError if the texts pack into no full block.
    """
    packed = pack_texts(texts, tokenizer, seq_len)
    return packed[_draw(packed, seq_len, num_blocks, generator, keep_order, name)]


def _draw(packed: torch.Tensor, seq_len: int, num_blocks: int, generator, keep_order: bool, name: str):
    """Indices of the blocks drawn from ``packed`` [n, T] (one ``randperm`` of the generator)."""
    if len(packed) == 0:
        raise ValueError(f"calibration {name} packs into no block of seq_len={seq_len} tokens")
    pick = torch.randperm(len(packed), generator=generator)[:num_blocks]
    return pick.sort().values if keep_order else pick


def calibration_and_recovery(
    texts: Iterable[str], tokenizer, seq_len: int, num_blocks: int, generator: torch.Generator
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Calibration blocks, and the documents of the same text that share no token with them (recovery text).

    The calibration blocks are exactly ``sample_blocks(texts, tokenizer, seq_len, num_blocks, generator,
    keep_order=False)`` (same packing, same draw), so a recipe with a recovery step calibrates on the same blocks
    as one without. A document is left out of the recovery text when any of its tokens (or its separator) lies
    in a drawn block, so recovery never trains on, or measures its held-out loss on, text the compression
    methods calibrated on.

    Args: as :func:`sample_blocks`.
    Returns: (blocks [min(num_blocks, packed), T] int64, the other documents' token ids: one LongTensor
        [len(doc) + 1] per document, EOS last, in file order).
    Raises: ValueError if the texts pack into no full block.
    """
    chunks = encode_documents(texts, tokenizer)
    packed = pack_documents(chunks, seq_len)
    pick = _draw(packed, seq_len, num_blocks, generator, False, "calibration text")
    ends = np.cumsum([len(c) for c in chunks])
    starts = ends - np.asarray([len(c) for c in chunks])
    touched = np.zeros(len(chunks), dtype=bool)
    for b in pick.tolist():  # block b covers stream positions [b*T, (b+1)*T)
        lo, hi = b * seq_len, (b + 1) * seq_len
        touched[np.searchsorted(ends, lo, side="right") : np.searchsorted(starts, hi, side="left")] = True
    return packed[pick], [torch.from_numpy(c) for c, t in zip(chunks, touched, strict=True) if not t]


def calibration_blocks(
    texts: dict[str, list[str]], tokenizer, seq_len: int, num_tokens: int, seed: int
) -> tuple[torch.Tensor, list[str]]:
    """A seeded sample of packed blocks, the token budget shared equally by the domains.

    Args:
        texts: domain -> documents (e.g. the `text` fields of resources/data/pretrain/<domain>.jsonl).
        tokenizer: HF tokenizer of the dense model.
        seq_len: tokens per block T.
        num_tokens: calibration budget in tokens; ceil(num_tokens / T) blocks are drawn in total, at most
            ceil(blocks / domains) from each domain (fewer if a domain packs into fewer blocks).
        seed: sampling seed.
    Returns: (blocks [n, T] int64, domain of each block), domains in sorted order.
    Raises: ValueError if num_tokens < 1, `texts` is empty, or a domain packs into no full block.
    """
    if num_tokens < 1:
        raise ValueError(f"calibration budget num_tokens={num_tokens} must be >= 1")
    if not texts:
        raise ValueError("calibration_blocks: no calibration text given (empty domain mapping)")
    want = -(-num_tokens // seq_len)
    per_domain = -(-want // len(texts))
    gen = torch.Generator().manual_seed(int(seed))
    blocks, domains = [], []
    for domain in sorted(texts):
        picked = sample_blocks(texts[domain], tokenizer, seq_len, per_domain, gen, name=f"domain {domain!r}")
        blocks.append(picked)
        domains += [domain] * len(picked)
    return torch.cat(blocks)[:want], domains[:want]


def batches(blocks: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split blocks [n, T] into consecutive batches [<=batch_size, T]."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    return list(blocks.split(batch_size))
