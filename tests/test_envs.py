"""The conda environment files pin the same versions as requirements.lock, and every rule's env exists."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"training", "evaluation", "report", "chemistry", "vision"}  # one env per stage family (issue #6)
# Pinned in an env but not (yet) in requirements.lock: the side papers' packages the demo venv does not need.
NOT_IN_LOCK = {"rdkit", "timm", "torchvision"}


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def env_pins(env: str) -> list[tuple[str, str]]:
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    out = []
    for entry in pip:
        if entry.startswith("-e"):
            continue
        assert "==" in entry, f"{env}: {entry} is not pinned (name==version)"
        name, version = entry.split("==")
        out.append((name.strip().lower().replace("_", "-"), version.strip()))
    return out


def test_one_env_per_stage_family():
    assert {p.stem for p in (ROOT / "envs").glob("*.yaml")} >= FAMILIES


@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_env_pins_match_lock(env):
    pins = lock_pins()
    checked = 0
    for name, version in env_pins(env):
        if name in NOT_IN_LOCK and name not in pins:
            continue
        assert name in pins, f"{env}: {name} is not in requirements.lock (nor in NOT_IN_LOCK)"
        assert pins[name] == version, f"{env}: {name}=={version} but requirements.lock has {pins[name]}"
        checked += 1
    assert checked >= 3
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    assert "python=3.11" in spec["dependencies"], f"{env}: python must be 3.11 like the venv"
    assert any(e.startswith("-e ..") for e in spec["dependencies"][-1]["pip"]), f"{env}: installs moelab"


def test_torchvision_matches_torch():
    """torchvision 0.N is built for torch 2.(N-15): 0.28 <-> 2.13."""
    pins = dict(env_pins("vision.yaml"))
    major_minor = int(pins["torch"].split(".")[1])
    assert int(pins["torchvision"].split(".")[1]) == major_minor + 15


def test_every_rule_env_exists():
    found = 0
    for smk in (ROOT / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"\.\./(envs/[^"]+)"', smk.read_text()):
            assert (ROOT / env).is_file(), f"{smk.name}: {env} does not exist"
            found += 1
    assert found >= 8


def test_lock_pins_the_issue_versions():
    pins = lock_pins()
    assert pins["torch"] == "2.13.0" and pins["lm-eval"] == "0.4.13" and pins["snakemake"] == "9.27.1"
