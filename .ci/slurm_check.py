"""Checks after the Slurm runs of .ci/slurm.sh.

Smoke phase: every job went through sbatch and completed, evaluate got the fake GPU; only the rules the workflow
declares local on a cluster (moelab.report.papers.CLUSTER_LOCAL_RULES: report rules, evaluation-data downloads)
ran on the submit host.
Resume phase (--resume-rule): the training job hit its Slurm time limit (TIMEOUT), Snakemake resubmitted it,
and the later attempt resumed from a checkpoint (`resumed_from` in the training summary) and COMPLETED.

Reads Snakemake's log (which job ran where), Slurm's job-completion log (what Slurm ran and how it ended)
and `scontrol show job` (what each job was allocated). Exits non-zero naming the first broken invariant.
"""

import argparse
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from moelab.report.papers import CLUSTER_LOCAL_RULES

RULE_RE = re.compile(r"^(local)?rule (\w+):$")
JOBID_RE = re.compile(r"^\s+jobid: (\d+)$")
SUBMIT_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
STEPS_RE = re.compile(r"(\d+) of (\d+) steps \(100%\) done")


def parse_snakemake_log(text: str) -> tuple[dict[int, str], dict[int, bool], dict[int, str]]:
    """Return ({snakemake jobid: rule}, {local jobid: has outputs}, {snakemake jobid: slurm jobid}).

    A local job without outputs is a pure target (e.g. `all`): Snakemake finishes it without running
    anything, so there is nothing to submit. A local job with outputs ran on the submit host.
    """
    rules: dict[int, str] = {}
    local: dict[int, bool] = {}
    rule = None
    is_local = has_output = False
    for line in text.splitlines():
        m = RULE_RE.match(line.strip())
        if m:
            rule, is_local, has_output = m.group(2), bool(m.group(1)), False
            continue
        if rule and line.startswith("    output: "):
            has_output = True
        m = JOBID_RE.match(line)
        if m and rule:
            jobid = int(m.group(1))
            rules[jobid] = rule
            if is_local:
                local[jobid] = has_output
            rule = None
    submitted = {int(a): b for a, b in SUBMIT_RE.findall(text)}
    return rules, local, submitted


def parse_jobcomp(text: str) -> dict[str, dict[str, str]]:
    """Slurm's jobcomp/filetxt log: one line of KEY=VALUE fields per finished job, keyed by JobId."""
    jobs = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs


def read_jobcomp(path: Path, skip: int = 0) -> dict[str, dict[str, str]]:
    """The jobcomp log's jobs after its first `skip` lines (those of earlier phases); {} if there is none."""
    lines = path.read_text().splitlines()[skip:] if path.exists() else []
    return parse_jobcomp("\n".join(lines))


def scontrol_job(slurm_id: str) -> str:
    proc = subprocess.run(["scontrol", "show", "job", slurm_id], capture_output=True, text=True, check=False)
    return proc.stdout


