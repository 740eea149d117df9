"""Damaged files are named, with what to do (issue 19 sec. 3): models, checkpoints, eval cache, manifest."""

import json
import logging

import pytest
import torch
from conftest import TINY, tiny_llama
from test_evaluate_plan import EVAL, FakeRunner, _fake_model, _run
from test_io import tiny_tokenizer
from test_train import RandomTokens
from transformers import AutoModelForCausalLM

from moelab.errors import DamagedFileError, rebuild_hint
from moelab.evaluate.cache import EvalCache, model_sha256
from moelab.evaluate.plan import paper_plan
from moelab.files import verify_model_folder, verify_safetensors
from moelab.io import load_model, save_model
from moelab.models import LlamaMoEConfig, LlamaMoEForCausalLM
from moelab.train import TrainConfig, train
from moelab.train.checkpoint import verify_checkpoint


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_weights_name_the_file_and_the_fix(tmp_path):
    save_model(tiny_llama(), tiny_tokenizer(), tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    size = weights.stat().st_size
    assert verify_safetensors(weights) == len(tiny_llama().state_dict()) - 1  # lm_head is tied, not saved
    truncate(weights)
    with pytest.raises(
        DamagedFileError, match=rf"damaged file {weights}: {size // 2} bytes, but its header says {size}"
    ):
        load_model(tmp_path / "m")
    with pytest.raises(DamagedFileError, match="delete .* and rebuild it"):
        verify_model_folder(tmp_path / "m")
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(DamagedFileError, match="shorter than the 8-byte"):
        verify_safetensors(weights)
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(DamagedFileError, match=r"config.json: not valid JSON"):
        load_model(tmp_path / "m")


def test_multi_shard_folder_names_the_damaged_shard(tmp_path):
    model = tiny_llama(num_layers=4)
    out = tmp_path / "results" / "models" / "moe"
    out.parent.mkdir(parents=True)
    model.save_pretrained(out, max_shard_size="100KB")
    tiny_tokenizer().save_pretrained(out)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 3
    assert verify_model_folder(out) == shards
    truncate(shards[1])
    msg = rf"damaged file {shards[1]}: .*delete results/models/moe and rerun `snakemake results/models/moe`"
    with pytest.raises(DamagedFileError, match=msg):
        load_model(out)
    shards[1].unlink()
    with pytest.raises(FileNotFoundError, match=rf"shard {shards[1]} listed in .*index.json is missing"):
        load_model(out)


def test_plain_from_pretrained_of_a_moe_checkpoint_names_the_file(tmp_path):
    cfg = LlamaMoEConfig(**TINY, num_experts=4, top_k=2)
    torch.manual_seed(0)
    LlamaMoEForCausalLM(cfg).save_pretrained(tmp_path / "moe")
    weights = tmp_path / "moe" / "model.safetensors"
    truncate(weights, 0.9)
    with pytest.raises(DamagedFileError, match=rf"damaged file {weights}"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "moe")


def test_intact_model_loads_bit_identical(tmp_path):
    model = tiny_llama()
    save_model(model, tiny_tokenizer(), tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    ref = model.state_dict()
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_rebuild_hint_names_the_output_to_rebuild():
    assert rebuild_hint("/w/resources/models/dense/model.safetensors") == (
        "delete resources/models/dense and rerun `snakemake resources/models/dense` (the rule that made it rebuilds it)"
    )
    assert (
        "delete resources/data/pretrain/web.jsonl and rerun `snakemake resources/data/pretrain/web.jsonl`"
        in (rebuild_hint("resources/data/pretrain/web.jsonl"))
    )
    assert rebuild_hint("results/checkpoints/sft/step-000004/rng.pt").startswith(
        "delete results/checkpoints/sft/step-000004 and rerun the training rule"
    )
    assert rebuild_hint("/tmp/x.bin") == "delete /tmp/x.bin and rebuild it (rerun the step that wrote it)"


# ---------------------------------------------------------------- training checkpoints


def weights_equal(a, b):
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_resume_skips_a_damaged_newest_checkpoint_then_starts_fresh(tmp_path, caplog):
    cfg = TrainConfig(steps=6, lr=1e-2, warmup_steps=1, save_every=2, seed=3, keep_checkpoints=2)
    straight = tiny_llama()
    train(straight, RandomTokens(), cfg, tmp_path / "ck", tmp_path / "log.csv")
    step4, step6 = tmp_path / "ck" / "step-000004", tmp_path / "ck" / "step-000006"
    marker = json.loads((step6 / "COMPLETE").read_text())
    assert (
        marker["step"] == 6
        and marker["files"]["model.safetensors"] == (step6 / "model.safetensors").stat().st_size
    )
    assert set(marker["files"]) == {"model.safetensors", "optimizer.pt", "rng.pt", "sampler.json"}
    assert verify_checkpoint(step6) == 6
    truncate(step6 / "model.safetensors")
    with pytest.raises(DamagedFileError, match=rf"damaged file {step6 / 'model.safetensors'}"):
        verify_checkpoint(step6)
    with caplog.at_level(logging.WARNING, logger="moelab.train.checkpoint"):
        resumed = tiny_llama()
        summary = train(resumed, RandomTokens(), cfg, tmp_path / "ck", tmp_path / "log.csv")
    assert summary["resumed_from"].endswith("step-000004")
    assert f"skipping damaged checkpoint {step6}" in caplog.text
    assert f"resuming from the previous complete checkpoint {step4}" in caplog.text
    assert weights_equal(straight, resumed)  # same seed, same result

    caplog.clear()
    truncate(step4 / "optimizer.pt")
    truncate(step6 / "rng.pt")
    with caplog.at_level(logging.WARNING, logger="moelab.train.checkpoint"):
        fresh = tiny_llama()
        summary = train(fresh, RandomTokens(), cfg, tmp_path / "ck", tmp_path / "log.csv")
    assert summary["resumed_from"] is None
    assert f"damaged file {step4 / 'optimizer.pt'}" in caplog.text
    assert "(skipped step-000006, step-000004): training starts from scratch" in caplog.text
    assert weights_equal(straight, fresh)


# ---------------------------------------------------------------- evaluation cache


def test_damaged_cache_entry_is_rescored_with_a_warning(tmp_path, caplog):
    model = _fake_model(tmp_path / "model")
    cache, runner = EvalCache(tmp_path / "cache"), FakeRunner()
    plan = paper_plan(EVAL, "llama_moe")
    first = _run(model, plan, cache, runner)
    key = EvalCache.key(model_sha256(model), "sciq", 0, 50, "local", seed=1, dtype="float32")
    entry_file = cache.path(key)
    stored = json.loads(entry_file.read_text())
    assert stored["primary"] == first["primary"]["sciq"] == pytest.approx(0.04)
    damages = {
        "unreadable": entry_file.read_text()[:40],
        "does not match its checksum": json.dumps({**stored, "primary": 0.99}),  # a silently wrong number
        "no checksum": json.dumps({k: v for k, v in stored.items() if k != "sha256"}),
    }
    for problem, text in damages.items():
        entry_file.write_text(text)
        caplog.clear()
        n_calls = len(runner.calls)
        with caplog.at_level(logging.WARNING, logger="moelab.evaluate.cache"):
            again = _run(model, plan, cache, runner)
        assert f"damaged evaluation cache entry {entry_file}: " in caplog.text and problem in caplog.text
        assert runner.calls[n_calls:] == [{"tasks": ["sciq"], "limit": 50, "num_fewshot": {"sciq": 0}}]
        assert again["primary"] == first["primary"] and again["cached"]["sciq"] is False
        assert json.loads(entry_file.read_text()) == stored  # rewritten intact


# ---------------------------------------------------------------- downloads, re-verified at use


def _downloads(tmp_path):
    """A data file and a model folder written as the download rules write them: sidecars with checksums."""
    from moelab.provenance import Provenance

    res = tmp_path / "shared" / "store"  # no folder named resources: the check does not depend on names
    (res / "data").mkdir(parents=True)
    web = res / "data" / "web.jsonl"
    web.write_text('{"text": "one"}\n{"text": "two"}\n')
    model = res / "dense"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\x00" * 64)
    for out in (web, model):
        Provenance(config={}).write(out, extra={"source": "test"}, checksums=True)
    return web, model


def test_download_checksums_round_trip_and_each_kind_of_damage(tmp_path):
    from moelab.files import verify_checksums

    web, model = _downloads(tmp_path)
    meta = json.loads((model / "meta.json").read_text())["extra"]
    assert sorted(meta["checksums"]) == ["config.json", "model.safetensors"] and meta["source"] == "test"
    assert verify_checksums(web) == 1 and verify_checksums(model) == 2
    assert verify_checksums(tmp_path / "shared") == 0  # no sidecar: not a download, nothing recorded
    web.write_text(web.read_text().replace("one", "uno"))  # same size, other bytes
    with pytest.raises(DamagedFileError, match=rf"damaged file {web}: sha256 differs from the one recorded"):
        verify_checksums(web)
    web.write_text("{")
    with pytest.raises(DamagedFileError, match=r"web.jsonl: 1 bytes, but 32 when downloaded"):
        verify_checksums(web)
    (model / "config.json").unlink()
    with pytest.raises(
        DamagedFileError, match=r"config.json: recorded in .*meta.json when downloaded, but missing"
    ):
        verify_checksums(model)
    (model / "meta.json").write_text("[1, 2")
    with pytest.raises(DamagedFileError, match=r"meta.json: not a provenance sidecar"):
        verify_checksums(model)


def test_a_step_refuses_a_download_damaged_after_it_was_written(tmp_path):
    """Provenance (every script's first step) re-verifies its downloaded inputs before the work starts; a
    re-download writes new checksums, so the repaired file passes again."""
    from moelab.provenance import Provenance

    web, model = _downloads(tmp_path)
    link = tmp_path / "linked"
    link.symlink_to(model)  # e.g. resources/models/dense -> a shared folder
    Provenance(config={}, inputs=[model, web, link])  # intact: passes
    weights = model / "model.safetensors"
    weights.write_bytes(b"\x01" + weights.read_bytes()[1:])
    with pytest.raises(DamagedFileError, match=r"model.safetensors: sha256 differs"):
        Provenance(config={}, inputs=[web, link])
    Provenance(config={}, inputs=[web])  # only the inputs a step uses are checked
    Provenance(config={}, inputs=[tmp_path / "absent.jsonl"])  # left to the step itself
    Provenance(config={}).write(model, checksums=True)  # the download rule rerun
    Provenance(config={}, inputs=[model])


def test_rebuild_hint_of_a_checkout_below_a_results_folder():
    path = "/scratch/results/moelab/resources/models/dense/model.safetensors"
    assert rebuild_hint(path).startswith(
        "delete resources/models/dense and rerun `snakemake resources/models/dense`"
    )
