"""Malformed configs: each one defect on config/smoke.yaml (merged over config.yaml, as `snakemake
--configfile config/smoke.yaml` does) must be rejected when the DAG is built, naming its key (issue 19 sec. 2).

The checks run in-process (moelab.config_keys.check_schema, snakemake's validate for the defaults, then
moelab.config.check_workflow_config), as rules/common.smk and the Snakefile call them; two cases go through
`snakemake -n` to prove the Snakefile runs them before any job.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from moelab.config import check_workflow_config
from moelab.config_keys import _merged, check_schema, dotted, walk
from moelab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "config" / "schema.yaml"
NAN, INF = math.nan, math.inf
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
DELETE = object()
BLOCK_DROP = "compress.recipes.block_drop"


def _set(cfg: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        cfg = cfg.setdefault(part, {})
    if value is DELETE:
        del cfg[last]
    else:
        cfg[last] = value


def smoke_with(key: str, value) -> dict:
    cfg = _merged(copy.deepcopy(BASE), copy.deepcopy(SMOKE))
    _set(cfg, key, value)
    return cfg


def check(cfg: dict, overlays=None) -> None:
    check_schema(cfg, SCHEMA)
    validate(cfg, str(SCHEMA))  # fills defaults, as the Snakefile does
    if overlays is None:
        check_workflow_config(cfg)
    else:
        check_workflow_config(cfg, copy.deepcopy(BASE), overlays)


# (key the error must name, key to set, value); the key set is the key named unless given separately
CASES = [
    # the accepted cases
    ("construct.score_scale_factor", None, NAN),
    ("pretrain.lr", None, NAN),
    ("pretrain.domain_weights.web", None, INF),
    (
        "compress.recipes.block_drop",
        None,
        [{"method": "block_drop", "n_drop": 4}],
    ),  # the tiny model: 4 blocks
    ("construct.num_experts", None, 3),  # 256 % 3
    ("model.pretrained", "model", {"source": "pretrained", "pretrained": "/nonexistent/model-folder"}),
    (
        "compress.base_model.pretrained",
        "compress.base_model",
        {"pretrained": "./no/such/base-model", "revision": None, "format": "hf"},
    ),
    # the rejected cases stay rejected
    ("construct.top_k", None, 5),
    ("pretrain.steps", None, 0),
    ("pretrain.domain_weights", None, {"web": 0, "code": 0, "books": 0, "wiki": 0}),
    # NaN / inf wherever a number is read
    ("sft.lr", None, NAN),
    ("sft.domain_weights.math", None, INF),
    ("pretrain.weight_decay", None, NAN),
    ("pretrain.grad_clip", None, INF),
    ("pretrain.min_lr_ratio", None, NAN),
    ("pretrain.betas[0]", "pretrain.betas", [NAN, 0.95]),
    ("construct.balance_loss_weight", None, INF),
    ("sft.weight_decay", None, -INF),
    # types and bounds (schema, dotted key)
    ("pretrain.lr", None, "1e-3x"),
    ("pretrain.batch_size", None, 0),
    ("pretrain.batch_size", None, -4),
    ("pretrain.seq_len", None, 2.5),
    ("pretrain.steps", None, "ten"),
    ("sft.steps", None, -1),
    ("sft.max_len", None, 4),
    ("construct.num_experts", None, 0),
    ("construct.top_k", None, 0),
    ("construct.method", None, "kmeans"),
    ("construct.router_type", None, "switch"),
    ("construct.gate_network", None, "transformer"),
    ("construct.score_scale_factor", None, 0),
    ("construct.balance_loss_weight", None, -0.01),
    (
        "compress.recipes.block_drop[0].mode",
        BLOCK_DROP,
        [{"method": "block_drop", "n_drop": 1, "mode": "random"}],
    ),
    ("compress.recipes.block_drop[0].method", BLOCK_DROP, [{"method": "magic_drop"}]),
    ("compress.recipes.block_drop[0].n_drop", BLOCK_DROP, [{"method": "block_drop", "n_drop": -1}]),
    ("compress.recipes.block_drop[0].sparsity", BLOCK_DROP, [{"method": "wanda", "sparsity": 1.5}]),
    ("compress.recipe", None, "no_such_recipe"),
    ("compress.calib_sequences", None, 0),
    ("evaluate.suite", None, "remote"),
    ("evaluate.batch_size", None, 0),
    ("model.source", None, "onnx"),
    ("device", None, "tpu"),
    ("dtype", None, "int3"),
    ("seed", None, "abc"),
    ("pretrain.betas", None, [0.9]),
    ("pretrain.domain_weights", None, [0.5, 0.5]),
    ("pretrain.domain_weights.web", None, -1.0),
    ("pretrain", None, []),
    ("construct.unknown_key", None, 1),
    ("pretrain.mixture.strategy", None, "doremi"),
    ("pretrain.mixture.eval_interval", None, 0),
    ("launcher.launcher", None, "mpirun"),
    # cross-key and model-size checks
    ("pretrain.domain_weights", "pretrain.domain_weights.poetry", 1.0),
    ("sft.domain_weights", "sft.domain_weights.legal", 1.0),
    ("compress.calib_domain", None, "arxiv"),
    ("compress.recipes.block_drop", None, [{"method": "block_drop", "n_drop": 3}] * 3),  # 9 of 4 blocks
    ("construct.num_experts", None, 5),
    ("pretrain.seq_len", None, 4096),  # the tiny model: 2048 positions
    ("sft.max_len", None, 100000),
    ("compress.calib_seq_len", None, 3000),
    # 1025 prompt + 1025 generated tokens > the tiny model's 2048 positions
    ("compress.speed.prompt_lens", None, [8, 1025]),
    ("compress.speed.prompt_lens", None, []),
    ("compress.speed.prompt_lens", None, [8, 8]),
    ("compress.speed.repeats", None, 0),
    ("compress.speed.interleave", None, "yes"),
    ("compress.recipes.speed", None, [{"method": "rtn", "bits": 8}]),  # results/compress/speed/ is taken
    ("model.tiny", "model.tiny", DELETE),
    ("pretrain.domain_weights", "pretrain.domain_weights", DELETE),
]


def _case_id(case) -> str:
    key, setter, value = case
    return f"{setter or key}={value!r}"[:60]


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_malformed_config_is_rejected_naming_its_key(case):
    named, setter, value = case
    cfg = smoke_with(setter or named, value)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    assert named in str(err.value)


def test_at_least_fifty_cases():
    assert len(CASES) >= 50


def test_smoke_default_and_paper_configs_pass():
    check(_merged(copy.deepcopy(BASE), copy.deepcopy(SMOKE)), [("config/smoke.yaml", SMOKE)])
    check(copy.deepcopy(BASE), [])
    for overlays in (["paper"], ["paper", "paper_v2"], ["paper", "paper_2of8"], ["gpu"]):
        cfg, files = copy.deepcopy(BASE), []
        for name in overlays:
            data = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
            cfg, files = _merged(cfg, data), [*files, (f"config/{name}.yaml", data)]
        check(cfg, files)


def test_empty_map_in_an_overlay_names_file_and_key():
    overlay = {"pretrain": {"domain_weights": {}}}
    cfg = _merged(_merged(copy.deepcopy(BASE), copy.deepcopy(SMOKE)), overlay)
    with pytest.raises(ConfigError, match=r"my_overlay\.yaml: pretrain\.domain_weights: \{\}"):
        check(cfg, [("config/smoke.yaml", SMOKE), ("my_overlay.yaml", overlay)])


def test_empty_map_over_an_empty_map_is_fine():
    base = {"a": {}, "b": {"c": 1}}
    from moelab.config_keys import check_overlays

    check_overlays(base, [("x.yaml", {"a": {}})])
    with pytest.raises(ConfigError, match=r"x\.yaml: b: \{\}"):
        check_overlays(base, [("x.yaml", {"b": {}})])


def test_walk_and_dotted_keys():
    assert list(walk({"a": {"b": [1, {"c": 2}]}})) == [("a.b[0]", 1), ("a.b[1].c", 2)]
    assert dotted(["pretrain", "betas", 0]) == "pretrain.betas[0]"
    assert dotted([]) == "(top level)"


def test_gguf_header_reader_matches_smollm2():
    from moelab.model_facts import dense_facts

    facts = dense_facts(BASE["model"])
    assert (facts.num_hidden_layers, facts.hidden_size, facts.intermediate_size) == (30, 576, 1536)
    assert (facts.num_attention_heads, facts.num_key_value_heads, facts.max_position_embeddings) == (
        9,
        3,
        8192,
    )


def test_truncated_gguf_is_named(tmp_path):
    from moelab.files import package_file
    from moelab.model_facts import gguf_metadata

    src = package_file(BASE["model"]["gguf_package"], BASE["model"]["gguf_file"])
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src.read_bytes()[:4096])
    with pytest.raises(ConfigError, match="cut.gguf"):
        gguf_metadata(cut)


def test_local_folder_sizes_are_read_from_config_json(tmp_path):
    import json

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {"num_hidden_layers": 6, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
        )
    )
    cfg = smoke_with("model", {"source": "pretrained", "pretrained": str(folder)})
    cfg["construct"]["num_experts"] = 4  # 128 / 64 = 2: every ablation split fits
    cfg["compress"]["recipes"]["block_drop"] = [{"method": "block_drop", "n_drop": 5}]
    check(cfg)
    cfg["compress"]["recipes"]["block_drop"] = [{"method": "block_drop", "n_drop": 6}]
    with pytest.raises(ConfigError, match="compress.recipes.block_drop drops 6 blocks .* the 6 blocks"):
        check(cfg)


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (["--configfile", "config/smoke.yaml", "--config", "pretrain={lr: .nan}"], "pretrain.lr"),
        ({"construct": {"num_experts": 3}}, "construct.num_experts"),
        ({"pretrain": {"domain_weights": {}}}, "pretrain.domain_weights: {}"),
    ],
)
def test_snakemake_dry_run_stops_before_any_job(tmp_path, flag, named):
    if isinstance(flag, dict):  # an overlay file after config/smoke.yaml
        (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(flag))
        flag = ["--configfile", "config/smoke.yaml", str(tmp_path / "overlay.yaml")]
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run(
        [str(snakemake), "-n", "--nolock", *flag],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode != 0
    assert named in out.stdout + out.stderr
    assert "Building DAG" not in out.stdout + out.stderr  # stopped while the Snakefile was read
