"""Shared fixtures: tiny seeded LLaMA models (hidden 64, 2-4 layers) for fast tests."""

import os

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


# The tiny LLaMA shape every unit test uses (STYLE.md: hidden 32-64, widths multiples of 16, 2 layers).
TINY = dict(
    vocab_size=256,
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def tiny_llama(num_layers: int = 2, vocab: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A seeded random LLaMA of shape ``TINY`` (tied embeddings, 256 positions)."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        **{**TINY, "vocab_size": vocab, "num_hidden_layers": num_layers},
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture
def tiny_model():
    return tiny_llama()