def check_resume(text: str, comp: dict[str, dict[str, str]], rule: str, summary: Path) -> list[str]:
    """The resume phase's invariants for `rule`; returns the broken ones (empty: all hold).

    Snakemake keeps its job id across retries, so every "submitted with SLURM jobid" line of that job counts.
    """
    rules, _, _ = parse_snakemake_log(text)
    attempts = [slurm for job, slurm in SUBMIT_RE.findall(text) if rules.get(int(job)) == rule]
    states = [comp.get(s, {}).get("JobState") for s in attempts]
    errors = []
    if len(attempts) < 2:
        errors.append(f"{rule}: {len(attempts)} Slurm submission(s), expected a time-out and a retry")
    elif any(s != "TIMEOUT" for s in states[:-1]) or states[-1] != "COMPLETED":
        errors.append(
            f"{rule}: Slurm states {states} of jobs {attempts}, expected TIMEOUT ... then COMPLETED"
        )
    resumed = json.loads(summary.read_text()).get("resumed_from") if summary.is_file() else None
    if not (resumed and re.search(rf"results/checkpoints/{rule}/step-\d+$", resumed)):
        errors.append(
            f"{summary}: resumed_from is {resumed!r}, expected the checkpoint the retry resumed from"
        )
    if not errors:
        print(f"[slurm-ci] {rule}: Slurm jobs {attempts} ended {states}; the last resumed from {resumed}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", type=Path, required=True, help="snakemake's stdout+stderr")
    ap.add_argument("--jobcomp", type=Path, required=True, help="Slurm JobCompLoc file")
    ap.add_argument("--workdir", type=Path, required=True, help="the workflow copy that ran")
    ap.add_argument("--gpu-rule", default="evaluate", help="rule given gpu=1 by the CI profile")
    ap.add_argument(
        "--resume-rule", help="resume phase: the training rule that must time out, retry and resume"
    )
    ap.add_argument("--summary", type=Path, help="resume phase: that rule's train_summary.json")
    ap.add_argument(
        "--jobcomp-skip", type=int, default=0, help="jobcomp lines of earlier phases, not checked"
    )
    args = ap.parse_args()
    if args.resume_rule and args.summary is None:
        ap.error("--resume-rule needs --summary")

    text = args.log.read_text()
    if args.resume_rule:
        comp = read_jobcomp(args.jobcomp, args.jobcomp_skip)
        errors = check_resume(text, comp, args.resume_rule, args.summary)
        for e in errors:
            print(f"[slurm-ci] FAILED: {e}", file=sys.stderr)
        return 1 if errors else 0
    rules, local, submitted = parse_snakemake_log(text)
    errors = []
    if not STEPS_RE.search(text):
        errors.append("snakemake log has no '<n> of <n> steps (100%) done'")
    remote = {j for j in rules if j not in local}
    for jobid in sorted(remote - set(submitted)):
        errors.append(f"job {jobid} ({rules[jobid]}) ran without a SLURM job id")
    for jobid, has_output in sorted(local.items()):
        if has_output and rules[jobid] not in CLUSTER_LOCAL_RULES:
            errors.append(f"job {jobid} ({rules[jobid]}) ran locally, not through sbatch")
    for jobid, slurm_id in sorted(submitted.items()):
        if rules.get(jobid) in CLUSTER_LOCAL_RULES:
            errors.append(f"job {jobid} ({rules[jobid]}) went through sbatch (SLURM {slurm_id}), not the submit host")

    comp = read_jobcomp(args.jobcomp, args.jobcomp_skip)
    for jobid, slurm_id in sorted(submitted.items()):
        state = comp.get(slurm_id, {}).get("JobState")
        if state != "COMPLETED":
            errors.append(f"SLURM job {slurm_id} ({rules.get(jobid)}) state {state!r}, not COMPLETED")
    extra = set(comp) - set(submitted.values())
    if extra:
        errors.append(f"Slurm ran jobs Snakemake did not submit: {sorted(extra)}")

    gpu_jobs = [s for j, s in submitted.items() if rules.get(j) == args.gpu_rule]
    if not gpu_jobs:
        errors.append(f"no {args.gpu_rule} job was submitted")
    for slurm_id in gpu_jobs:
        info = scontrol_job(slurm_id)
        if not re.search(r"(gres/gpu=1|gres:gpu:1)\b", info):
            errors.append(f"SLURM job {slurm_id} ({args.gpu_rule}) was not allocated gres/gpu=1")

    table = args.workdir / "results" / "papers" / "llama_moe" / "table_main.csv"
    if not table.is_file() or len(table.read_text().strip().splitlines()) < 2:
        errors.append(f"{table} missing or empty")

    for e in errors:
        print(f"[slurm-ci] FAILED: {e}", file=sys.stderr)
    if errors:
        return 1
    per_rule = Counter(rules[j] for j in submitted)
    print(
        f"[slurm-ci] {len(submitted)} jobs went through sbatch, all COMPLETED "
        f"({', '.join(f'{r} {n}' for r, n in sorted(per_rule.items()))}); "
        f"{sum(local.values())} job(s) of the cluster-local rules ran on the submit host, "
        f"{len(local) - sum(local.values())} target-only job(s) finished by Snakemake itself; "
        f"{len(gpu_jobs)} {args.gpu_rule} jobs allocated gres/gpu=1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
