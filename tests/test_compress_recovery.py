"""LoRA recovery after compression: the held-out loss falls, only the targets change, pruned zeros stay zero, the
merged model is a plain checkpoint, bad parameters are named before anything runs, same seed same weights, and the
recovery text shares no token with the calibration blocks."""

import numpy as np
import pytest
import torch
from conftest import tiny_llama, tiny_softmax_moe
from peft.tuners.lora import LoraLayer, LoraModel, ParamWrapper

from moelab.compress.recipe import check_order, check_recipes, check_step
from moelab.compress.recovery import pack_recovery
from moelab.compress.registry import run_recipe
from moelab.data.calibration import calibration_and_recovery, sample_blocks
from moelab.models import LlamaMoEForCausalLM

EOS = 255


def documents(n=48, seed=0):
    """Learnable recovery text: every document walks one fixed random permutation of the tokens 0..254 from a
    random start (next token = perm[token]), so a model can learn it; EOS last."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(EOS, generator=torch.Generator().manual_seed(123))
    docs = []
    for _ in range(n):
        t, doc = int(torch.randint(0, EOS, (1,), generator=g)), []
        for _ in range(int(torch.randint(24, 64, (1,), generator=g))):
            doc.append(t)
            t = int(perm[t])
        docs.append(torch.tensor([*doc, EOS]))
    return docs


def calib():
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 256, (4, 16), generator=g)} for _ in range(2)]


LORA = {
    "method": "lora_recovery",
    "steps": 12,
    "lr": 1e-2,
    "r": 4,
    "alpha": 8,
    "batch_size": 4,
    "seq_len": 32,
}
LORA = {**LORA, "heldout_sequences": 4}


def recover(model, *before, recovery=None, **params):
    records = run_recipe(model, calib(), [*before, {**LORA, **params}], recovery=recovery or documents())
    return records[-1]["report"]


def test_recovery_lowers_the_heldout_loss_after_block_drop():
    model = tiny_softmax_moe(num_layers=4)
    report = recover(model, {"method": "block_drop", "n_drop": 1}, steps=30)
    assert model.config.num_hidden_layers == 3
    assert report["loss_after"] < report["loss_before"] - 0.1, report
    assert report["train_loss"][-1] < report["train_loss"][0]
    assert report["targets"] == dict.fromkeys(["q_proj", "k_proj", "v_proj", "o_proj"], 3) | dict.fromkeys(
        ["gate_proj", "up_proj", "down_proj"], 3
    )
    assert report["steps"] == 30 and report["tokens"] == 30 * 4 * 32 and report["heldout_blocks"] == 4


def test_only_the_targets_change_router_and_embeddings_bitwise_unchanged():
    model = tiny_softmax_moe(num_shared_experts=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recover(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    leaf = {k.removesuffix(".weight").rsplit(".", 1)[-1] for k in changed}
    assert leaf == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    for k in before:  # router, embeddings (tied lm_head), norms
        if "router" in k or "embed" in k or "norm" in k:
            assert k not in changed, k
    assert all(p.requires_grad for p in model.parameters())  # as it came


def test_attention_only_and_router_when_asked():
    model = tiny_softmax_moe()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recover(model, target_modules=["q_proj", "v_proj"])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {f"model.layers.{i}.self_attn.{p}_proj.weight" for i in (0, 1) for p in "qv"}
    model = tiny_softmax_moe()
    report = recover(model, target_modules=["router"])
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {f"model.layers.{i}.mlp.router.gate_network.weight" for i in (0, 1)}
    assert report["targets"] == {"router": 2}


@pytest.mark.parametrize("prune", [{"sparsity": 0.5}, {"pattern": "2:4"}])
def test_pruned_zeros_stay_zero(prune):
    model = tiny_softmax_moe(num_shared_experts=1)
    run_recipe(model, calib(), [{"method": "wanda", **prune}])
    zeros = {k: v == 0 for k, v in model.state_dict().items() if "experts" in k}
    assert all(m.float().mean() >= 0.49 for m in zeros.values())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = recover(model)
    after = model.state_dict()
    for k, mask in zeros.items():
        assert torch.equal(after[k] == 0, mask), k  # the same zeros, no new ones
        assert not torch.equal(after[k], before[k]), k  # and the kept weights did recover
    assert report["pruned_zeros_kept"] == sum(int(m.sum()) for m in zeros.values())
    assert report["loss_after"] < report["loss_before"]


def test_merged_model_saves_loads_with_from_pretrained_and_generates(tmp_path):
    model = tiny_softmax_moe(num_layers=4)
    recover(model, {"method": "expert_drop", "keep": 3, "mode": "layer_wise"})
    ids = torch.tensor([[5, 7, 9, 11]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    assert "peft" not in (tmp_path / "m" / "config.json").read_text()
    again = LlamaMoEForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert again.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, logits, rtol=1e-5, atol=1e-6)
    assert again.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, 8)


def test_dense_llama_recovers_through_peft_alone():
    model = tiny_llama(num_layers=3)
    report = recover(model, {"method": "block_drop", "n_drop": 1}, dropout=0.1)
    assert report["targets"]["gate_proj"] == 2 and report["loss_after"] < report["loss_before"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"r": 0}, r"step 1\.r=0 must be an integer >= 1"),
        ({"lr": 0}, r"step 1\.lr=0 must be a number > 0 \(the AdamW learning rate\)"),
        ({"lr": -1e-3}, r"step 1\.lr=-0\.001 must be a number > 0"),
        ({"target_modules": ["q_proj", "qkv"]}, r"step 1\.target_modules=.* unknown: \['qkv'\]"),
        ({"target_modules": []}, r"step 1\.target_modules=\[\] must be a non-empty list"),
        ({"dropout": 1.0}, r"step 1\.dropout=1\.0 must be a probability in \[0, 1\)"),
        ({"alpha": 0}, r"step 1\.alpha=0 must be a number > 0"),
        ({"seq_len": 1}, r"step 1\.seq_len=1 must be an integer >= 2"),
        ({"epochs": 3}, r"step 1\.epochs: lora_recovery takes no parameter 'epochs'"),
    ],
)
def test_bad_parameters_are_named_before_any_step_runs(params, message):
    model = tiny_softmax_moe()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        run_recipe(
            model,
            calib(),
            [{"method": "magnitude", "sparsity": 0.5}, {**LORA, **params}],
            recovery=documents(),
        )
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_model_dependent_errors_leave_the_model_as_it_came():
    model = tiny_llama()
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"target_modules \['router'\] match no module of LlamaForCausalLM"):
        recover(model, target_modules=["router", "q_proj"])
    with pytest.raises(ValueError, match=r"fewer than heldout_sequences=4 \+ 1 training block"):
        recover(model, recovery=documents(n=2))
    with pytest.raises(ValueError, match=r"step 0: lora_recovery needs recovery text"):
        run_recipe(model, calib(), [LORA])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    moe = tiny_softmax_moe()
    before = [p.clone() for p in moe.parameters()]
    with pytest.raises(
        ValueError, match=r"dropout=0\.1 with routed-expert targets \['down_proj', 'up_proj'\]"
    ):
        recover(moe, dropout=0.1, target_modules=["q_proj", "up_proj", "down_proj"])
    assert all(torch.equal(p, q) for p, q in zip(moe.parameters(), before, strict=True))
    report = recover(moe, dropout=0.1, target_modules=["q_proj", "o_proj"])  # attention only: peft's dropout
    assert report["loss_after"] < report["loss_before"]


def test_same_seed_same_weights_other_seed_other_weights():
    def run(seed, make=tiny_softmax_moe, **params):
        model = make()
        report = recover(model, seed=seed, **params)
        return model.state_dict(), report

    for make, params in [
        (tiny_softmax_moe, {}),
        (tiny_llama, {"dropout": 0.1}),
    ]:  # dropout: peft nn.Linear only
        (a, ra), (b, rb), (c, rc) = run(3, make, **params), run(3, make, **params), run(4, make, **params)
        assert all(torch.equal(a[k], b[k]) for k in a) and ra == rb
        assert not all(torch.equal(a[k], c[k]) for k in a) and ra["train_loss"] != rc["train_loss"]


def record_adapters(monkeypatch):
    """Patch peft's merge to first record every adapter: {state_dict key of the adapted weight: scale * B @ A}."""
    merge = LoraModel.merge_and_unload  # PeftModel forwards it to its LoraModel
    deltas = {}

    def recording(self, *args, **kwargs):
        for name, module in self.named_modules():
            if isinstance(module, LoraLayer) and "default" in module.lora_A:
                key = name.removeprefix("model.").replace(".base_layer", "")
                key += f".{module.parameter_name}" if isinstance(module, ParamWrapper) else ".weight"
                B, A = module.lora_B["default"].weight, module.lora_A["default"].weight
                deltas[key] = (module.scaling["default"] * B @ A).detach().clone()
        return merge(self, *args, **kwargs)

    monkeypatch.setattr(LoraModel, "merge_and_unload", recording)
    return deltas


