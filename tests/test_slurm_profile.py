"""Snakemake profiles (slurm, slurm-ci, local): they parse with Snakemake's own CLI parser (which rejects any
option no installed plugin knows), name real rules and resources the Slurm plugin reads, and the rules
declare the resources a cluster job needs. No Slurm needed; the real-Slurm run is .ci/slurm.sh."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
# Resources snakemake-executor-plugin-slurm turns into sbatch options (besides threads -> --cpus-per-task).
SLURM_RESOURCES = {
    "mem_mb", "mem_mb_per_cpu", "runtime", "nodes", "tasks", "cpus_per_task", "cpus_per_gpu", "gpu",
    "gpu_model", "gres", "constraint", "qos", "slurm_partition", "slurm_account", "slurm_extra",
}  # fmt: skip
# `rule name:` or a rule generated in a loop (`    rule:` + `name:` on the next lines)
RULE_RE = re.compile(
    r"^\s*(?:use\s+)?rule(?:\s+(\w+))?(?:\s+as\s+(\w+)\s+with)?\s*:\s*$", re.M
)  # use rule A as B with:
NAME_RE = re.compile(r"^\s+name:\s*\n\s+(.+)$", re.M)


def load(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def parse_profiles(*paths: Path, argv=()):
    """Parse like `snakemake --profile a --profile b ...`: the parser fails on unknown options."""
    from snakemake.cli import get_argument_parser

    return get_argument_parser(profiles=[str(p) for p in paths]).parse_args(list(argv))


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} over rules/*.smk; a generated rule is named by its name: expression."""
    blocks = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        matches = list(RULE_RE.finditer(text))
        ends = [n.start() for n in matches[1:]] + [len(text)]
        for m, end in zip(matches, ends[: len(matches)], strict=True):
            block = text[m.start() : end]
            name = m.group(2) or m.group(1) or NAME_RE.search(block).group(1).strip()
            blocks[name] = block
    return blocks


def raw(resources) -> dict:
    """{name: value as written} of parsed resources (expressions stay strings)."""
    return {name: res.raw for name, res in resources.items()}


@pytest.mark.parametrize("name", ["slurm", "slurm-ci", "local"])
def test_profile_parses_with_snakemake_cli(name):
    args = parse_profiles(PROFILES / name)  # slurm-ci alone: only its own keys, still all valid options
    if name == "local":
        assert args.cores == os.cpu_count() and args.executor is None and args.rerun_incomplete  # "all"
        assert raw(args.resources) == {"gpu": 1}
    elif name == "slurm":
        assert args.executor == "slurm" and args.rerun_incomplete
    else:
        assert args.executor is None and args.slurm_status_command == "squeue"


def test_slurm_profile_values():
    args = parse_profiles(PROFILES / "slurm")
    assert (args.jobs, args.retries, args.latency_wait) == (50, 2, 60)
    assert args.slurm_init_seconds_before_status_checks == 20
    defaults = raw(args.default_resources)
    assert (defaults["mem_mb"], defaults["runtime"]) == ("4000 * attempt", 60)
    assert "slurm_account" not in defaults and "slurm_partition" not in defaults  # the user's to set
    assert raw(args.set_resources["pretrain"]) == {"nodes": 1}  # runtime: the rule's (moelab.resources)


def test_ci_profile_layers_over_the_cluster_profile():
    args = parse_profiles(PROFILES / "slurm", PROFILES / "slurm-ci")
    assert args.executor == "slurm"  # kept from profiles/slurm
    assert (args.jobs, args.retries, args.max_threads) == (4, 0, 1)  # replaced by slurm-ci
    assert args.slurm_status_command == "squeue" and args.slurm_no_account is True
    assert raw(args.default_resources)["slurm_partition"] == "ci"
    assert raw(args.set_resources["evaluate"]) == {"nodes": 1, "gpu": 1}


def test_unknown_profile_option_is_rejected(tmp_path):
    (tmp_path / "config.yaml").write_text("executor: slurm\nslurm-partition-name: gpu\n")
    with pytest.raises(SystemExit):
        parse_profiles(tmp_path)


def test_ci_profile_repeats_the_cluster_resources():
    """A later --profile replaces whole keys: slurm-ci must carry every resource setting of slurm."""
    cluster, ci = load("slurm"), load("slurm-ci")
    for key, value in cluster["default-resources"].items():
        assert ci["default-resources"][key] == value, key
    for rule, res in cluster["set-resources"].items():
        for key, value in res.items():
            assert ci["set-resources"][rule][key] == value, (rule, key)


@pytest.mark.parametrize("name", ["slurm", "slurm-ci"])
def test_profile_resources_are_known_and_rules_exist(name):
    profile, rules = load(name), rule_blocks()
    assert set(profile["default-resources"]) <= SLURM_RESOURCES
    for rule, res in profile["set-resources"].items():
        assert rule in rules, f"profiles/{name}: set-resources names unknown rule {rule!r}"
        assert set(res) <= SLURM_RESOURCES, (rule, set(res) - SLURM_RESOURCES)


