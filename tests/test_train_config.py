"""The training run's typed config (train_config.json) and the entry point ``python -m moelab.train``."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_folders import save_tiny_checkpoint, sentence, write_jsonl

from moelab.train import LauncherConfig, TrainRunConfig, latest_checkpoint
from moelab.train.launch import run_training

SECTION = {
    "seq_len": 16, "batch_size": 4, "steps": 3, "lr": 1e-2, "warmup_steps": 1, "save_every": 2,
    "domain_weights": {"a": 1.0, "b": 2.0},
}  # fmt: skip


def run_fields(tmp_path: Path, name: str = "run", **changes) -> dict:
    out = tmp_path / name
    return {
        "stage": "pretrain",
        "model": str(tmp_path / "moe"),
        "data": {"a": str(tmp_path / "a.jsonl"), "b": str(tmp_path / "b.jsonl")},
        "out_dir": str(out / "model"),
        "log_csv": str(out / "log.csv"),
        "ckpt_dir": str(out / "ckpt"),
        "summary": str(out / "model" / "train_summary.json"),
        "seed": 7,
        "threads": 1,
        **changes,
    }


def test_train_config_json_round_trips(tmp_path):
    cfg = TrainRunConfig.from_section(
        {**SECTION, "betas": [0.8, 0.9]},
        **run_fields(tmp_path, launcher={"kind": "torchrun", "num_processes": 2}),
    )
    path = cfg.write(tmp_path / "train_config.json")
    back = TrainRunConfig.read(path)
    assert back == cfg and back.betas == (0.8, 0.9)
    assert back.launcher == LauncherConfig(kind="torchrun", num_processes=2)
    assert json.loads(path.read_text()) == back.to_dict()
    assert back.optim().seed == 7 and back.section()["domain_weights"] == {"a": 1.0, "b": 2.0}
    in_process = TrainRunConfig.from_section(SECTION, **run_fields(tmp_path, launcher=None))
    assert in_process.launcher == LauncherConfig() and not in_process.launcher.multiprocess


def test_unknown_key_in_the_train_config_names_it(tmp_path):
    with pytest.raises(ValueError, match="unknown key 'lr_warmup'"):
        TrainRunConfig.from_section({**SECTION, "lr_warmup": 3}, **run_fields(tmp_path))
    with pytest.raises(ValueError, match="unknown key 'seed'"):  # the run's own field, not a section key
        TrainRunConfig.from_section({**SECTION, "seed": 3}, **run_fields(tmp_path))
    good = TrainRunConfig.from_section(SECTION, **run_fields(tmp_path)).to_dict()
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({**good, "out_dirr": "x"}))
    with pytest.raises(ValueError, match="unknown key 'out_dirr'"):
        TrainRunConfig.read(path)
    del good["ckpt_dir"]
    with pytest.raises(ValueError, match="missing key 'ckpt_dir'"):
        TrainRunConfig.from_dict(good)


@pytest.mark.parametrize(
    "launcher,match",
    [
        ({"kind": "slurm"}, r"launcher.kind='slurm' is not one of"),
        ({"kind": "none", "num_processes": 2}, "torchrun or accelerate"),
        ({"kind": "torchrun", "num_processes": 0}, "num_processes must be >= 1"),
        ({"kind": "accelerate", "num_processes": 2}, "accelerate_config"),
        ({"kind": "torchrun", "nprocs": 2}, "unknown key 'nprocs'"),
    ],
)
def test_bad_launcher_fails_when_the_config_is_built(tmp_path, launcher, match):
    with pytest.raises(ValueError, match=match):
        TrainRunConfig.from_section(SECTION, **run_fields(tmp_path, launcher=launcher))


def test_each_stage_reads_its_own_sequence_length(tmp_path):
    no_len = {k: v for k, v in SECTION.items() if k != "seq_len"}
    with pytest.raises(ValueError, match="stage pretrain needs seq_len"):
        TrainRunConfig.from_section(no_len, **run_fields(tmp_path))
    with pytest.raises(ValueError, match="max_len is not a setting of stage pretrain"):
        TrainRunConfig.from_section({**SECTION, "max_len": 64}, **run_fields(tmp_path))
    with pytest.raises(ValueError, match="stage 'dpo'"):
        TrainRunConfig.from_section(SECTION, **run_fields(tmp_path, stage="dpo"))


def test_entry_point_runs_a_tiny_stage_from_its_train_config(tmp_path):
    """``python -m moelab.train CONFIG`` trains, saves and summarises; in process, the same seed gives the
    same weights; a second run of the same config resumes from its last checkpoint; discard_checkpoints
    deletes the checkpoint folder afterwards."""
    save_tiny_checkpoint(tmp_path / "moe")
    for k, d in enumerate("ab"):
        write_jsonl(tmp_path / f"{d}.jsonl", [{"text": sentence(i + k)} for i in range(30)])
    path = TrainRunConfig.from_section(SECTION, **run_fields(tmp_path, "cli")).write(tmp_path / "cli.json")
    proc = subprocess.run([sys.executable, "-m", "moelab.train", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "cli" / "model" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["processes"] == 1 and summary["config"]["seed"] == 7
    assert set(summary["val_loss_after"]) == {"a", "b"}
    assert len((tmp_path / "cli" / "log.csv").read_text().strip().splitlines()) == 1 + 3

    here = run_fields(tmp_path, "here", discard_checkpoints=True)
    again = run_training(TrainRunConfig.from_section(SECTION, **here).write(tmp_path / "here.json"))
    assert again["resumed_from"] is None and not Path(here["ckpt_dir"]).exists()
    a = load_file(tmp_path / "cli" / "model" / "model.safetensors")
    b = load_file(tmp_path / "here" / "model" / "model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)

    resumed = run_training(path)
    assert resumed["resumed_from"].endswith("step-000003")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_training_process_killed_mid_run_resumes_to_the_uninterrupted_weights(tmp_path, sig):
    """A real ``python -m moelab.train`` process gets SIGTERM / SIGKILL once a checkpoint exists (what Slurm
    sends at the time limit); the rerun resumes from the newest complete checkpoint and ends with the same
    weights as an uninterrupted run of the same seed."""
    save_tiny_checkpoint(tmp_path / "moe")
    for k, d in enumerate("ab"):
        write_jsonl(tmp_path / f"{d}.jsonl", [{"text": sentence(i + k)} for i in range(30)])
    section = {**SECTION, "steps": 400, "save_every": 5}
    straight = TrainRunConfig.from_section(section, **run_fields(tmp_path, "straight"))
    run_training(straight.write(tmp_path / "straight.json"))
    fields = run_fields(tmp_path, "killed")
    path = TrainRunConfig.from_section(section, **fields).write(tmp_path / "killed.json")
    proc = subprocess.Popen([sys.executable, "-m", "moelab.train", str(path)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while latest_checkpoint(fields["ckpt_dir"]) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    assert proc.wait(60) == -sig, "the run ended before the kill: raise its steps"
    killed_at = latest_checkpoint(fields["ckpt_dir"])
    assert killed_at is not None and not (tmp_path / "killed" / "model").exists()
    resumed = run_training(path)
    assert resumed["resumed_from"] is not None and int(Path(resumed["resumed_from"]).name[5:]) >= int(
        killed_at.name[5:]
    )
    a = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)
