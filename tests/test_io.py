"""Checkpoint folder I/O: atomic save, load errors, parameter counts."""

import pytest
import torch
from conftest import tiny_llama
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from moelab.construct import attention_moe_from_dense, dense_to_moe, random_split
from moelab.io import count_parameters, load_model, save_model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"t{i}": i for i in range(256)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")))


def test_active_parameters_count_top_k_of_routed_experts():
    dense = tiny_llama()
    moe = dense_to_moe(dense, random_split(128, 4, 0, 2), top_k=2, router_type="noisy_topk",
                       gate_network="linear", balance_loss_weight=0.01, seed=0)  # fmt: skip
    experts = sum(p.numel() for n, p in moe.named_parameters() if ".mlp.experts." in n)
    counts = count_parameters(moe)
    assert experts == 2 * 3 * 64 * 128  # 2 layers x (gate, up, down) x hidden x intermediate
    assert counts["active"] == counts["total"] - experts // 2
    dense_total = sum(p.numel() for p in dense.parameters())
    assert count_parameters(dense) == {"total": dense_total, "active": dense_total}


@pytest.mark.parametrize("split", [1, 2])
def test_active_parameters_count_top_k_of_attention_experts(split):
    dense = tiny_llama()
    moe = attention_moe_from_dense(dense, top_k=1, seed=0, expert_split=split)
    e_a = moe.config.num_attention_experts
    projs = ("q_proj", "o_proj") + (("k_proj", "v_proj") if split == 1 else ())
    attn = sum(p.numel() for n, p in moe.named_parameters() if any(f"self_attn.{x}." in n for x in projs))
    counts = count_parameters(moe)
    assert e_a == moe.config.num_key_value_heads * split
    assert counts["active"] == counts["total"] - int(attn * (1 - 1 / e_a))


def test_save_load_round_trip_and_errors(tmp_path):
    moe = dense_to_moe(tiny_llama(), random_split(128, 4, 0, 2), top_k=2, router_type="noisy_topk",
                       gate_network="mlp", balance_loss_weight=0.01, seed=0)  # fmt: skip
    save_model(moe, tiny_tokenizer(), tmp_path / "m")
    assert not (tmp_path / "m.tmp").exists()
    loaded, tok = load_model(tmp_path / "m")
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, moe.eval()(input_ids=ids).logits)
    assert tok.convert_tokens_to_ids("t7") == 7
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nothing")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        load_model(tmp_path / "m")


def test_truncated_weights_fail_naming_the_file(tmp_path):
    save_model(tiny_llama(), tiny_tokenizer(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"damaged file {weights}: .* truncated; delete {weights}"):
        load_model(tmp_path / "m")
