"""Compression speed records (moelab.evaluate.compress_speed) and table_speed / fig_tradeoff
(moelab.report.compression_speed): fields and ratios under a virtual clock, FLOPs after Block Drop, the storage of
fake-quantised weights, the table's cells from fixture records, the trade-off figure."""

import json

import pandas as pd
import pytest
from conftest import tiny_softmax_moe
from tiny_folders import tiny_tokenizer

from moelab.compress.drop import drop_blocks
from moelab.compress.footprint import RecipeFootprint, kernels_note, quant_step, storage
from moelab.compress.quantize import quantize_experts
from moelab.evaluate import compress_speed as cs
from moelab.evaluate import speed
from moelab.io import save_model
from moelab.models import PER_LAYER_FIELDS
from moelab.report import load_published, paper_table, table_spec
from moelab.report.compression_speed import (
    PARENT_LABEL,
    plot_tradeoff,
    published_points,
    read_speed,
    speed_extras,
    speed_notes,
    speed_table,
    tradeoff_points,
)
from moelab.report.papers.moe_compression import MC_ORIG

# Parameters of one block of the tiny 4-expert top-2 MoE (hidden 64, FFN 128 in 4 experts of 32, 4 heads / 2 KV
# heads of 16): attention q, k, v, o; the routed FFN at top_k / num_experts; the linear router 64 -> 4; two norms.
ATTN = 64 * 64 + 2 * 64 * 32 + 64 * 64
ACTIVE_FFN = 3 * 64 * 128 * 2 // 4
BLOCK_ACTIVE = ATTN + ACTIVE_FFN + 64 * 4 + 2 * 64
HEAD = 256 * 64 + 64  # the tied LM head (the embedding, counted once) and the final norm


