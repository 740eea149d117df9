"""The conda environment files pin the same versions as requirements.lock."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.mark.parametrize("env", sorted(p.name for p in (ROOT / "envs").glob("*.yaml")))
def test_env_pins_match_lock(env):
    spec = yaml.safe_load((ROOT / "envs" / env).read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = lock_pins()
    checked = 0
    for entry in pip:
        if "==" not in entry:
            continue
        name, version = entry.split("==")
        name = name.strip().lower().replace("_", "-")
        assert name in pins, f"{env}: {name} is not in requirements.lock"
        assert pins[name] == version.strip(), (
            f"{env}: {name}=={version} but requirements.lock has {pins[name]}"
        )
        checked += 1
    assert checked >= 3


def test_lock_pins_the_issue_versions():
    pins = lock_pins()
    assert pins["torch"] == "2.13.0" and pins["lm-eval"] == "0.4.13" and pins["snakemake"] == "9.27.1"
