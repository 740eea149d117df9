"""Block Drop: an identity block scores 1, is chosen, and removing it leaves the logits unchanged."""

import pytest
import torch
from conftest import tiny_llama

from moelab.compress import block_drop, block_drop_scores, block_similarity, choose_blocks, drop_blocks


def make_identity(block):
    """Zero the attention output and FFN down projections: the block then returns its input."""
    with torch.no_grad():
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()


def batches(vocab=256):
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, vocab, (2, 12), generator=g)} for _ in range(2)]


def test_identity_block_is_dropped_and_logits_unchanged():
    model = tiny_llama(num_layers=4)
    make_identity(model.model.layers[2])
    ids = batches()[0]["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    scores = block_drop_scores(model, batches())
    assert scores.shape == (4,)
    assert scores[2].item() == pytest.approx(1.0, abs=1e-6)
    result = block_drop(model, batches(), n_drop=1)
    assert result["dropped"] == [2]
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_generate_with_cache_after_drop_matches_no_cache():
    model = tiny_llama(num_layers=4)
    drop_blocks(model, [0, 3])
    ids = torch.tensor([[5, 7, 9, 11]])
    with_cache = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True)
    without = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without)


def test_similarity_hand_computed():
    h0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h1 = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # cos = 1/sqrt(2) and 1
    h2 = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])
    s = block_similarity([h0, h1, h2])
    torch.testing.assert_close(s, torch.tensor([(2**-0.5 + 1) / 2, (-(2**-0.5) + 1) / 2]))
    window = block_similarity([h0, h1, h2], n=2)  # cos(h0, h2) = -1 and 1 -> 0
    torch.testing.assert_close(window, torch.tensor([0.0]))


def test_choose_blocks_modes_and_errors():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.95])
    assert choose_blocks(scores, 2) == [1, 3]
    assert choose_blocks(torch.tensor([0.2, 0.8, 0.3]), 2, mode="consecutive") == [1, 2]
    with pytest.raises(ValueError, match="n_drop"):
        choose_blocks(scores, 4)
    with pytest.raises(ValueError, match="unknown block drop mode"):
        choose_blocks(scores, 1, mode="sideways")
    with pytest.raises(ValueError, match="cannot drop"):
        drop_blocks(tiny_llama(), [0, 1])
