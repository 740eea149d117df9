"""moelab.resources: job sizes from the config, hand-computed for the smoke model and the paper 7B pretrain;
growth with attempts, caps, overrides (config job_resources), the schema's bounds, the DAG's job counts."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from moelab.errors import ConfigError
from moelab.resources import (
    KNOWN_MODELS,
    ModelSize,
    cost_table,
    dag_jobs,
    dense_size,
    format_table,
    job_resources,
    load_config,
    stage_size,
)

ROOT = Path(__file__).resolve().parents[1]


def merged(*files, extra=None):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in files:
        update_config(cfg, yaml.safe_load((ROOT / f).read_text()))
    update_config(cfg, extra or {})
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    return cfg


@pytest.fixture(scope="module")
def smoke():
    return merged("config/smoke.yaml")


@pytest.fixture(scope="module")
def paper():
    return merged("config/paper.yaml")


def test_parameter_count_of_the_smoke_model_by_hand_and_by_transformers(smoke):
    from transformers import LlamaConfig, LlamaForCausalLM

    size = dense_size(smoke)  # model.tiny: H 64, 4 layers, I 256, 4 heads, 2 KV heads, tied, V 49152
    # 49152*64 + 4 * (2*64^2 + 2*64*2*16 + 3*64*256 + 2*64) + 64
    assert size.params() == 3_145_728 + 4 * (8192 + 4096 + 49_152 + 128) + 64 == 3_392_064
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    )  # fmt: skip
    assert model.num_parameters() == size.params()
    moe = stage_size(smoke, "moe")  # 4 experts, top-2, mlp gate 64*4 + 4*4, noisy 64*4 per layer
    assert moe.params() == 3_392_064 + 4 * (256 + 16 + 256)
    assert moe.active_params() == moe.params() - 4 * (3 * 64 * 256 // 2)


def test_known_paper_models_have_their_published_sizes(paper):
    assert KNOWN_MODELS["meta-llama/Llama-2-7b-hf"].params() == 6_738_415_616
    assert KNOWN_MODELS["meta-llama/Meta-Llama-3-8B-Instruct"].params() == 8_030_261_248
    assert KNOWN_MODELS["mistralai/Mixtral-8x7B-v0.1"].params() == 46_702_792_704
    moe = stage_size(paper, "moe")  # 16 experts top-4: router 4096*16 + 16*16 + 4096*16 per layer
    assert moe.params() == 6_738_415_616 + 32 * 131_328 == 6_742_618_112
    assert moe.active_params() == 6_742_618_112 - 32 * 3 * 4096 * 11008 * 12 // 16 == 3_496_226_816  # "3.5B"


def test_smoke_pretrain_job_by_hand(smoke):
    """CPU: 7 x P x 4 bytes (weights, grads, 2 moments, a checkpoint copy of model + moments), activations of the
    whole batch (4 x 64 tokens, 34 s b h x 2 per layer, 3 x b s V x 4 of logits), the pool, 1.5 GB process."""
    p = 3_394_176
    act = 4 * 34 * 64 * 4 * 64 * 2 + 3 * 4 * 64 * 49152 * 4
    pool = 40_000 * 4 * (1 + 8 / 4)
    mem = (7 * p * 4 + act + pool) / 1e6 + 1500
    # runtime: 6 steps x 4 x 64 tokens at 250 tok/s x 134.5M / active params, plus 10 min
    run = 6 * 4 * 64 / (250 * 134.5e6 / (p - 4 * 3 * 64 * 256 // 2)) / 60 + 10
    got = job_resources(smoke, "pretrain", 1, {"cpt_model": "pretrain"})
    assert got == {"mem_mb": math.ceil(mem), "runtime": math.ceil(run), "gpu": 0, "cpus": 16,
                   "disk_mb": math.ceil(10 * p * 4 / 1e6 + 1000)}  # fmt: skip
    assert got["mem_mb"] == 1751 and got["runtime"] == 11


def test_compress_speed_jobs_by_hand(smoke, paper):
    """Decode steps: per length L, 1 warm-up of min(L, 9) tokens + (repeats + 1 memory run) x L, for two models.
    Smoke (CPU, L = 8, 16, 1 repeat): 53 ms x active / 134.5M per step, both models + the memory child's copy in
    memory; paper (1 GPU, bf16, L = 32 .. 4096, 3 repeats): a step is 32 layers x 1 ms (launch bound: 12.9B active
    x 2 bytes / 1.5 TB/s = 17 ms is less), one model on the host, loading 4 x the bf16 model at 200 MB/s."""
    p, active = 3_394_176, 3_295_872  # the smoke MoE: 4 experts, top-2 (its FFN half active)
    steps = 2 * ((8 + 2 * 8) + (9 + 2 * 16))
    mem = 3 * p * 4 / 1e6 + 1500 + 1500
    run = (steps * 0.053 * active / 134.5e6 + 4 * p * 4 / 1e6 / 200) / 60 + 10
    got = job_resources(smoke, "compress_speed", 1, {"recipe": "block_drop"})
    assert steps == 130 and got == {"mem_mb": math.ceil(mem), "runtime": math.ceil(run), "gpu": 0, "cpus": 16,
                                    "disk_mb": 1000}  # fmt: skip
    assert got["mem_mb"] == 3041 and got["runtime"] == 11
    mixtral = 46_702_792_704
    lens = (32, 64, 128, 256, 512, 1024, 2048, 4096)
    steps = 2 * sum(min(n, 9) + 4 * n for n in lens)
    assert steps == 65_424 and 12_879_925_248 * 2 / 1.5e12 < 32e-3
    run = (steps * 32e-3 + 4 * mixtral * 2 / 1e6 / 200) / 60 + 10
    got = job_resources(paper, "compress_speed", 1, {"recipe": "block_drop"})
    assert got == {"mem_mb": math.ceil(mixtral * 2 / 1e6 + 4000), "runtime": math.ceil(run), "gpu": 1, "cpus": 16,
                   "disk_mb": 1000}  # fmt: skip
    assert got["mem_mb"] == 97_406 and got["runtime"] == 77


def test_paper_7b_pretrain_job_by_hand(paper):
    """8 GPU processes, each: the host copy of model + 2 moments at resume 3 x P x 2 bytes, the SlimPajama pool
    (3.5e9 characters + 8.75e8 int64 tokens) and 4 GB; 200B tokens at 6 x 3.5B FLOPs on 8 x 35% of 312 TFLOP/s."""
    per = (3 * 6_742_618_112 * 2 + 3.5e9 + 3.5e9 / 4 * 8) / 1e6 + 4000
    assert job_resources(paper, "pretrain", 1, {"cpt_model": "pretrain"}) == {
        "mem_mb": math.ceil(8 * per), "runtime": 1440, "gpu": 8, "cpus": 16,
        "disk_mb": math.ceil(10 * 6_742_618_112 * 2 / 1e6 + 1000),
    }  # fmt: skip
    assert math.ceil(8 * per) == 439_646  # was 12 GB for the 8 processes
    rows, totals = cost_table(paper)
    pretrain = next(r for r in rows if r["rule"] == "pretrain")
    tokens = 13624 * 3584 * 4096
    hours = (6 * 3_496_226_816 * tokens / (8 * 312e12 * 0.35) / 60 + 10) / 60
    assert pretrain["run_h"] == pytest.approx(hours) and round(hours) == 1334  # 55.6 days of 8 GPUs
    assert pretrain["attempts"] == 56 and pretrain["gpu_h"] == pytest.approx(8 * hours)
    assert totals["gpu_h"] > pretrain["gpu_h"] and totals["hub_cache_mb"] == pytest.approx(
        (6_738_415_616 + 6_740_514_816 + 46_702_792_704) * 2 / 1e6
    )


def test_paper_download_jobs_by_hand(paper):
    """Llama-2-7B is loaded whole (2 x 13.5 GB: the model and its re-saved copy) from a 50 MB/s hub; a
    SlimPajama set streams 5e8 / share characters at 10 MB/s (stackexchange: 3.3% of SlimPajama)."""
    mb = 6_738_415_616 * 2 / 1e6
    model = job_resources(paper, "download_model")
    assert model["mem_mb"] == math.ceil(2 * mb + 4000) == 30_954  # was 4 GB
    assert model["runtime"] == math.ceil((mb / 50 + 2 * mb / 200) / 60 + 10) == 17
    data = job_resources(paper, "download_pretrain_data", 1, {"domain": "stackexchange"})
    assert data["runtime"] == math.ceil(5e8 / 0.033 / 1e6 / 10 / 60 + 10) == 36  # was 10 min
    assert data["mem_mb"] == math.ceil(2 * 500 + 10_000 * 0.05 + 1500) == 3000  # was 2 GB


def test_memory_and_runtime_grow_with_the_attempt_up_to_the_caps(smoke, paper):
    first = job_resources(smoke, "sft")
    second, third = job_resources(smoke, "sft", 2), job_resources(smoke, "sft", 3)
    assert second["mem_mb"] == math.ceil(first["mem_mb"] * 1.5)
    assert third["mem_mb"] == math.ceil(first["mem_mb"] * 2.25)
    # growth applies to the unrounded estimate: 10.003 min (4 steps x 4 x 128 tokens + 10 min) x 2.25 -> 23
    assert (first["runtime"], third["runtime"]) == (11, 23)
    assert second["gpu"] == first["gpu"] and second["disk_mb"] == first["disk_mb"]
    big = [job_resources(paper, "pretrain", a, {"cpt_model": "pretrain"})["mem_mb"] for a in (1, 3, 4)]
    assert big == [439_646, 989_203, 1_000_000]  # 439,645.7 MB x 2.25 (unrounded); attempt 4: the 1 TB cap
    sft = [job_resources(paper, "sft", a)["runtime"] for a in (1, 2, 5, 6)]
    assert sft == [220, 330, 1113, 1440]  # 219.8 min x 1.5^(a-1), unrounded; attempt 6: the 24 h cap


def test_override_replaces_the_first_attempt_and_still_grows():
    cfg = merged("config/smoke.yaml", extra={"job_resources": {"pretrain": {"mem_mb": 2000, "runtime": 1}}})
    got = [job_resources(cfg, "pretrain", a, {"cpt_model": "pretrain"}) for a in (1, 2, 3)]
    assert [(g["mem_mb"], g["runtime"]) for g in got] == [(2000, 1), (3000, 2), (4500, 3)]
    assert got[0]["disk_mb"] == job_resources(merged("config/smoke.yaml"), "pretrain")["disk_mb"]
    with pytest.raises(ConfigError, match="attempts count from 1"):
        job_resources(cfg, "pretrain", 0)


@pytest.mark.parametrize(
    "override,match",
    [
        ({"pretrain": {"mem_mb": 0}}, "0 is less than the minimum of 100"),
        ({"pretrain": {"runtime": 2000}}, "2000 is greater than the maximum of 1440"),
        ({"pretrain": {"memory": 4000}}, "'memory' was unexpected"),
        ({"pretrian": {"mem_mb": 4000}}, "'pretrian' was unexpected"),
        ({"evaluate": {"gpu": 1.5}}, "1.5 is not of type 'integer'"),
    ],
)
def test_schema_rejects_bad_overrides(override, match, tmp_path):
    with pytest.raises(Exception, match=match):
        merged("config/smoke.yaml", extra={"job_resources": override})
    (tmp_path / "over.yaml").write_text(yaml.safe_dump({"job_resources": override}))
    with pytest.raises(ConfigError, match=re.escape("job_resources")):
        load_config(ROOT / "config.yaml", ROOT / "config" / "smoke.yaml", tmp_path / "over.yaml")


def test_unknown_hub_model_names_the_key(smoke):
    cfg = {**smoke, "model": {"source": "pretrained", "pretrained": "nobody/unknown-model-xyz"}}
    with pytest.raises(ConfigError, match=r"model.pretrained='nobody/unknown-model-xyz'.*hf download"):
        job_resources(cfg, "download_model")


def test_local_folder_is_sized_from_its_config_json(tmp_path, smoke):
    (tmp_path / "config.json").write_text(
        '{"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64, '
        '"num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": false, "torch_dtype": "bfloat16"}'
    )
    cfg = {**smoke, "model": {"source": "pretrained", "pretrained": str(tmp_path)}}
    assert dense_size(cfg) == ModelSize(100, 32, 2, 64, 4, 4, False, stored_bytes=2)
    assert dense_size(cfg).params() == 2 * 100 * 32 + 2 * (4 * 32 * 32 + 3 * 32 * 64 + 64) + 32


@pytest.mark.parametrize("files", [("config/paper.yaml",), ("config/paper.yaml", "config/paper_v2.yaml")])
def test_dag_jobs_match_the_snakemake_dry_run(files):
    """The jobs the cost table sums are those `snakemake -n` plans (routing: every routing.stages entry, the
    `routing` target; `all` runs those of the figures)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", "--configfile", *files],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout.split("Job stats:")[1], re.M))
    counts = {}
    for rule, _ in dag_jobs(merged(*files)):
        counts[rule] = counts.get(rule, 0) + 1
    for rule, n in counts.items():
        if rule != "routing_analysis":
            assert int(stats.get(rule, 0)) == n, rule
    assert set(stats) & {"sft", "pretrain", "evaluate"} <= set(counts)


def test_cli_prints_the_table_and_totals():
    proc = subprocess.run(
        [sys.executable, "-m", "moelab.resources", "config.yaml", "config/paper.yaml"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| pretrain | 1 | 8 | 439.6 GB | 1440 min | 55.6 d | 56 |" in proc.stdout
    assert "**total**" in proc.stdout and "Hub cache" in proc.stdout
    assert proc.stdout.strip() == format_table(
        *cost_table(load_config(ROOT / "config.yaml", ROOT / "config/paper.yaml"))
    )
