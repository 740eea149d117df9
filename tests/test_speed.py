"""Generation speed harness: the timed greedy loop is a correct decode, rates and ratios, round-robin order,
peak memory of a fresh process, FLOPs per token of a 1/2 MoE (moelab.evaluate.speed)."""

import math

import pytest
import torch
from conftest import tiny_llama
from tiny_folders import tiny_tokenizer

from moelab.construct import dense_to_moe, random_split
from moelab.evaluate import speed
from moelab.io import save_model


def tiny_moe(num_experts=4, top_k=2, vocab=256):
    """The tiny LLaMA (hidden 64, FFN 128, 2 layers) cut into ``num_experts`` random experts, top_k routed."""
    return dense_to_moe(
        tiny_llama(vocab=vocab),
        random_split(128, num_experts, seed=5, num_layers=2),
        top_k=top_k,
        router_type="softmax_topk",
        gate_network="linear",
        balance_loss_weight=0.0,
        seed=1,
    ).eval()


@pytest.mark.parametrize("make", [tiny_llama, tiny_moe], ids=["dense", "moe"])
def test_timed_decode_loop_equals_hf_greedy_generate(make):
    model = make()
    torch.manual_seed(7)
    with (
        torch.no_grad()
    ):  # larger weights than the default init, so greedy decoding does not just copy its input
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 if p is model.get_input_embeddings().weight else 0.3)
    model.generation_config.eos_token_id = None  # never stop early: compare all new_tokens tokens
    model.generation_config.pad_token_id = 0
    result = speed.generation_speed(
        model, prompt_len=12, new_tokens=10, repeats=1, warmup=0, return_tokens=True
    )
    ids = speed.random_prompt(model, 12, seed=0)
    expected = model.generate(ids, max_new_tokens=10, do_sample=False)[0, 12:].tolist()
    assert len(result["tokens"]) == 10
    assert result["tokens"] == expected
    assert len(set(expected)) > 1  # a decode that ignored its input would repeat one token


def test_default_new_tokens_is_the_prompt_length_and_seeded_prompt():
    model = tiny_llama()
    r = speed.generation_speed(model, prompt_len=6, repeats=1, warmup=0, return_tokens=True)
    assert r["new_tokens"] == 6 and len(r["tokens"]) == 6 and r["repeats"] == 1
    assert torch.equal(speed.random_prompt(model, 6, seed=3), speed.random_prompt(model, 6, seed=3))
    assert not torch.equal(speed.random_prompt(model, 6, seed=3), speed.random_prompt(model, 6, seed=4))


