"""config/paper.yaml: the papers' settings, a valid config, a DAG that builds in seconds; launcher/GPU checks."""

import re
import time
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import update_config, validate
from test_workflow import copy_workflow, snakemake

from moelab.config import (
    LOCAL_PRETRAIN_DOMAINS,
    LOCAL_SFT_DOMAINS,
    ConfigError,
    check_config,
    train_section,
)
from moelab.runtime import resolve_device, resolve_dtype

ROOT = Path(__file__).resolve().parents[1]


def merged(*files):
    """config.yaml with the given files merged over it, as `--configfile` does, validated by the schema."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in files:
        update_config(cfg, yaml.safe_load((ROOT / f).read_text()))
    validate(cfg, str(ROOT / "config" / "schema.yaml"))
    return cfg


@pytest.fixture(scope="module")
def paper():
    return merged("config/paper.yaml")


def test_paper_config_is_valid_and_has_the_papers_settings(paper):
    check_config(paper)
    assert paper["model"] == {
        **paper["model"],
        "source": "pretrained",
        "pretrained": "meta-llama/Llama-2-7b-hf",
    }
    assert (paper["device"], paper["dtype"], paper["seed"]) == ("cuda", "bfloat16", 1227)
    c = paper["construct"]
    assert (c["method"], c["num_experts"], c["top_k"]) == ("random", 16, 4)
    p = paper["pretrain"]
    tokens_per_step = p["batch_size"] * p["seq_len"]
    assert p["seq_len"] == 4096 and 14e6 <= tokens_per_step <= 16e6  # "global batch ~15M tokens"
    assert p["steps"] * tokens_per_step == pytest.approx(200e9, rel=0.001)  # 200B tokens
    assert (p["lr"], p["warmup_steps"], p["min_lr_ratio"], p["weight_decay"], p["grad_clip"]) == (
        2e-4, 100, 0.1, 0.1, 1.0
    )  # fmt: skip
    assert p["betas"] == [0.9, 0.95]
    weights = train_section(paper, "pretrain")["domain_weights"]  # Sheared-LLaMA static mix
    assert weights == {"cc": 0.361, "c4": 0.492, "github": 0.008, "wikipedia": 0.031, "book": 0.091,
                       "arxiv": 0.007, "stackexchange": 0.010}  # fmt: skip
    assert sum(weights.values()) == pytest.approx(1.0)
    s = paper["sft"]
    assert (s["lr"], s["batch_size"], s["steps"], s["max_len"], s["warmup_steps"]) == (
        2e-5,
        128,
        2000,
        2048,
        60,
    )
    assert s["base_model"] == {"pretrained": "llama-moe/LLaMA-MoE-v1-3_5B-2_8", "revision": None,
                               "format": "llama_moe_v1"}  # MoE-SFT tunes the released 3.5B (2/8)  # fmt: skip
    assert "base_model" not in train_section(paper, "sft")
    k = paper["compress"]
    assert (
        k["base_model"]["pretrained"] == "mistralai/Mixtral-8x7B-v0.1" and k["base_model"]["format"] == "hf"
    )
    assert k["recipes"][k["recipe"]] == [{"method": "block_drop", "mode": "discrete", "n_drop": 5}]
    assert (k["calib_sequences"], k["calib_seq_len"], k["calib_domain"]) == (128, 2048, "c4")
    hub = paper["data"]["hub"]
    assert paper["data"]["source"] == "hub" and set(hub["pretrain"]) == set(paper["data"]["pretrain_domains"])
    assert {v["filter_value"] for v in hub["pretrain"].values()} == {
        f"RedPajama{n}"
        for n in ("CommonCrawl", "C4", "Github", "Wikipedia", "Book", "ArXiv", "StackExchange")
    }
    n = paper["launcher"]["num_processes"]
    for section in ("pretrain", "sft"):  # global batch = micro batch x processes x accumulation
        t = paper[section]
        assert t["batch_size"] % (t["micro_batch_size"] * n) == 0
    assert (ROOT / paper["launcher"]["accelerate_config"]).is_file()
    if "suite" in paper["evaluate"]:
        assert paper["evaluate"]["suite"] == "hub" and paper["evaluate"]["limit"] is None


@pytest.mark.parametrize("override,experts", [("config/paper_2of16.yaml", 16), ("config/paper_2of8.yaml", 8)])
def test_other_paper_configurations_are_valid_overrides(override, experts):
    cfg = merged("config/paper.yaml", override)
    check_config(cfg)
    c = cfg["construct"]
    assert (c["method"], c["num_experts"], c["top_k"]) == ("random", experts, 2)


def test_every_compression_recipe_runs_on_mixtral_and_is_checked_by_its_published_sizes(paper):
    """compress.base_model (Mixtral-8x7B) is imported as our LlamaMoE, so compress.methods lists every recipe;
    the recipes are checked before the download against its published config.json (32 blocks, 8 experts, top-2)."""
    from moelab.config import check_model_facts
    from moelab.model_facts import HUB_FACTS
    from moelab.resources import KNOWN_MODELS

    k = paper["compress"]
    assert k["methods"] == list(k["recipes"])
    mixtral = HUB_FACTS[k["base_model"]["pretrained"]]
    size = KNOWN_MODELS[k["base_model"]["pretrained"]]  # resources' copy of the same config.json
    assert (mixtral.num_hidden_layers, mixtral.num_experts, mixtral.top_k) == (32, 8, 2)
    assert (size.layers, size.experts, size.top_k, size.hidden) == (32, 8, 2, mixtral.hidden_size)
    assert size.ffn == mixtral.num_experts * mixtral.intermediate_size
    check_model_facts(paper)
    for step, named in (
        (
            {"method": "expert_drop", "keep": 8},
            r"keep=8 must lie in \[top_k=2, num_experts=8\) of compress.base_model",
        ),
        ({"method": "expert_drop", "keep": 1}, "keep=1 must lie in"),
        (
            {"method": "layer_drop", "n_drop": 32},
            "n_drop=32 must be below the 32 FFN layers of compress.base_model",
        ),
        ({"method": "block_drop", "n_drop": 32}, "drops 32 blocks"),
    ):
        cfg = merged("config/paper.yaml")
        cfg["compress"]["recipes"]["expert_drop_global"] = [step]
        with pytest.raises(ConfigError, match=named):
            check_model_facts(cfg)


def test_paper_dag_builds_in_seconds(tmp_path):
    wf = copy_workflow(tmp_path)
    t0 = time.time()
    out = snakemake("-n", "--configfile", "config/paper.yaml", cwd=wf).stdout
    seconds = time.time() - t0
    assert seconds < 60, f"dry run took {seconds:.1f} s"
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["download_pretrain_data"] == "7" and counts["download_sft_data"] == "4"
    assert counts["download_base_model"] == "2"  # LLaMA-MoE-v1-3.5B for SFT, Mixtral-8x7B for compression
    assert re.search(r"rule sft:\n    input: resources/models/sft_base,", out)
    assert re.search(r"rule compress:\n    input: resources/models/compress_base,", out)
    for rule in ("download_model", "construct", "pretrain", "sft", "compress", "evaluate"):
        assert int(counts[rule]) >= 1, rule
    assert re.search(r"rule pretrain:(?:.|\n)*?resources: .*gpus?=8", out)  # one GPU per launched process


def test_llama_moe_v2_overlays_have_the_papers_settings():
    v2 = merged("config/paper.yaml", "config/paper_v2.yaml")
    check_config(v2)
    assert v2["model"]["pretrained"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    c = v2["construct"]
    assert (c["method"], c["num_experts"], c["top_k"], c["num_shared_experts"]) == ("sequential", 8, 2, 0)
    assert (c["router_type"], c["gate_network"], c["score_scale_factor"]) == ("softmax_topk", "linear", 4.0)
    s = v2["sft"]
    assert (s["from_stage"], s["base_model"], s["max_len"], s["lr"], s["min_lr_ratio"]) == (
        "moe",
        None,
        4096,
        2e-5,
        0,
    )
    assert s["warmup_steps"] == round(0.03 * s["steps"])  # 3% warm-up, in each stage
    stage1, stage2 = train_section(v2, "sft_stage1"), train_section(v2, "sft")
    assert stage1["warmup_steps"] == round(0.03 * stage1["steps"]) and stage1["lr"] == 2e-5
    assert {d for d, w in stage1["domain_weights"].items() if w} == {
        "openhermes",
        "slimorca",
        "infinity",
        "magpie",
    }
    assert {d for d, w in stage2["domain_weights"].items() if w} == {"infinity", "metamath"}
    assert "stage1" not in stage2 and stage1["max_len"] == stage2["max_len"] == 4096
    assert set(train_section(v2, "sft")["domain_weights"]) == set(v2["data"]["sft_domains"])
    assert {p for papers in v2["evaluate"]["stages"].values() for p in papers} == {"llama_moe_v2"}
    shared = merged("config/paper.yaml", "config/paper_v2.yaml", "config/paper_v2_1s7.yaml")
    check_config(shared)
    c = shared["construct"]
    assert (c["num_experts"], c["top_k"], c["num_shared_experts"], c["score_scale_factor"]) == (8, 2, 1, 1.0)


def test_llama_moe_v2_dag_posttrains_right_after_construction(tmp_path):
    wf = copy_workflow(tmp_path)
    out = snakemake(
        "-n", "llama_moe_v2", "--configfile", "config/paper.yaml", "config/paper_v2.yaml", cwd=wf
    ).stdout
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert counts["download_sft_data"] == "5" and counts["evaluate"] == "2" and "pretrain" not in counts
    assert re.search(r"rule sft_stage1:\n    input: results/models/moe,", out)
    assert re.search(r"rule sft:\n    input: results/models/sft_stage1,", out)


def test_gpu_overlay_is_the_one_switch(tmp_path):
    """config/gpu.yaml (benchmarks/gpu_check.sh): device cuda + bf16 and nothing else; its DAG asks for GPUs."""
    assert yaml.safe_load((ROOT / "config/gpu.yaml").read_text()) == {"device": "cuda", "dtype": "bfloat16"}
    check_config(merged("config/gpu.yaml"))
    out = snakemake("-n", "--configfile", "config/gpu.yaml", cwd=copy_workflow(tmp_path)).stdout
    assert re.search(r"rule evaluate:(?:.|\n)*?resources: .*gpu=1", out)
    assert re.search(r"rule pretrain:(?:.|\n)*?resources: .*gpu=1", out)


def test_local_domain_lists_match_the_extractors():
    from moelab.data import local as sources

    assert LOCAL_PRETRAIN_DOMAINS == sources.PRETRAIN_DOMAINS
    assert LOCAL_SFT_DOMAINS == sources.SFT_DOMAINS


def demo(**changes):
    cfg = merged()
    for key, value in changes.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"launcher.num_processes": 2}, "torchrun or accelerate"),
        ({"launcher.kind": "accelerate", "launcher.accelerate_config": "x.yaml"}, "device cuda"),
        ({"device": "cuda", "launcher.kind": "accelerate"}, "accelerate_config"),
        ({"launcher.kind": "torchrun", "launcher.num_processes": 3}, "pretrain.batch_size=8"),
        ({"pretrain.micro_batch_size": 3}, "micro_batch_size"),
        ({"data.pretrain_domains": ["code", "cc"]}, r"data.pretrain_domains has \['cc'\]"),
        ({"data.source": "hub"}, r"data.hub.pretrain has no entry for \['code', 'books', 'web', 'wiki'\]"),
        ({"pretrain.domain_weights": {"code": 1, "books": 1, "web": 1}}, r"no weight for \['wiki'\]"),
        (
            {"sft.stage1": {"steps": 2, "domain_weights": {"math": 1}}},
            r"sft.stage1.domain_weights has no weight",
        ),
        (
            {
                "sft.stage1": {
                    "steps": 2,
                    "domain_weights": {"math": 0, "code": 0, "general": 0, "explain": 0},
                }
            },
            "sft.stage1.*sum",
        ),
        (
            {
                "sft.stage1": {
                    "steps": 2,
                    "domain_weights": {"math": 1, "code": 0, "general": 0, "explain": 0, "x": 1},
                }
            },
            "'x'",
        ),
        ({"pretrain.domain_weights": {"code": 1, "books": 1, "web": 1, "wiki": 1, "cc": 2}}, "'cc'"),
    ],
)
def test_inconsistent_config_names_the_key(changes, match):
    with pytest.raises(ConfigError, match=match):
        check_config(demo(**changes))


def test_zero_weight_domains_of_the_base_config_are_dropped():
    cfg = demo(**{"pretrain.domain_weights": {"code": 1, "books": 1, "web": 1, "wiki": 1, "cc": 0}})
    check_config(cfg)
    assert train_section(cfg, "pretrain")["domain_weights"] == {"code": 1, "books": 1, "web": 1, "wiki": 1}
    cfg = demo(**{"launcher.kind": "torchrun", "launcher.num_processes": 2, "pretrain.micro_batch_size": 2})
    check_config(cfg)  # 8 = 2 rows x 2 processes x 2 accumulation steps


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_fails_clearly():
    with pytest.raises(ValueError, match="device='cuda'.*set device: cpu"):
        resolve_device("cuda")
    assert resolve_dtype("cpu", "bfloat16") == "bfloat16"  # bf16 runs on CPU (slowly)
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("cpu", "float16")