def half_dropped(num_layers=4):
    parent = tiny_softmax_moe(num_layers=num_layers)
    child = tiny_softmax_moe(num_layers=num_layers)
    drop_blocks(child, list(range(num_layers // 2)), PER_LAYER_FIELDS)
    return parent, child


def test_block_drop_of_half_the_blocks_halves_the_block_flops():
    parent, child = half_dropped()
    before, after = speed.flops_per_token(parent), speed.flops_per_token(child)
    assert before == 2 * (HEAD + 4 * BLOCK_ACTIVE)
    assert after == 2 * (HEAD + 2 * BLOCK_ACTIVE)
    assert before - after == pytest.approx((before - 2 * HEAD) / 2)
    size = cs.model_size(child, context_len=32)
    assert size["flops_per_token"] == after and size["context_len"] == 32
    assert size["flops_per_token_at_context"] == after + 4 * 2 * 4 * 16 * 32  # 2 blocks x 4 heads x 16 dims
    assert size["storage_bytes"] == size["weights_bytes"] == 4 * size["params_total"]
    assert size["storage_bits"] is None


@pytest.fixture
def folders(tmp_path):
    parent, child = half_dropped()
    tok = tiny_tokenizer()
    return save_model(parent, tok, tmp_path / "parent"), save_model(child, tok, tmp_path / "child")


def virtual_clock(monkeypatch):
    """speed._clock reads a virtual time that every decoder block advances by 1 ms when it runs; the memory curve
    is faked (no child process): before load 100 MiB, peak 100 + 40 (parent) or 20 (child) + prompt_len MiB."""
    now = {"t": 0.0}
    monkeypatch.setattr(speed, "_clock", lambda: now["t"])
    real_load = cs.load_model

    def load(path, **kw):
        model, tok = real_load(path, **kw)
        for block in model.model.layers:
            block.register_forward_pre_hook(lambda *_: now.__setitem__("t", now["t"] + 1e-3))
        return model, tok

    def memory(model_dirs, lens, device="cpu", dtype="float32", seed=0):
        return {
            k: [{"prompt_len": n, "new_tokens": n, "peak_mb": 100 + (40 if k == "parent" else 20) + n,
                 "after_load_mb": 140, "before_load_mb": 100.0, "device": device} for n in sorted(lens)]
            for k in model_dirs
        }  # fmt: skip

    monkeypatch.setattr(cs, "load_model", load)
    monkeypatch.setattr(cs, "peak_memory_curves", memory)


@pytest.mark.parametrize("interleave", [True, False], ids=["interleaved", "one_at_a_time"])
def test_speed_record_fields_and_ratios_with_a_virtual_clock(folders, monkeypatch, interleave):
    virtual_clock(monkeypatch)
    steps = [{"method": "block_drop", "n_drop": 2}]
    rec = cs.measure_recipe(
        *folders,
        [8, 4],
        repeats=2,
        warmup=1,
        interleave=interleave,
        footprint=RecipeFootprint(steps, "float32"),
    )
    assert rec["prompt_lens"] == [4, 8] and rec["batch"] == 1 and rec["interleaved"] is interleave
    assert rec["fake_quantised"] is False and "removed" in rec["kernels"]
    assert [(r["model"], r["prompt_len"]) for r in rec["rows"]] == [
        ("parent", 4), ("compressed", 4), ("parent", 8), ("compressed", 8),
    ]  # fmt: skip
    for r in rec["rows"]:
        blocks = 4 if r["model"] == "parent" else 2  # every forward runs each block once: 1 ms each
        assert r["decode_tokens_per_s"] == pytest.approx(1 / (blocks * 1e-3))
        assert r["prefill_tokens_per_s"] == pytest.approx(r["prompt_len"] / (blocks * 1e-3))
        want = 1.0 if r["model"] == "parent" else 2.0
        assert r["decode_speedup"] == pytest.approx(want) and r["prefill_speedup"] == pytest.approx(want)
        mib = (40 if r["model"] == "parent" else 20) + r["prompt_len"]
        assert r["memory_gb"] == pytest.approx(mib / 1024)
        assert r["memory_pct"] == pytest.approx(100 * mib / (40 + r["prompt_len"]))
        assert r["peak_process_gb"] == pytest.approx((100 + mib) / 1024)
    s = rec["summary"]
    assert s["prompt_len"] == 8 and s["decode_speedup"] == pytest.approx(2.0)
    assert s["memory_ratio"] == pytest.approx(28 / 48)
    assert s["flops_ratio"] == pytest.approx((HEAD + 2 * BLOCK_ACTIVE) / (HEAD + 4 * BLOCK_ACTIVE))
    assert s["storage_ratio"] == pytest.approx(s["params_ratio"])
    models = rec["models"]
    assert models["parent"]["params_total"] > models["compressed"]["params_total"]
    assert {"cpu", "torch", "load_average"} <= set(rec["machine"])


def test_bad_speed_arguments_are_named(folders):
    with pytest.raises(ValueError, match="prompt_lens is empty"):
        cs.measure_recipe(*folders, [])
    with pytest.raises(ValueError, match="repeats a length"):
        cs.measure_recipe(*folders, [4, 4])
    with pytest.raises(ValueError, match=r"prompt_len must be an integer >= 1, got 0"):
        cs.measure_recipe(*folders, [0])
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        cs.measure_recipe(*folders, [4], repeats=0)
    with pytest.raises(ValueError, match="step 0.method"):
        RecipeFootprint([{"method": "zip"}], "float32")


def test_fake_quantised_storage_counts_packed_expert_weights():
    model = tiny_softmax_moe()
    quantize_experts(model, None, "rtn", bits=4, group_size=32)
    steps = [{"method": "rtn", "bits": 4, "group_size": 32}]
    st = storage(model, steps)
    experts = 2 * 3 * 64 * 128  # 2 layers x (gate, up, down) of 64 x 128 over the 4 experts of 32
    # gate/up: [32, 64] per expert, rows of 2 groups of 32; down: [64, 32], rows of 1 group
    groups = 2 * (2 * 128 * 64 // 32 + 64 * 128 // 32)
    packed = experts * 4 / 8 + groups * (2 + 4 / 8)
    assert st["weights_bytes"] == 4 * sum(p.numel() for p in model.parameters())
    assert st["storage_bytes"] == st["weights_bytes"] - 4 * experts + packed
    assert st["storage_bits"] == 4 and "a count, not a measurement" in st["storage"]
    assert "quantise-dequantise" in kernels_note(steps, "float32")
    gptq = {"method": "gptq", "bits": 4, "group_size": 128, "g_idx": True}
    assert quant_step([{"method": "gptq"}]) == gptq
    assert quant_step([{"method": "block_drop", "n_drop": 1}]) is None


@pytest.mark.slow
def test_real_record_of_a_fake_quantised_recipe(tmp_path):
    """No fakes: the timed loop, two fresh memory processes, a quantise-dequantise model (fp32 kernels)."""
    tok = tiny_tokenizer()
    parent = save_model(tiny_softmax_moe(), tok, tmp_path / "parent")
    model = tiny_softmax_moe()
    quantize_experts(model, None, "rtn", bits=4, group_size=32)
    child = save_model(model, tok, tmp_path / "child")
    steps = [{"method": "rtn", "bits": 4, "group_size": 32}]
    rec = cs.measure_recipe(parent, child, [4, 8], repeats=1, footprint=RecipeFootprint(steps, "float32"))
    assert rec["fake_quantised"] is True and rec["models"]["compressed"]["storage_bits"] == 4
    assert rec["models"]["parent"]["params_total"] == rec["models"]["compressed"]["params_total"]
    assert rec["summary"]["storage_ratio"] < 1.0 and rec["summary"]["flops_ratio"] == 1.0
    for r in rec["rows"]:
        assert r["decode_tokens_per_s"] > 0 and 0 < r["memory_gb"] < r["peak_process_gb"]
    assert [m["prompt_len"] for m in rec["memory"]["parent"]] == [4, 8]
    peaks = [m["peak_mb"] for m in rec["memory"]["parent"]]
    assert peaks[0] <= peaks[1]  # one process, lengths in increasing order: a high-water mark


def fixture_record(recipe, steps, decode, parent_decode, memory, fake=False, lens=(32, 64)):
    """A speed record as rule compress_speed writes it (the fields the report reads)."""
    rows = []
    for n in lens:
        for model, dec, mem in (("parent", parent_decode, 0.5), ("compressed", decode, memory)):
            rows.append({"model": model, "prompt_len": n, "new_tokens": n, "prefill_tokens_per_s": 10.0 * n,
                         "decode_tokens_per_s": dec, "prefill_speedup": dec / parent_decode,
                         "decode_speedup": dec / parent_decode, "memory_gb": mem, "memory_pct": 100 * mem / 0.5,
                         "peak_process_gb": mem + 0.4})  # fmt: skip
    size = {"path": "results/models/sft", "params_total": 100, "flops_per_token": 2e9, "storage_bytes": 2**29}
    comp = {"path": f"results/compress/{recipe}/model", "params_total": 80, "flops_per_token": 1.6e9,
            "storage_bytes": 2**27 if fake else 2**29 * 0.8, "storage_bits": 4 if fake else None}  # fmt: skip
    last = rows[-1]
    return {
        "recipe": recipe, "steps": steps, "prompt_lens": list(lens), "device": "cpu", "dtype": "float32",
        "repeats": 2, "interleaved": True, "fake_quantised": fake, "kernels": "float32 dense kernels",
        "models": {"parent": size, "compressed": comp}, "rows": rows,
        "summary": {"prompt_len": lens[-1], "prefill_speedup": last["prefill_speedup"],
                    "decode_speedup": last["decode_speedup"], "memory_gb": memory, "memory_ratio": memory / 0.5,
                    "storage_gb": comp["storage_bytes"] / 2**30, "storage_ratio": comp["storage_bytes"] / 2**29},
        "machine": {"cpu": "test CPU", "cpus": 2, "torch_threads": 2, "torch": "2", "cuda": None, "gpu": None,
                    "omp_wait_policy": "PASSIVE", "load_average": [1.0, 1.0, 1.0]},
    }  # fmt: skip


@pytest.fixture
def records(tmp_path):
    recs = [
        fixture_record("block_drop", [{"method": "block_drop", "n_drop": 4}], 12.0, 10.0, 0.45),
        fixture_record(
            "awq_4bit+layer_drop",
            [{"method": "awq", "bits": 4}, {"method": "layer_drop", "n_drop": 8}],
            decode=11.0,
            parent_decode=8.0,
            memory=0.48,
            fake=True,
        ),
    ]
    paths = []
    for rec in recs:
        path = tmp_path / f"{rec['recipe']}.json"
        path.write_text(json.dumps(rec))
        paths.append(path)
    return [read_speed(p) for p in paths]


def test_table_speed_from_fixture_records_has_known_cells(records):
    df = speed_table(records, load_published("moe_compression"))
    labels = [PARENT_LABEL, "Block Drop (discrete)", "AWQ 4-bit + Layer Drop"]
    assert list(df.model) == [m for m in labels for _ in (32, 64)]
    assert list(df.prefill_len) == list(df.decode_len) == [32, 64] * 3 and set(df.batch) == {1}
    parent = df[df.model == PARENT_LABEL].set_index("prefill_len")
    assert parent.loc[64, "decode_tokens_per_s"] == 9.0  # the median of the two jobs' parent: 10 and 8
    assert parent.loc[64, "decode_speedup"] == 1.0 and parent.loc[64, "memory_pct"] == 100.0
    assert parent.loc[64, "published_memory_gb"] == 87.7 and pd.isna(parent.loc[32, "published_memory_gb"])
    block = df[df.recipe == "block_drop"].set_index("prefill_len")
    assert block.loc[64, "decode_speedup"] == 1.2 and block.loc[64, "memory_pct"] == 90.0
    assert block.loc[64, "published_speedup"] == 1.17 and block.loc[64, "published_memory_gb"] == 74.1
    assert pd.isna(block.loc[32, "published_speedup"])  # published only on the row nearest 2048 tokens
    assert block.loc[64, "flops_speedup"] == 1.25 and block.loc[64, "storage_gb"] == 0.4
    head = df[df.recipe == "awq_4bit+layer_drop"].set_index("prefill_len")
    assert head.loc[64, "published_speedup"] == 6.05 and head.loc[64, "published_memory_gb"] == 20.0
    assert head.loc[64, "decode_speedup"] == 1.375 and head.loc[64, "storage_gb"] == 0.125
    assert "fake 4-bit" in head.loc[64, "kernels"] and block.loc[64, "kernels"] == "float32"
    notes = "\n".join(speed_notes(records, df))
    assert "Fake quantisation (awq_4bit+layer_drop)" in notes and "6.05x" in notes
    assert "64: 8.00-10.00" in notes  # the parent's decode range over the two jobs
    assert "nor any published speed-up or memory for: none" in notes


def test_table_speed_names_rows_without_a_published_number(records):
    rec = fixture_record("sparsegpt_4of8", [{"method": "sparsegpt", "pattern": "4:8"}], 10.0, 10.0, 0.5)
    df = speed_table([*records, rec], load_published("moe_compression"))
    notes = "\n".join(speed_notes([*records, rec], df))
    assert "nor any published speed-up or memory for: SparseGPT 4:8." in notes
    assert "Pruned recipes (sparsegpt_4of8)" in notes


def test_speed_records_are_checked(tmp_path, records):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"recipe": "x"}))
    with pytest.raises(ValueError, match="bad.json lacks"):
        read_speed(bad)
    rec = {**records[0], "rows": records[0]["rows"][:1]}
    bad.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="bad.json: rows"):
        read_speed(bad)
    with pytest.raises(ValueError, match="no speed records"):
        speed_table([])
    other = fixture_record("block_drop", [{"method": "block_drop", "n_drop": 4}], 1.0, 1.0, 0.5, lens=(16,))
    with pytest.raises(ValueError, match="different prompt lengths"):
        speed_table([records[0], other])