def test_rules_declare_cluster_resources():
    """Every rule that runs something declares mem_mb and runtime; GPUs are `gpu` (the name the Slurm plugin
    turns into --gpus; a `gpus` resource would be silently ignored on the cluster)."""
    blocks = rule_blocks()
    assert {"pretrain", "sft", "evaluate", "compress"} <= set(blocks)
    for name, text in blocks.items():
        assert not re.search(r"^\s+gpus\s*=", text, re.M), f"rule {name}: use gpu=, not gpus="
        if not re.search(r"^\s+(script|shell|run|wrapper|notebook):", text, re.M):
            continue  # a pure target: Snakemake finishes it without a job
        assert re.search(r"^\s+mem_mb\s*=", text, re.M), f"rule {name} declares no mem_mb"
        assert re.search(r"^\s+runtime\s*=", text, re.M), f"rule {name} declares no runtime"
    for name in ("pretrain", "sft", "evaluate", "compress"):
        assert re.search(r"^\s+gpu\s*=", blocks[name], re.M), f"rule {name} declares no gpu"


def test_dry_run_through_the_profiles(tmp_path):
    """The smoke DAG resolves with both profiles: evaluate asks for a GPU, threads capped, partition set."""
    for name in ("Snakefile", "config.yaml", "config", "rules", "scripts", "report", "profiles", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--profile",
         "profiles/slurm-ci", "--configfile", "config/smoke.yaml"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?=\n\n)", proc.stdout, re.M | re.S)
    evaluate = [body for rule, body in jobs if rule == "evaluate"]
    assert len(evaluate) >= 4
    assert all(re.search(r"\bgpu=1\b", b) and "slurm_partition=ci" in b for b in evaluate)
    pretrain = next(body for rule, body in jobs if rule == "pretrain")
    assert (
        re.search(r"\bgpu=0\b", pretrain) and "nodes=1" in pretrain and re.search(r"\bruntime=11\b", pretrain)
    )


