"""MoE-SFT's dynamic mixture in the sft stage (moelab.train.sft) on a tiny MoE: rounds, the update from the
measured gate loads, frozen routers, resume, bad input."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from test_train_mixture import dies_after_checkpoint
from tiny_folders import save_tiny_checkpoint, sentence, write_jsonl

from moelab.construct import dense_to_moe, random_split
from moelab.data.chat import encode_chat
from moelab.io import load_model, save_model
from moelab.models.materialise import VICUNA_V1_1_TEMPLATE
from moelab.train.config import TrainRunConfig
from moelab.train.launch import run_training

SETS = ("code", "math", "orca")


@pytest.fixture(scope="module")
def tiny_sft(tmp_path_factory):
    """A tiny 4-expert top-2 MoE folder (chat template set) and three chat data sets of 16 examples each."""
    root = tmp_path_factory.mktemp("sft_mixture")
    dense, tokenizer = load_model(save_tiny_checkpoint(root / "dense"))
    moe = dense_to_moe(dense, random_split(64, 4, seed=3, num_layers=2), top_k=2, router_type="softmax_topk",
                       gate_network="linear", balance_loss_weight=0.01, score_scale_factor=None, seed=1)  # fmt: skip
    tokenizer.chat_template = VICUNA_V1_1_TEMPLATE
    model_dir = save_model(moe, tokenizer, root / "moe")

    def chat(i, k):
        return {"messages": [{"role": "user", "content": sentence(i + 11 * k, 6 + 3 * k)},
                             {"role": "assistant", "content": sentence(2 * i + k, 4 + 2 * k)}]}  # fmt: skip

    data = {d: write_jsonl(root / f"{d}.jsonl", [chat(i, k) for i in range(16)]) for k, d in enumerate(SETS)}
    return model_dir, data


def sft_spec(tmp_path, name, model, data, mixture=None, **section):
    section = {"max_len": 64, "batch_size": 4, "steps": 6, "lr": 1e-2, "warmup_steps": 1, "save_every": 2,
               "domain_weights": dict.fromkeys(SETS, 1.0), **section}  # fmt: skip
    if mixture is not None:
        section["mixture"] = mixture
    cfg = TrainRunConfig.from_section(
        section, stage="sft", model=str(model), data={d: str(p) for d, p in data.items()},
        out_dir=str(tmp_path / name / "model"), log_csv=str(tmp_path / name / "log.csv"),
        ckpt_dir=str(tmp_path / name / "ckpt"), summary=str(tmp_path / name / "summary.json"), seed=5,
        device="cpu", dtype="float32", threads=2,
    )  # fmt: skip
    return cfg.write(tmp_path / name / "train_config.json")


MOE_SFT = {"strategy": "moe_sft", "eval_interval": 2, "dev_examples": 4, "eval_batches": 1}


def by_hand(weights, loads, eta=10.0, c=0.05):
    """MoE-SFT Sec. 3 written out with numpy: l_i = load / sum, delta_i = mean_j ||l_i - l_j||, then
    a = softmax(log w + eta delta), w = (1 - c) a + c / N."""
    names = sorted(loads)
    dist = np.array([np.asarray(loads[n], float) / sum(loads[n]) for n in names])
    delta = np.array(
        [np.mean([np.linalg.norm(dist[i] - dist[j]) for j in range(len(names))]) for i in range(len(names))]
    )
    z = np.log([weights[n] for n in names]) + eta * delta
    a = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    w = (1 - c) * a + c / len(names)
    return dict(zip(names, w / w.sum(), strict=True))


def test_rounds_update_the_weights_from_the_measured_gate_loads(tmp_path, tiny_sft):
    model, _ = load_model(tiny_sft[0])
    summary = run_training(sft_spec(tmp_path, "run", *tiny_sft, mixture=MOE_SFT, freeze_router=True))
    rounds = summary["rounds"]
    assert [r["step"] for r in rounds] == [0, 2, 4, 6]  # every eval_interval and after the last step
    assert rounds[0]["weights"] == pytest.approx(dict.fromkeys(SETS, 1 / 3))
    for prev, cur in zip(rounds[:2], rounds[1:3], strict=True):  # the updates at steps 2 and 4
        assert cur["weights"] == pytest.approx(by_hand(prev["weights"], cur["gate_loads"]), rel=1e-9)
    assert rounds[3]["weights"] == rounds[2]["weights"]  # no update after the last step
    assert [h["step"] for h in summary["weight_history"]] == [0, 2, 4]
    assert summary["final_weights"] == pytest.approx(rounds[2]["weights"])
    # a gate load counts each non-padding dev token once per expert in its top-2: 4 experts of the last layer
    tok = load_model(tiny_sft[0])[1]
    lines = {d: tiny_sft[1][d].read_text().splitlines()[-4:] for d in SETS}  # the dev split: the last 4
    dev_tokens = {
        d: sum(len(encode_chat(json.loads(x)["messages"], tok, 64)["input_ids"]) for x in lines[d])
        for d in SETS
    }
    for d in SETS:
        assert len(rounds[0]["gate_loads"][d]) == 4
        assert sum(rounds[0]["gate_loads"][d]) == 2 * dev_tokens[d]
    assert summary["dev_examples"] == dict.fromkeys(SETS, 4) and summary["examples"] == dict.fromkeys(
        SETS, 12
    )
    # exactly the routers' parameters were frozen: unchanged after training, while the experts moved
    trained, _ = load_model(tmp_path / "run" / "model")
    names = summary["frozen_parameters"]
    assert names and all(".mlp.router." in n for n in names)
    assert {n for n, _ in model.named_parameters() if ".router." in n} == set(names)
    before, after = dict(model.named_parameters()), dict(trained.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in names)
    experts = [n for n in before if ".mlp.experts." in n]
    assert experts and any(not torch.equal(before[n], after[n]) for n in experts)


def test_a_killed_dynamic_sft_run_resumes_to_the_same_stream(tmp_path, tiny_sft, monkeypatch):
    straight = run_training(sft_spec(tmp_path, "straight", *tiny_sft, mixture=MOE_SFT))
    with dies_after_checkpoint(monkeypatch, 4):
        run_training(sft_spec(tmp_path, "killed", *tiny_sft, mixture=MOE_SFT))
    resumed = run_training(sft_spec(tmp_path, "killed", *tiny_sft, mixture=MOE_SFT))
    assert resumed["resumed_from"].endswith("step-000004")
    assert resumed["rounds"] == straight["rounds"] and resumed["weight_history"] == straight["weight_history"]

    def log(name):
        with open(tmp_path / name / "log.csv", newline="") as fh:
            return [(r["loss"], r["weights"], r["domains"]) for r in csv.DictReader(fh)]

    assert log("killed") == log("straight")


@pytest.mark.parametrize("strategy", ["random_batch", "cycle", "sheared_llama"])
def test_baselines_run_and_their_weights_follow_their_rule(tmp_path, tiny_sft, strategy):
    summary = run_training(sft_spec(tmp_path, strategy, *tiny_sft, mixture={**MOE_SFT, "strategy": strategy}))
    history = [h["weights"] for h in summary["weight_history"]]
    assert len(history) == 3
    if strategy == "cycle":
        assert [max(w, key=w.get) for w in history] == ["code", "math", "orca"]
    elif strategy == "random_batch":
        assert all(sorted(w.values())[-1] == pytest.approx(1 / (1 + 2e-5)) for w in history[1:])
    else:  # reference = the step-0 dev losses: D = dev loss - ref, eta 1, c 1e-4
        r0, r2 = summary["rounds"][0], summary["rounds"][1]
        z = {d: math.log(1 / 3) + (r2["losses"][d] - r0["losses"][d]) for d in SETS}
        soft = {d: math.exp(v) / sum(math.exp(x) for x in z.values()) for d, v in z.items()}
        assert history[1] == pytest.approx({d: (1 - 1e-4) * soft[d] + 1e-4 / 3 for d in SETS}, rel=1e-6)


def test_bad_sft_mixture_input_fails_naming_it(tmp_path, tiny_sft):
    from moelab.mixture import check_mixture_spec

    dense_model, tok = load_model(save_tiny_checkpoint(tmp_path / "plain"))
    tok.chat_template = VICUNA_V1_1_TEMPLATE
    dense = save_model(dense_model, tok, tmp_path / "dense")
    with pytest.raises(ValueError, match="needs an MoE model's routing"):
        run_training(sft_spec(tmp_path, "dense", dense, tiny_sft[1], mixture=MOE_SFT))
    with pytest.raises(ValueError, match=r"'code' has 16 usable examples.*sft.mixture.dev_examples=16"):
        run_training(sft_spec(tmp_path, "big", *tiny_sft, mixture={**MOE_SFT, "dev_examples": 16}))
    assert not (tmp_path / "big" / "model").exists()
    with pytest.raises(ValueError, match=r"sft.mixture.strategy='doremi' is not one of"):
        check_mixture_spec({"strategy": "doremi"}, SETS, where="sft.mixture")
    with pytest.raises(ValueError, match=r"pretrain.mixture.strategy='moe_sft' is not one of"):
        check_mixture_spec({"strategy": "moe_sft"}, ["web"], where="pretrain.mixture")
    with pytest.raises(ValueError, match=r"sft.mixture.distance='kl'"):
        check_mixture_spec({"strategy": "moe_sft", "distance": "kl"}, SETS, where="sft.mixture")
    with pytest.raises(ValueError, match=r"sft.mixture: unknown key 'reference_loss'"):
        check_mixture_spec({"reference_loss": {}}, SETS, where="sft.mixture")