def test_zero_initialised_b_leaves_the_model_bitwise_unchanged(monkeypatch):
    """No optimizer step: B is still 0, so adapters in, merged and out give back the very same weights."""
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    model = tiny_softmax_moe(num_shared_experts=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = recover(model, steps=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report["loss_after"] == report["loss_before"]
    assert report["train_loss"][0] == pytest.approx(report["train_loss"][1], abs=0.5)


def test_merged_weights_are_base_plus_scaled_b_a_and_zero_where_pruned(monkeypatch):
    deltas = record_adapters(monkeypatch)
    model = tiny_softmax_moe(num_shared_experts=1)
    run_recipe(model, calib(), [{"method": "magnitude", "sparsity": 0.5}])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recover(model, r=2, alpha=6)
    after = model.state_dict()
    # 2 layers x (4 attention + 3 shared-expert nn.Linear + 3 routed-expert parameters)
    assert len(deltas) == 20 and all(k in after for k in deltas)
    assert (
        "model.layers.1.mlp.experts.down_proj" in deltas
        and "model.layers.0.self_attn.q_proj.weight" in deltas
    )
    for k, delta in deltas.items():
        assert delta.shape == before[k].shape, k
        assert delta.abs().max() > 0, k  # trained
        pruned = before[k] == 0
        expected = torch.where(pruned, torch.zeros_like(delta), before[k] + delta)
        torch.testing.assert_close(after[k], expected, rtol=0, atol=1e-6)
        assert torch.equal(after[k][pruned], torch.zeros_like(after[k][pruned])), k  # exactly zero
    for k in set(before) - set(deltas):
        assert torch.equal(before[k], after[k]), k


def test_pack_recovery_holds_out_disjoint_seeded_blocks():
    docs = documents()
    held, train = pack_recovery(docs, 32, 4, seed=0)
    held2, train2 = pack_recovery(docs, 32, 4, seed=0)
    assert torch.equal(held, held2) and torch.equal(train, train2)
    stream = torch.cat(docs)
    assert len(held) + len(train) == len(stream) // 32
    starts = {tuple(b.tolist()) for b in held}
    assert not starts & {tuple(b.tolist()) for b in train}


def test_recovery_steps_after_quantisation_may_only_adapt_attention():
    steps = [check_step(s, "s") for s in [{"method": "awq", "bits": 4}, {"method": "lora_recovery"}]]
    with pytest.raises(
        ValueError, match=r"r\[1\]\.target_modules: lora_recovery adapts \['down_proj', 'gate_proj'"
    ):
        check_order(steps, "r")
    with pytest.raises(
        ValueError, match=r"compress\.recipes\.q\[1\]\.target_modules: .* Put lora_recovery before"
    ):
        check_recipes(
            {"recipe": "q", "recipes": {"q": [{"method": "rtn", "bits": 8}, {"method": "lora_recovery"}]}}
        )
    ok = {
        "a": [{"method": "lora_recovery"}, {"method": "awq", "bits": 4}],
        "b": [
            {"method": "rtn", "bits": 8},
            {"method": "lora_recovery", "target_modules": ["q_proj", "o_proj"]},
        ],
    }
    assert check_recipes({"recipe": "a", "recipes": ok})["b"][1]["target_modules"] == ["q_proj", "o_proj"]


class WordTokenizer:
    """Whitespace tokenizer: word "w<i>" -> id i; EOS = 0 (the interface pack_texts uses)."""

    eos_token_id = 0

    def __call__(self, batch, add_special_tokens=False, return_attention_mask=False):
        return {"input_ids": [[int(w[1:]) for w in text.split()] for text in batch]}


def test_recovery_text_shares_no_token_with_the_calibration_blocks():
    rng = np.random.default_rng(0)
    # document d holds the ids 1000 d + 1 .. (each id in one document only)
    texts = [" ".join(f"w{1000 * d + j + 1}" for j in range(rng.integers(3, 40))) for d in range(200)]
    blocks, recovery = calibration_and_recovery(
        texts, WordTokenizer(), 16, 12, torch.Generator().manual_seed(7)
    )
    same = sample_blocks(texts, WordTokenizer(), 16, 12, torch.Generator().manual_seed(7), keep_order=False)
    assert torch.equal(blocks, same)  # the calibration blocks of a recipe without recovery
    calib_docs = {int(t) // 1000 for t in blocks.flatten() if t}
    rec_docs = {int(d[0]) // 1000 for d in recovery}
    assert not calib_docs & rec_docs and len(calib_docs | rec_docs) <= 200
    assert all(int(d[-1]) == 0 for d in recovery)
    # every document touched by a drawn block (its EOS included) is out, every other one is in
    lengths = np.asarray([len(t.split()) + 1 for t in texts])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    drawn = torch.randperm(int(ends[-1]) // 16, generator=torch.Generator().manual_seed(7))[:12].tolist()
    touched = {d for d in range(len(texts)) for b in drawn if starts[d] < (b + 1) * 16 and ends[d] > b * 16}
    assert rec_docs == set(range(len(texts))) - touched
