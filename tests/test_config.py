"""Config validation: the schema and the cross-field checks name the offending key."""

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from moelab.config import ConfigError, check_config, check_model_facts

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "config" / "schema.yaml")


def default_config():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def merged(override: dict) -> dict:
    """Snakemake's --configfile semantics: nested dicts are updated, not replaced."""
    cfg = default_config()

    def update(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                update(dst[k], v)
            else:
                dst[k] = v

    update(cfg, override)
    return cfg


@pytest.mark.parametrize("path", ["config.yaml", "config/smoke.yaml"])
def test_shipped_configs_validate(path):
    cfg = default_config() if path == "config.yaml" else merged(yaml.safe_load((ROOT / path).read_text()))
    validate(cfg, SCHEMA)
    check_config(cfg)


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c["pretrain"].update(steps=-5), "steps"),
        (lambda c: c["construct"].update(method="magic"), "magic"),
        (lambda c: c.update(colour="blue"), "colour"),
        (lambda c: c["pretrain"].update(stepz=3), "stepz"),
        (lambda c: c["evaluate"].update(limit="ten"), "ten"),
        (lambda c: c["pretrain"]["mixture"].update(strategy="doremi"), "doremi"),
        (lambda c: c["pretrain"]["mixture"].update(eta=-1.0), "eta"),
        (lambda c: c["activated_baseline"].update(experts=[1, 1]), "experts"),
    ],
)
def test_schema_errors_name_the_key(mutate, needle):
    cfg = copy.deepcopy(default_config())
    mutate(cfg)
    with pytest.raises(WorkflowError, match=needle):
        validate(cfg, SCHEMA)


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c["construct"].update(top_k=9), "construct.top_k"),
        (lambda c: c["activated_baseline"].update(experts=[0, 8]), "activated_baseline.experts: expert 8"),
        (lambda c: c["pretrain"]["domain_weights"].update(arxiv=0.1), "arxiv"),
        (lambda c: c["sft"]["domain_weights"].update(poetry=1.0), "poetry"),
        (lambda c: c["compress"].update(calib_domain="math"), "compress.calib_domain"),
        (lambda c: c["compress"].update(recovery_domain="math"), "compress.recovery_domain='math'"),
        (
            lambda c: c["compress"]["recipes"].update(
                q=[{"method": "rtn", "bits": 8}, {"method": "lora_recovery"}]
            ),
            r"compress\.recipes\.q\[1\]\.target_modules: lora_recovery adapts",
        ),
        (lambda c: c["model"].update(source="pretrained"), "model.pretrained"),
        (
            lambda c: c["pretrain"]["mixture"].update(reference_loss={"web": 4.0}),
            "pretrain.mixture.reference_loss has no value for domain 'books'",
        ),
        (
            lambda c: c["pretrain"]["mixture"].update(
                reference_loss={"web": 1, "code": 1, "books": 1, "wiki": 1, "cc": 1}
            ),
            "reference_loss names 'cc'",
        ),
    ],
)
def test_cross_field_errors_name_the_key(mutate, needle):
    cfg = copy.deepcopy(default_config())
    mutate(cfg)
    with pytest.raises(ConfigError, match=needle):
        check_config(cfg)


def test_recovery_seq_len_must_fit_the_model():
    cfg = merged(yaml.safe_load((ROOT / "config/smoke.yaml").read_text()))
    check_model_facts(cfg)
    cfg["compress"]["recipes"]["block_drop+lora"][1]["seq_len"] = 4096
    with pytest.raises(ConfigError, match=r"compress\.recipes\.block_drop\+lora\[1\]\.seq_len=4096 exceeds"):
        check_model_facts(cfg)