def test_rates_come_from_medians_of_the_clock(monkeypatch):
    """Fake clock advancing 0.25 s per reading: every timed region lasts exactly 0.25 s."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(speed, "_clock", lambda: 0.25 * next(ticks))
    r = speed.generation_speed(tiny_llama(), prompt_len=8, new_tokens=5, repeats=2)
    assert r["prefill_s"] == 0.25 and r["prefill_tokens_per_s"] == 32.0
    assert r["decode_per_token_s"] == 0.25 and r["decode_tokens_per_s"] == 4.0


def test_compare_records_positive_rates_and_parent_ratios_are_one():
    models = {"dense": tiny_llama(), "moe": tiny_moe()}
    records = speed.compare_speed(models, prompt_lens=[4, 8], repeats=2)
    assert [(r["model"], r["prompt_len"], r["new_tokens"]) for r in records] == [
        ("dense", 4, 4),
        ("moe", 4, 4),
        ("dense", 8, 8),
        ("moe", 8, 8),
    ]
    for r in records:
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "prefill_speedup", "decode_speedup"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
    for parent, child in (records[0:2], records[2:4]):
        assert parent["prefill_speedup"] == 1.0 and parent["decode_speedup"] == 1.0
        assert child["decode_speedup"] == child["decode_tokens_per_s"] / parent["decode_tokens_per_s"]
        assert child["prefill_speedup"] == child["prefill_tokens_per_s"] / parent["prefill_tokens_per_s"]


def test_compare_interleaves_models_round_robin(monkeypatch):
    calls = []
    models = {"a": tiny_llama(seed=0), "b": tiny_llama(seed=1), "c": tiny_llama(seed=2)}
    name = {id(m): k for k, m in models.items()}

    def fake_once(model, ids, new_tokens):
        calls.append((name[id(model)], ids.shape[1]))
        return 0.1, [0.01] * (new_tokens - 1), [0] * new_tokens

    monkeypatch.setattr(speed, "_generate_once", fake_once)
    speed.compare_speed(models, prompt_lens=[3, 5], repeats=2, warmup=1)
    rounds = 1 + 2
    assert calls == [(k, n) for n in (3, 5) for _ in range(rounds) for k in ("a", "b", "c")]


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_prompt_len_is_named(bad):
    with pytest.raises(ValueError, match="prompt_len"):
        speed.generation_speed(tiny_llama(), prompt_len=bad)
    with pytest.raises(ValueError, match="prompt_len"):
        speed.compare_speed({"m": tiny_llama()}, prompt_lens=[4, bad])
    with pytest.raises(ValueError, match="prompt_len"):
        speed.peak_memory_mb("unused", prompt_len=bad)


def test_bad_new_tokens_and_model_without_config():
    with pytest.raises(ValueError, match="new_tokens"):
        speed.generation_speed(tiny_llama(), prompt_len=4, new_tokens=1)
    with pytest.raises(ValueError, match="config"):
        speed.generation_speed(torch.nn.Linear(2, 2), prompt_len=4)
    with pytest.raises(ValueError, match="config"):
        speed.flops_per_token(torch.nn.Linear(2, 2))


def test_peak_memory_of_a_fresh_process(tmp_path):
    small = save_model(tiny_llama(vocab=len(tiny_tokenizer())), tiny_tokenizer(), tmp_path / "small")
    r = speed.peak_memory_mb(small, prompt_len=8)
    assert r["device"] == "cpu" and r["new_tokens"] == 8
    assert 0 < r["before_load_mb"] <= r["after_load_mb"] <= r["peak_mb"]
    # 64k vocab x 64 hidden fp32 = 16 MiB more weights: the after-load RSS must grow by most of that
    big = save_model(tiny_llama(vocab=65536), tiny_tokenizer(), tmp_path / "big")
    ballast = torch.ones(512 * 2**18)  # 512 MiB resident in this (parent) process
    parent_rss = speed._rss_kib() / 1024
    rb = speed.peak_memory_mb(big, prompt_len=8)
    assert rb["after_load_mb"] - r["after_load_mb"] > 12
    # the child's peak is its own, not the parent's (ru_maxrss would carry the parent's across fork + exec)
    assert rb["peak_mb"] < parent_rss - 256, (rb, parent_rss)
    del ballast


def test_flops_per_token_of_a_half_active_moe_hand_computed():
    # tiny LLaMA: vocab 256, hidden 64, FFN 128, 2 layers, 4 heads / 2 KV heads (head_dim 16), tied embeddings
    attn = 64 * 64 + 2 * (64 * 32) + 64 * 64  # q, k, v, o = 12288
    ffn = 3 * 64 * 128  # gate, up, down = 24576
    norms = 2 * 64
    per_layer = attn + ffn + norms
    dense_params = (
        2 * per_layer + 64 + 256 * 64
    )  # + final norm + LM head (= the tied embedding, counted once)
    dense = speed.flops_per_token(tiny_llama())
    assert dense == 2 * dense_params == 180864
    # 1 of 2 experts active: half of each FFN is idle; each layer adds a 64 -> 2 linear router
    moe = speed.flops_per_token(tiny_moe(num_experts=2, top_k=1))
    assert moe == dense - 2 * (2 * ffn // 2) + 2 * (2 * 64 * 2) == 132224
    # attention's sequence term: 2 layers x 4 heads x 16 dims x 2 matmuls x 2 FLOPs per token attended to
    assert speed.flops_per_token(tiny_llama(), context_len=100) == dense + 4 * 2 * 4 * 16 * 100


def test_machine_info_names_cpu_threads_torch_and_load():
    info = speed.machine_info()
    assert info["cpu"] and info["torch"] == torch.__version__ and info["torch_threads"] >= 1
    line = speed.format_machine(info)
    assert "torch" in line and "load average" in line
