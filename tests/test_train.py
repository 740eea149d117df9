"""Training loop: LR schedule values, checkpoint resume gives the uninterrupted run's exact weights."""

import csv

import pytest
import torch
from conftest import tiny_llama

from moelab.train import TrainConfig, latest_checkpoint, lr_at, train


class RandomTokens:
    """Deterministic batches: a function of (seed, step) only, like the pretraining sampler."""

    def __init__(self, seed=0, vocab=256):
        self.seed, self.vocab = seed, vocab

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 1000 + step)
        ids = torch.randint(0, self.vocab, (2, 16), generator=g)
        return {"input_ids": ids, "labels": ids.clone(), "domains": ["a", "b"]}

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = state["seed"]


def test_lr_schedule_warmup_then_cosine_to_floor():
    cfg = TrainConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.5)
    assert lr_at(1, cfg) == pytest.approx(1.0)
    assert lr_at(2, cfg) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(6, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: mid point
    assert lr_at(10, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize("key,value", [("steps", 0), ("steps", -3), ("lr", 0.0), ("save_every", 0)])
def test_bad_train_config_names_the_key(key, value):
    kwargs = {"steps": 4, "lr": 1e-3, key: value}
    with pytest.raises(ValueError, match=key):
        TrainConfig(**kwargs)


class Kill(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    cfg = TrainConfig(steps=6, lr=1e-2, warmup_steps=1, save_every=2, seed=3)
    straight = tiny_llama()
    train(straight, RandomTokens(), cfg, tmp_path / "a", tmp_path / "a" / "log.csv")

    def kill_at_4(step):
        if step == 4:
            raise Kill

    first = tiny_llama()
    with pytest.raises(Kill):
        train(first, RandomTokens(), cfg, tmp_path / "b", tmp_path / "b" / "log.csv", on_checkpoint=kill_at_4)
    # a half-written checkpoint must be ignored
    (tmp_path / "b" / "step-000006").mkdir()
    assert latest_checkpoint(tmp_path / "b").name == "step-000004"
    resumed = tiny_llama()
    summary = train(resumed, RandomTokens(), cfg, tmp_path / "b", tmp_path / "b" / "log.csv")
    assert summary["resumed_from"].endswith("step-000004")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with open(tmp_path / "a" / "log.csv") as fa, open(tmp_path / "b" / "log.csv") as fb:
        la, lb = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert [int(r["step"]) for r in lb] == [1, 2, 3, 4, 5, 6]
    assert int(lb[-1]["tokens"]) == 6 * 2 * 16


def test_training_lowers_the_loss_on_a_repeated_batch(tmp_path):
    class Same(RandomTokens):
        def batch(self, step):
            return super().batch(0)

    cfg = TrainConfig(steps=15, lr=3e-3, warmup_steps=0, save_every=15, weight_decay=0.0)
    train(tiny_llama(), Same(), cfg, tmp_path / "c", tmp_path / "log.csv")
    with open(tmp_path / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[-1]["lm_loss"]) < float(rows[0]["lm_loss"]) - 1.0


def test_checkpoints_of_another_run_are_never_resumed(tmp_path):
    cfg = TrainConfig(steps=4, lr=1e-2, save_every=2)
    train(tiny_llama(), RandomTokens(), cfg, tmp_path / "ck", tmp_path / "ck" / "log.csv", run_id="run-a")
    assert latest_checkpoint(tmp_path / "ck").name == "step-000004"
    again = train(
        tiny_llama(), RandomTokens(), cfg, tmp_path / "ck", tmp_path / "ck" / "log.csv", run_id="run-a"
    )
    assert again["resumed_from"].endswith("step-000004")
    other = train(
        tiny_llama(), RandomTokens(), cfg, tmp_path / "ck", tmp_path / "ck" / "log.csv", run_id="run-b"
    )
    assert other["resumed_from"] is None
    assert (tmp_path / "ck" / "RUN").read_text().strip() == "run-b"


def test_sft_leaves_out_examples_truncated_before_any_assistant_token(tmp_path):
    """A batch of examples without assistant tokens within max_len has a 0/0 loss: such examples are dropped
    and counted, and a data set left without any fails naming it and max_len."""
    from tiny_folders import sentence, tiny_tokenizer, write_jsonl

    from moelab.models.materialise import VICUNA_V1_1_TEMPLATE
    from moelab.train.sft import encode_datasets

    tok = tiny_tokenizer()
    tok.chat_template = VICUNA_V1_1_TEMPLATE

    def chat(user_words):
        return {"messages": [{"role": "user", "content": sentence(1, user_words)},
                             {"role": "assistant", "content": "the end"}]}  # fmt: skip

    data = {
        "mixed": write_jsonl(tmp_path / "mixed.jsonl", [chat(4), chat(200), chat(6)]),
        "long": write_jsonl(tmp_path / "long.jsonl", [chat(200), chat(300)]),
    }
    encoded, dropped = encode_datasets({"mixed": data["mixed"]}, tok, max_len=64)
    assert dropped == {"mixed": 1} and len(encoded["mixed"]) == 2
    assert all(int((e["labels"] != -100).sum()) == 3 for e in encoded["mixed"])  # "the end" + </s>
    with pytest.raises(ValueError, match=r"'long'.*none of its 2 examples.*max_len=64"):
        encode_datasets(data, tok, max_len=64)
