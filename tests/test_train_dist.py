"""Data-parallel training: micro-batches and processes give the single-process loss curve; launch commands.

The multi-process tests start 2 CPU processes (gloo): with torchrun (DDP), the path a GPU node takes with
``launcher.kind torchrun``, and with ``accelerate launch`` on config/accelerate/fsdp.yaml (FSDP1, full
shard, one unit per decoder layer, full-state-dict checkpoints) changed only where CPU processes need it.
"""

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY, tiny_llama
from test_train import RandomTokens
from tiny_folders import save_tiny_checkpoint, sentence, tiny_tokenizer, write_jsonl

from moelab.mixture import MixtureSampler
from moelab.train import TrainConfig, TrainRunConfig, train
from moelab.train.dist import label_tokens, split_batch
from moelab.train.launch import launch_command, run_training
from moelab.train.sft import SFTSource


def losses(path):
    with open(path) as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


class Wide(RandomTokens):
    """Batches of 4 rows (so 2 micro-batches of 2)."""

    def batch(self, step):
        g = torch.Generator().manual_seed(self.seed * 1000 + step)
        ids = torch.randint(0, self.vocab, (4, 16), generator=g)
        return {"input_ids": ids, "labels": ids.clone(), "domains": ["a"] * 4}


def padded_sft_source(seed=1):
    g = torch.Generator().manual_seed(0)

    def ex(n):
        ids = torch.randint(0, 256, (n,), generator=g)
        labels = ids.clone()
        labels[: n // 2] = -100  # prompt tokens carry no loss
        return {"input_ids": ids, "labels": labels}

    data = {"x": [ex(n) for n in (5, 9, 12, 7, 16, 3)], "y": [ex(n) for n in (8, 4, 11)]}
    return SFTSource(MixtureSampler(data, {"x": 1, "y": 1}, 4, seed, 0))


@pytest.mark.parametrize("make_source", [Wide, padded_sft_source], ids=["packed", "padded"])
def test_gradient_accumulation_gives_the_whole_batch_curve(tmp_path, make_source):
    """batch 4 in one pass == 2 micro-batches of 2 (token-weighted), also with uneven padded rows."""
    cfg = TrainConfig(steps=5, lr=1e-2, warmup_steps=1, save_every=5, seed=3)
    whole, micro = tiny_llama(), tiny_llama()
    train(whole, make_source(), cfg, tmp_path / "a", tmp_path / "a.csv")
    cfg_micro = TrainConfig(**{**cfg.__dict__, "micro_batch_size": 2})
    train(micro, make_source(), cfg_micro, tmp_path / "b", tmp_path / "b.csv")
    assert losses(tmp_path / "a.csv") == pytest.approx(losses(tmp_path / "b.csv"), abs=2e-5)
    for (name, a), (_, b) in zip(whole.state_dict().items(), micro.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=name)


def test_split_batch_rows_and_errors():
    ids = torch.arange(8 * 3).reshape(8, 3)
    parts = split_batch({"input_ids": ids, "domains": ["d"] * 8}, rank=1, world=2, micro_batch_size=2)
    assert [p["input_ids"][:, 0].tolist() for p in parts] == [
        [12, 15],
        [18, 21],
    ]  # rows 4-7, two micro-batches
    assert set(parts[0]) == {"input_ids"}
    with pytest.raises(ValueError, match="launcher.num_processes=3"):
        split_batch({"input_ids": ids}, 0, 3, None)
    with pytest.raises(ValueError, match="micro_batch_size=3"):
        split_batch({"input_ids": ids}, 0, 2, 3)
    labels = torch.tensor([[1, 2, -100], [-100, 5, 6]])
    assert label_tokens({"input_ids": labels, "labels": labels}) == 3  # shifted: positions 1.. only


def test_launch_commands(tmp_path):
    spec = tmp_path / "train_config.json"
    assert launch_command({"kind": "none"}, spec)[1:] == ["-m", "moelab.train", str(spec)]
    tr = launch_command({"kind": "torchrun", "num_processes": 4}, spec)
    assert tr[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=4" in tr and tr[-3:] == ["-m", "moelab.train", str(spec)]
    acc = launch_command(
        {"kind": "accelerate", "num_processes": 8, "accelerate_config": "config/accelerate/fsdp.yaml"}, spec
    )
    assert acc[2:5] == ["accelerate.commands.launch", "--config_file", "config/accelerate/fsdp.yaml"]
    assert "--num_processes=8" in acc
    with pytest.raises(ValueError, match="accelerate_config"):
        launch_command({"kind": "accelerate", "num_processes": 2}, spec)
    with pytest.raises(ValueError, match="torchrun or accelerate"):
        launch_command({"kind": "none", "num_processes": 2}, spec)
    with pytest.raises(ValueError, match="launcher.kind"):
        launch_command({"kind": "slurm"}, spec)


def pretrain_spec(tmp_path, name, model, data, launcher=None, batch_size=4, ckpt=None, **section):
    """Write the train_config.json of a tiny pretraining run to <tmp_path>/<name>/; returns its path."""
    section = {
        "seq_len": 16, "batch_size": batch_size, "steps": 4, "lr": 1e-2, "warmup_steps": 1,
        "save_every": 2, "domain_weights": {"a": 1.0, "b": 1.0}, **section,
    }  # fmt: skip
    cfg = TrainRunConfig.from_section(
        section,
        stage="pretrain",
        model=str(model),
        data={d: str(p) for d, p in data.items()},
        out_dir=str(tmp_path / name / "model"),
        log_csv=str(tmp_path / name / "log.csv"),
        ckpt_dir=str(ckpt or tmp_path / name / "ckpt"),
        summary=str(tmp_path / name / "summary.json"),
        seed=5,
        device="cpu",
        dtype="float32",
        threads=2,
        launcher=launcher,
    )
    return cfg.write(tmp_path / name / "train_config.json")


@pytest.mark.slow  # two torchrun launches of 2 CPU processes: ~30-40 s on 2 cores
def test_two_processes_give_the_single_process_curve_and_resume(tmp_path):
    model = save_tiny_checkpoint(tmp_path / "moe")
    data = {
        d: write_jsonl(tmp_path / f"{d}.jsonl", [{"text": sentence(i + k)} for i in range(40)])
        for k, d in enumerate("ab")
    }
    one = run_training(pretrain_spec(tmp_path, "one", model, data))
    spec = pretrain_spec(tmp_path, "two", model, data, {"kind": "torchrun", "num_processes": 2})
    log = tmp_path / "two.log"
    two = run_training(spec, log_path=log)
    assert two["processes"] == 2 and one["processes"] == 1, log.read_text()[-2000:]
    curve = losses(tmp_path / "one" / "log.csv")
    assert len(curve) == 4 and curve[-1] < curve[0]  # it trains
    # 2 processes x 2 rows == 1 process x 4 rows, up to float summation order
    assert losses(tmp_path / "two" / "log.csv") == pytest.approx(
        losses(tmp_path / "one" / "log.csv"), abs=1e-4
    )
    from safetensors.torch import load_file

    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=k)
    # checkpoints written once (by the main process), each complete, with every process's RNG state
    ckpts = sorted(p.name for p in (tmp_path / "two" / "ckpt").glob("step-*"))
    assert ckpts == ["step-000002", "step-000004"]
    assert (
        len(torch.load(tmp_path / "two" / "ckpt" / "step-000004" / "rng.pt", weights_only=True)["ranks"]) == 2
    )
    assert json.loads((tmp_path / "two" / "train_config.json").read_text())["stage"] == "pretrain"
    # a rerun of the finished job resumes from the last checkpoint in both processes and trains no more
    again = run_training(spec, log_path=log)
    assert again["resumed_from"].endswith("step-000004")
    assert losses(tmp_path / "two" / "log.csv") == pytest.approx(
        losses(tmp_path / "one" / "log.csv"), abs=1e-4
    )


@pytest.mark.slow  # one torchrun start: ~20 s on 2 busy cores
def test_failed_launch_names_the_log(tmp_path):
    launcher = {"kind": "torchrun", "num_processes": 1}
    spec = pretrain_spec(tmp_path, "bad", tmp_path / "no-model", {"a": tmp_path / "a.jsonl"}, launcher)
    log = tmp_path / "bad.log"
    env_before = dict(os.environ)
    with pytest.raises(RuntimeError, match="bad.log"):
        run_training(spec, log_path=log)
    assert "config.json is missing" in log.read_text()
    assert dict(os.environ) == env_before


@pytest.mark.slow  # download + construct + a 2-process pretrain job of the smoke DAG: ~1.5-4 min on 2 cores
def test_pretrain_rule_launches_torchrun(tmp_path):
    """The workflow's pretrain rule starts 2 processes when the config asks for a launcher (smoke scale)."""
    from test_workflow import copy_workflow, snakemake

    wf = copy_workflow(tmp_path)
    (wf / "dist.yaml").write_text(
        "launcher: {kind: torchrun, num_processes: 2}\npretrain: {steps: 2, save_every: 1}\n"
    )
    snakemake(
        "results/models/pretrain", "--cores", "2", "--configfile", "config/smoke.yaml", "dist.yaml", cwd=wf
    )
    summary = json.loads((wf / "results/models/pretrain/train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    log = (wf / "logs/pretrain/pretrain.log").read_text()
    launched = "torch.distributed.run --standalone --nproc_per_node=2 -m moelab.train"
    assert f"{launched} results/pretrain/train_config.json" in log
    rows = (wf / "results/pretrain/log.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + 2 steps, written once (by the main process)
    spec = json.loads((wf / "results/pretrain/train_config.json").read_text())
    assert spec["stage"] == "pretrain" and spec["steps"] == 2


# ---- FSDP on 2 CPU processes ---------------------------------------------------------------------------

FSDP_CONFIG = Path(__file__).resolve().parents[1] / "config" / "accelerate" / "fsdp.yaml"


def cpu_fsdp_config(out: Path, fsdp_version: int = 1) -> Path:
    """The checked-in FSDP launch config with the two keys CPU processes need changed (and ``fsdp_version``).

    ``use_cpu: true`` (gloo instead of NCCL) and ``fsdp_sync_module_states: false`` (accelerate broadcasts
    module states through an accelerator device and refuses without one; every process loads the same
    checkpoint anyway). Everything else (FSDP1, FULL_SHARD, transformer-based wrap, FULL_STATE_DICT,
    use_orig_params) is the GPU config as checked in.
    """
    cfg = yaml.safe_load(FSDP_CONFIG.read_text())
    assert (
        cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    )
    cfg["use_cpu"] = True
    cfg["fsdp_config"]["fsdp_sync_module_states"] = False
    cfg["fsdp_config"]["fsdp_version"] = fsdp_version
    out.write_text(yaml.safe_dump(cfg))
    return out


def save_tiny_moe_checkpoint(out: Path) -> Path:
    """A hub-style folder of a tiny LlamaMoE (hidden 32, 2 layers, 4 experts, top-2, tied embeddings).

    The router is the deterministic softmax top-k: the noisy router draws its noise per process, so 2
    processes x 2 rows cannot reproduce 1 process x 4 rows.
    """
    from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaMoEConfig(
        **{**TINY, "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64},
        max_position_embeddings=128,
        tie_word_embeddings=True,
        num_experts=4,
        top_k=2,
        router_type="softmax_topk",
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaMoEForCausalLM(cfg).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)


def test_fsdp_config_wraps_each_decoder_layer_of_our_models(monkeypatch):
    """accelerate resolves the checked-in wrap policy against LlamaMoE and dense LLaMA alike."""
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")  # the plugin writes it; restored after
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM
    from moelab.models.modeling_llama_moe import LlamaMoEDecoderLayer

    fsdp = yaml.safe_load(FSDP_CONFIG.read_text())["fsdp_config"]
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    moe = LlamaMoEForCausalLM(LlamaMoEConfig(**TINY, num_experts=4, top_k=2))
    for model, layer in ((moe, LlamaMoEDecoderLayer), (tiny_llama(), LlamaDecoderLayer)):
        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=fsdp["fsdp_version"],
            auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
            transformer_cls_names_to_wrap=fsdp.get("fsdp_transformer_layer_cls_to_wrap"),
            sync_module_states=False,
        )
        plugin.set_auto_wrap_policy(model)
        assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {layer}
    # naming both classes (the config's first version) fails for either model: accelerate wants them all
    both = FullyShardedDataParallelPlugin(
        auto_wrap_policy="TRANSFORMER_BASED_WRAP",
        transformer_cls_names_to_wrap="LlamaMoEDecoderLayer,LlamaDecoderLayer",
        sync_module_states=False,
    )
    with pytest.raises(ValueError, match="LlamaDecoderLayer"):
        both.set_auto_wrap_policy(moe)


# two accelerate launches of 2 CPU processes and a 1-process run: ~12 s on 2 cores each; FSDP1 is the
# checked-in config, FSDP2 (fully_shard) the same run with fsdp_version 2
@pytest.mark.parametrize("fsdp_version", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["fsdp1", "fsdp2"])
def test_fsdp_on_two_cpu_processes_matches_one_process_saves_full_model_and_resumes(tmp_path, fsdp_version):
    from safetensors.torch import load_file

    from moelab.io import load_model

    model = save_tiny_moe_checkpoint(tmp_path / "moe")
    data = {
        d: write_jsonl(tmp_path / f"{d}.jsonl", [{"text": sentence(i + k)} for i in range(40)])
        for k, d in enumerate("ab")
    }
    launcher = {
        "kind": "accelerate",
        "num_processes": 2,
        "accelerate_config": str(cpu_fsdp_config(tmp_path / "fsdp_cpu.yaml", fsdp_version)),
    }

    def spec(name, launcher=None, ckpt=None):
        # 1 process x 2 micro-batches of 2 rows == 2 processes x 2 rows, balance loss included (it is
        # computed per forward pass, so one pass over 4 rows would differ)
        return pretrain_spec(tmp_path, name, model, data, launcher, ckpt=ckpt, micro_batch_size=2)

    one = run_training(spec("one"))
    log = tmp_path / "fsdp.log"
    fsdp = run_training(spec("fsdp", launcher), log_path=log)
    assert fsdp["processes"] == 2 and one["processes"] == 1, log.read_text()[-3000:]
    curve = losses(tmp_path / "one" / "log.csv")
    assert len(curve) == 4 and curve[-1] < curve[0]  # it trains
    # (a) FSDP shards params/grads/optimiser state; the math is the single process's up to summation order
    assert losses(tmp_path / "fsdp" / "log.csv") == pytest.approx(curve, abs=1e-4)
    # the checkpoints are FSDP's: full optimiser state keyed by parameter name (index-keyed without FSDP)
    ckpt = tmp_path / "fsdp" / "ckpt"
    optim = torch.load(ckpt / "step-000004" / "optimizer.pt", weights_only=True)
    assert optim["param_groups"][0]["params"][0] == "model.embed_tokens.weight"
    single_optim = torch.load(tmp_path / "one" / "ckpt" / "step-000004" / "optimizer.pt", weights_only=True)
    assert single_optim["param_groups"][0]["params"][0] == 0
    assert len(optim["state"]) == len(single_optim["state"])
    # (b) the saved model is complete (full state gathered on rank 0), loads, and equals the 1-process one
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "fsdp" / "model" / "model.safetensors")
    assert (
        sorted(a) == sorted(b)
        and any(".mlp.experts." in k for k in b)
        and any(".mlp.router." in k for k in b)
    )
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    loaded, _ = load_model(tmp_path / "fsdp" / "model")
    assert type(loaded).__name__ == "LlamaMoEForCausalLM"
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, b[k if k in b else "model.embed_tokens.weight"], msg=k)
    assert fsdp["val_loss_after"] == pytest.approx(one["val_loss_after"], abs=1e-3)
    # (c) resume: a run killed after its step-2 checkpoint (step 4 half-written) restarts under FSDP and
    # ends where the uninterrupted FSDP run ended
    killed = tmp_path / "killed" / "ckpt"
    shutil.copytree(ckpt, killed)
    shutil.rmtree(killed / "step-000004")
    (killed / "step-000004.tmp").mkdir()
    (killed / "step-000004.tmp" / "model.safetensors").write_bytes(b"truncated")
    resumed = run_training(spec("killed", launcher, ckpt=killed), log_path=log)
    assert resumed["resumed_from"].endswith("step-000002"), log.read_text()[-3000:]
    assert losses(tmp_path / "killed" / "log.csv") == losses(tmp_path / "fsdp" / "log.csv")
    c = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    for k in b:
        torch.testing.assert_close(c[k], b[k], atol=1e-6, rtol=0, msg=k)
    assert resumed["final_lm_loss"] == pytest.approx(fsdp["final_lm_loss"], abs=1e-5)


def test_fsdp_on_cpu_with_module_state_sync_names_the_key(monkeypatch):
    """accelerate cannot sync module states without an accelerator device: the error names the config key."""
    from moelab.train.dist import make_accelerator

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "true")
    with pytest.raises(ValueError, match="fsdp_sync_module_states: false"):
        make_accelerator("cpu")
