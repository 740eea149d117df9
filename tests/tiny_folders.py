"""Folders shaped like the hub's, built offline for tests: a tiny model checkpoint and data set repos."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

WORDS = "the a of and to in is it that was for on are with as be at by this from or one had not but".split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer (whitespace split, unknown words -> <unk>) with an EOS token; no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, "<pad>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>"
    )


def save_tiny_checkpoint(out: Path, seed: int = 0) -> Path:
    """A hub-style model folder (config.json + model.safetensors + tokenizer files) of a tiny LLaMA."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,  # above the configs' sequence lengths (checked at DAG build)
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)


def sentence(i: int, n: int = 40) -> str:
    """A deterministic pseudo-sentence of ``n`` vocabulary words."""
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(n))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
