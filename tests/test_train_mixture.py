"""CPT with a data mixture: evaluation rounds, dynamic weights, exact resume after a kill, per-domain logs."""

import contextlib
import csv
import json
import math

import pytest
import torch
from test_train_dist import pretrain_spec
from tiny_folders import save_tiny_checkpoint, sentence, write_jsonl

import moelab.train.loop as loop
from moelab.train.launch import run_training
from moelab.train.loop import domain_row_losses


class Kill(Exception):
    pass


@contextlib.contextmanager
def dies_after_checkpoint(monkeypatch, step: int):
    """Inside the block, training stops (raises Kill, checked) right after saving checkpoint ``step``: the state
    a kill -9 there leaves. The real save is restored after the block."""
    real = loop.save_checkpoint

    def save_then_die(ckpt_dir, at, *args, **kwargs):
        real(ckpt_dir, at, *args, **kwargs)
        if at == step:
            raise Kill

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    try:
        with pytest.raises(Kill):
            yield
    finally:
        monkeypatch.setattr(loop, "save_checkpoint", real)


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def tiny_run(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "moe")
    data = {
        d: write_jsonl(tmp_path / f"{d}.jsonl", [{"text": sentence(i + 7 * k)} for i in range(40)])
        for k, d in enumerate("ab")
    }
    return model, data


def spec(tmp_path, name, model, data, **section):
    # sheared_llama with a reference far below b's loss and far above a's: b must gain weight
    mixture = {"strategy": "sheared_llama", "eval_interval": 2, "reference_loss": {"a": 99.0, "b": 0.0}}
    path = pretrain_spec(tmp_path, name, model, data, steps=6, mixture=mixture, **section)
    cfg = json.loads(path.read_text())
    cfg["rounds_csv"] = str(tmp_path / name / "rounds.csv")
    path.write_text(json.dumps(cfg))
    return path


def test_dynamic_run_moves_weight_to_the_domain_above_its_reference(tmp_path, tiny_run):
    summary = run_training(spec(tmp_path, "run", *tiny_run))
    rounds = rows(tmp_path / "run" / "rounds.csv")
    assert sorted({int(r["step"]) for r in rounds}) == [0, 2, 4, 6]  # every eval_interval and after the last
    w = {(int(r["step"]), r["domain"]): float(r["weight"]) for r in rounds}
    assert w[(0, "a")] == pytest.approx(0.5) and w[(2, "b")] > 0.99  # l_a - 99 << 0: a falls to the c/K floor
    assert w[(4, "a")] == pytest.approx(1e-4 / 2, rel=1e-3)  # sheared_llama's floor c/K, c = 1e-4, K = 2
    assert summary["final_weights"]["b"] == pytest.approx(w[(6, "b")])
    log = rows(tmp_path / "run" / "log.csv")
    assert (
        log[0]["weights"] == "a=0.5 b=0.5" and log[-1]["weights"] == "a=0.0001 b=1.0"
    )  # 4 digits: c/K = 5e-5
    cell = dict(kv.split("=") for kv in log[0]["domain_loss"].split())
    assert set(cell) <= {"a", "b"} and all(0 < float(v) < 20 for v in cell.values())


def test_a_killed_dynamic_run_resumes_to_the_same_weights_and_loss(tmp_path, tiny_run, monkeypatch):
    run_training(spec(tmp_path, "straight", *tiny_run))
    with dies_after_checkpoint(monkeypatch, 4):
        run_training(spec(tmp_path, "killed", *tiny_run))
    resumed = run_training(spec(tmp_path, "killed", *tiny_run))
    assert resumed["resumed_from"].endswith("step-000004")
    assert rows(tmp_path / "killed" / "rounds.csv") == rows(tmp_path / "straight" / "rounds.csv")
    a, b = rows(tmp_path / "straight" / "log.csv"), rows(tmp_path / "killed" / "log.csv")
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and [r["weights"] for r in a] == [
        r["weights"] for r in b
    ]


def test_a_dynamic_mixture_without_a_reference_for_a_domain_fails_naming_it(tmp_path, tiny_run):
    path = spec(tmp_path, "bad", *tiny_run)
    cfg = json.loads(path.read_text())
    cfg["mixture"]["reference_loss"] = {"a": 1.0}
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'b'"):
        run_training(path)
    assert not (tmp_path / "bad" / "model").exists()


def test_domain_row_losses_by_hand():
    V = 8
    logits = torch.zeros(3, 4, V)  # uniform predictions: ln V per token
    logits[2, :, 5] = 100.0  # row 2 predicts token 5 with certainty
    labels = torch.full((3, 4), 5)
    labels[1, 1:3] = -100  # row 1 scores only its last target
    out = domain_row_losses(logits, labels, ["x", "x", "y"])
    assert out["x"] == pytest.approx(math.log(V))
    assert out["y"] == pytest.approx(0.0, abs=1e-6)
