"""Instruction tuning: chat template, loss on assistant tokens only, data sets mixed by weights.

LLaMA-MoE v2 sec. "Two-stage post-training" and MoE-SFT (arXiv 2406.11256) train on assistant tokens
only; the demo uses a static (uniform by default) mixture of the instruction data sets.
"""

from __future__ import annotations

from pathlib import Path

from moelab.data.chat import IGNORE_INDEX, encode_chat
from moelab.data.packing import read_jsonl
from moelab.io import load_model
from moelab.mixture import MixtureSampler
from moelab.train.config import TrainRunConfig
from moelab.train.loop import SamplerSource, train_and_save


class SFTSource(SamplerSource):
    """Batches of padded chat examples from :class:`moelab.mixture.MixtureSampler` (stateful, resumable)."""

    def batch(self, step: int) -> dict:
        return self.sampler.next_batch()


def encode_datasets(data: dict[str, Path], tokenizer, max_len: int) -> tuple[dict[str, list[dict]], dict]:
    """Encode every chat example of every data set (``messages`` field) with assistant-only labels.

    An example whose assistant tokens all fall beyond ``max_len`` has nothing to learn from (a batch of
    only such examples has a 0/0 loss); it is left out and counted.

    Returns:
        (data set -> encoded examples, data set -> examples left out).

    Raises:
        ValueError: a data set with no example that keeps an assistant token within ``max_len`` (names it).
    """
    encoded, dropped = {}, {}
    for d, p in data.items():
        rows = [encode_chat(r["messages"], tokenizer, max_len) for r in read_jsonl(p)]
        encoded[d] = [e for e in rows if bool((e["labels"] != IGNORE_INDEX).any())]
        dropped[d] = len(rows) - len(encoded[d])
        if not encoded[d]:
            raise ValueError(
                f"SFT data set {d!r} ({p}): none of its {len(rows)} examples keeps an assistant token within "
                f"max_len={max_len} tokens; raise sft.max_len or leave the data set out (weight 0)"
            )
    return encoded, dropped


def run_sft(cfg: TrainRunConfig) -> dict:
    """Instruction-tune ``cfg.model`` on ``cfg.data`` (chat examples) as ``cfg`` says, save to ``cfg.out_dir``.

    Data sets with weight 0 are not read (two-stage post-training: each stage draws from its own sets).

    Raises:
        ValueError: a data set left without an example that keeps an assistant token (names it).
    """
    model, tokenizer = load_model(Path(cfg.model), dtype=cfg.dtype, device=cfg.device)
    weights = {d: w for d, w in cfg.domain_weights.items() if w > 0}  # a stage's unused sets: not read
    encoded, dropped = encode_datasets(
        {d: Path(p) for d, p in cfg.data.items() if d in weights}, tokenizer, cfg.max_len
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampler = MixtureSampler(encoded, weights, cfg.batch_size, cfg.seed, pad_id)
    summary = train_and_save(model, tokenizer, SFTSource(sampler), cfg)
    summary["examples"] = {d: len(v) for d, v in encoded.items()}
    summary["examples_truncated_away"] = dropped  # no assistant token within max_len
    return summary