def _slurm_check():
    spec = importlib.util.spec_from_file_location("slurm_check", ROOT / ".ci" / "slurm_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LOG = """\
[Mon Nov 30 11:17:04 2026]
rule download_model:
    output: resources/models/dense
    jobid: 3
    threads: 1
Job 3 has been submitted with SLURM jobid 7 (log: x/7.log).
[Mon Nov 30 11:17:04 2026]
rule evaluate:
    output: results/eval/dense.json
    jobid: 2
    wildcards: stage=dense
[Mon Nov 30 11:17:59 2026]
localrule all:
    input: results/eval/dense.json
    jobid: 0
3 of 3 steps (100%) done
"""


def test_check_parses_which_jobs_went_through_sbatch():
    check = _slurm_check()
    rules, local, submitted = check.parse_snakemake_log(LOG)
    assert rules == {3: "download_model", 2: "evaluate", 0: "all"}
    assert local == {0: False} and submitted == {3: "7"}  # evaluate (job 2) was never submitted
    comp = check.parse_jobcomp("JobId=7 UserId=root(0) Name=abc JobState=COMPLETED Partition=ci\n")
    assert comp["7"]["JobState"] == "COMPLETED" and comp["7"]["Partition"] == "ci"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MOELAB_SLURM_TEST") != "1" or shutil.which("apt-get") is None or os.geteuid() != 0,
    reason="real Slurm: set MOELAB_SLURM_TEST=1 (root, Debian; installs slurm-wlm); CI runs .ci/slurm.sh",
)
def test_smoke_dag_on_a_real_one_node_slurm():
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "slurm.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "all checks passed" in proc.stdout


def test_check_fails_naming_the_job_that_skipped_sbatch(tmp_path):
    (tmp_path / "snakemake.log").write_text(LOG)
    (tmp_path / "jobcomp.log").write_text("JobId=7 Name=abc JobState=COMPLETED\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "slurm_check.py"), "--log", str(tmp_path / "snakemake.log"),
         "--jobcomp", str(tmp_path / "jobcomp.log"), "--workdir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "job 2 (evaluate) ran without a SLURM job id" in proc.stderr
    assert "no evaluate job was submitted" in proc.stderr
    assert "(all) ran locally" not in proc.stderr  # a pure target has nothing to submit


def test_check_flags_a_local_job_with_outputs():
    log = LOG.replace(
        "localrule all:\n    input: results/eval/dense.json", "localrule all:\n    output: x.txt"
    )
    _, local, _ = _slurm_check().parse_snakemake_log(log)
    assert local == {0: True}


def test_check_allows_only_the_cluster_local_rules_on_the_submit_host(tmp_path):
    from moelab.report.papers import CLUSTER_LOCAL_RULES

    assert {"paper_index", "download_eval_data", "llama_moe_table_main"} <= set(CLUSTER_LOCAL_RULES)
    assert not {"evaluate", "pretrain", "sft", "compress"} & set(CLUSTER_LOCAL_RULES)
    local = (
        "localrule paper_index:\n    output: results/papers/llama_moe/index.md\n    jobid: 5\n\n"
        "localrule sft:\n    output: results/models/sft\n    jobid: 6\n\n"
        "rule llama_moe_table_main:\n    output: results/papers/llama_moe/table_main.csv\n    jobid: 8\n"
        "Job 8 has been submitted with SLURM jobid 9 (log: x/9.log).\n"
    )
    (tmp_path / "snakemake.log").write_text(LOG.replace("3 of 3 steps", local + "3 of 3 steps"))
    (tmp_path / "jobcomp.log").write_text(
        "JobId=7 Name=a JobState=COMPLETED\nJobId=9 Name=b JobState=COMPLETED\n"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "slurm_check.py"), "--log", str(tmp_path / "snakemake.log"),
         "--jobcomp", str(tmp_path / "jobcomp.log"), "--workdir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "job 6 (sft) ran locally, not through sbatch" in proc.stderr
    assert "job 8 (llama_moe_table_main) went through sbatch (SLURM 9), not the submit host" in proc.stderr
    assert "(paper_index)" not in proc.stderr


RESUME_LOG = """rule pretrain:
    output: results/models/pretrain
    jobid: 0
Job 0 has been submitted with SLURM jobid 8 (log: .snakemake/slurm_logs/rule_pretrain/pretrain/8.log).
Error in rule pretrain:
Trying to restart job 0.
Job 0 has been submitted with SLURM jobid 9 (log: .snakemake/slurm_logs/rule_pretrain/pretrain/9.log).
"""


def test_resume_check_wants_a_timeout_then_a_resumed_completion(tmp_path):
    """The resume phase's verdict (.ci/slurm_check.py --resume-rule) on the log lines of a real run."""
    check = _slurm_check()
    summary = tmp_path / "train_summary.json"
    summary.write_text('{"steps": 300, "resumed_from": "results/checkpoints/pretrain/step-000120"}')
    comp = {"8": {"JobState": "TIMEOUT"}, "9": {"JobState": "COMPLETED"}}
    assert check.check_resume(RESUME_LOG, comp, "pretrain", summary) == []
    failed_twice = {"8": {"JobState": "FAILED"}, "9": {"JobState": "COMPLETED"}}
    assert "expected TIMEOUT" in check.check_resume(RESUME_LOG, failed_twice, "pretrain", summary)[0]
    one_attempt = RESUME_LOG.split("Error in rule")[0]
    assert "1 Slurm submission(s)" in check.check_resume(one_attempt, comp, "pretrain", summary)[0]
    summary.write_text('{"steps": 300, "resumed_from": null}')
    assert "resumed_from is None" in check.check_resume(RESUME_LOG, comp, "pretrain", summary)[0]
    summary.write_text('{"resumed_from": "/old/other_run/step-6"}')  # not this rule's checkpoints
    assert "expected the checkpoint" in check.check_resume(RESUME_LOG, comp, "pretrain", summary)[0]
    crashed = RESUME_LOG + "Job 0 has been submitted with SLURM jobid 10 (log: x).\n"
    three = {**comp, "9": {"JobState": "FAILED"}, "10": {"JobState": "COMPLETED"}}
    summary.write_text('{"resumed_from": "results/checkpoints/pretrain/step-000120"}')
    assert "expected TIMEOUT" in check.check_resume(crashed, three, "pretrain", summary)[0]  # a hidden crash


def test_a_phase_checks_only_its_own_jobcomp_lines(tmp_path):
    check = _slurm_check()
    log = tmp_path / "jobcomp.log"
    log.write_text("JobId=1 JobState=COMPLETED\nJobId=2 JobState=TIMEOUT\nJobId=3 JobState=COMPLETED\n")
    assert sorted(check.read_jobcomp(log, skip=2)) == ["3"]
    assert check.read_jobcomp(tmp_path / "absent.log") == {}


def test_ci_smoke_tests_exist_and_are_slow():
    """.ci/run deselects the tests of .ci/smoke_tests.txt and .ci/slurm.sh runs them on its smoke folder: a renamed
    test would otherwise drop out of CI silently."""
    names = (ROOT / ".ci" / "smoke_tests.txt").read_text().split()
    assert "tests/test_workflow.py::test_smoke_workflow_end_to_end" in names and len(names) == 3
    for node in names:
        path, func = node.split("::")
        source = (ROOT / path).read_text()
        assert f"@pytest.mark.slow\ndef {func}(" in source, node
        body = source.split(f"def {func}(", 1)[1].split("\ndef ", 1)[0]
        assert "smoke_workdir(tmp_path)" in body, node  # it reuses the folder MOELAB_SMOKE_WORKDIR names