def test_methods_table_gets_speed_columns_and_the_figure_its_points(records, tmp_path):
    spec = table_spec("moe_compression", "table_recipe")
    acc = {"arc_challenge": 0.5, "piqa": 0.7}
    ours = {
        "compress_base/moe_compression": {"primary": acc},
        "compress/block_drop/moe_compression": {"primary": {"arc_challenge": 0.45, "piqa": 0.63}},
        "compress/awq_4bit+layer_drop/moe_compression": {"primary": {"arc_challenge": 0.4, "piqa": 0.7}},
    }
    long = paper_table(spec, load_published("moe_compression"), ours, speed_extras(records))

    def cell(row, col):
        return long[(long.row == row) & (long.column == col)].iloc[0]

    assert cell("AWQ 4-bit + Layer Drop", "decode_speedup").ours == 1.375
    assert cell("AWQ 4-bit + Layer Drop", "speedup").published == 6.05
    assert cell("AWQ 4-bit + Layer Drop", "storage_gb").ours == 0.125
    assert cell(MC_ORIG, "decode_speedup").ours == 1.0 and cell(MC_ORIG, "memory_gb").ours == 0.5
    assert cell("Block Drop (discrete)", "memory_gb").ours == 0.45
    recipes = {r["recipe"]: r["steps"] for r in records}
    pts = tradeoff_points([long, long], recipes).set_index("recipe")
    assert list(pts.index) == ["block_drop", "awq_4bit+layer_drop"]  # the parent is not a point; no repeats
    assert pts.loc["block_drop", "retained"] == 90.0 and pts.loc["block_drop", "decode_speedup"] == 1.2
    assert pts.loc["awq_4bit+layer_drop", "family"] == "combined"
    assert bool(pts.loc["awq_4bit+layer_drop", "fake_quantised"]) is True
    pub = published_points(load_published("moe_compression")).set_index("label")
    assert pub.loc["AWQ 4-bit + Layer Drop (8 of 32)", "speedup"] == 6.05
    assert pub.loc["AWQ 4-bit + Layer Drop (8 of 32)", "retained"] == pytest.approx(100 * 66.1 / 71.5)
    plot_tradeoff(pts.reset_index(), pub.reset_index(), tmp_path / "f.png", tmp_path / "f.pdf", "t", 64)
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="no method has both"):
        plot_tradeoff(pts.iloc[:0], None, tmp_path / "g.png", tmp_path / "g.pdf", "t")
    assert not (tmp_path / "g.png").exists()
