#!/usr/bin/env bash
# Real-Slurm test of profiles/slurm: installs Debian's slurm-wlm + munge, starts a one-node cluster on
# localhost (munged, slurmctld, slurmd; no systemd) and runs two phases in a copy of the workflow:
#   smoke:  snakemake --profile profiles/slurm --profile profiles/slurm-ci --configfile config/smoke.yaml
#           every job went through sbatch (the cluster-local report rules and evaluation-data downloads ran on
#           the submit host) and completed; the evaluate jobs got a (fake) GPU through gres.
#   smoke_tests: the smoke workflow tests of .ci/smoke_tests.txt on that folder (MOELAB_SMOKE_WORKDIR): the smoke
#           DAG's checks and follow-on targets (moe_sft_baselines, llama_moe_v2, moe_compression_methods), the
#           construction and CPT-data ablations, each running only its own jobs there (.ci/run deselects them).
#   resume: the smoke pretrain made long (300 steps, a checkpoint every 10) with a 1-minute Slurm time limit
#           (job_resources) and --retries 2: Slurm kills the first attempt (TIMEOUT), Snakemake resubmits it
#           with the limit grown x1.5 (2 min), the retry resumes from the last checkpoint and COMPLETES.
# Daemons are stopped and the cluster is removed on exit, also on failure.
#
# Usage: bash .ci/slurm.sh        (as root on Debian 12; needs the project's .venv, i.e. after `make test`)
# Env:   MOELAB_SLURM_DIR  scratch folder, wiped at start   (default /tmp/moelab-slurm-ci)
#        MOELAB_SLURM_KEEP=1  keep the scratch folder (logs, workflow copy) after a successful run
#        MOELAB_SLURM_PORT  slurmctld port; slurmd uses the next one (default 6817)
#        MOELAB_PYTHON  the Python with snakemake + the Slurm plugin (default .venv/bin/python)
#        MOELAB_SLURM_PHASES  which phases to run, in order (default "smoke smoke_tests resume")
# Meant for a disposable CI machine: while it runs, /etc/slurm/{slurm,gres}.conf are this test's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${MOELAB_SLURM_DIR:-/tmp/moelab-slurm-ci}
PORT=${MOELAB_SLURM_PORT:-6817}
PY=${MOELAB_PYTHON:-$ROOT/.venv/bin/python}
PHASES=${MOELAB_SLURM_PHASES:-smoke smoke_tests resume}
ETC=/etc/slurm
MARK="# one-node test cluster of .ci/slurm.sh (removed when it exits)"
WORKFLOW_FILES=(Snakefile config.yaml config rules scripts report profiles envs)
T0=$SECONDS

say() { echo "[slurm-ci +$((SECONDS - T0))s] $*"; }
die() {
    echo "[slurm-ci] FAILED: $*" >&2
    exit 1
}

# Stop the daemons this script started (found by the pid files in its own scratch folder only).
stop_daemons() {
    local name pidfile pid
    for name in slurmd slurmctld munged; do
        pidfile=$WORK/run/$name.pid
        [[ -s $pidfile ]] || continue
        pid=$(cat "$pidfile")
        # only if that pid is still the daemon (a stale pid file may name a recycled pid)
        if kill -0 "$pid" 2>/dev/null && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

# Put back Slurm config files that were there before (ours carry $MARK; a foreign one was moved aside).
restore_etc() {
    local f
    for f in slurm.conf gres.conf; do
        if [[ -f $ETC/$f ]] && grep -qxF "$MARK" "$ETC/$f"; then rm -f "$ETC/$f"; fi
        if [[ -e $WORK/etc/$f.orig ]]; then mv "$WORK/etc/$f.orig" "$ETC/$f"; fi
    done
}

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 && -d $WORK/log ]]; then
        for f in "$WORK"/log/slurmctld.log "$WORK"/log/slurmd.log "$WORK"/log/snakemake*.log; do
            [[ -f $f ]] && { echo "----- tail $f"; tail -n 40 "$f"; }
        done
    fi
    if [[ -n ${SNAKEMAKE_PID:-} ]] && kill -0 "$SNAKEMAKE_PID" 2>/dev/null; then
        kill "$SNAKEMAKE_PID" 2>/dev/null || true
        wait "$SNAKEMAKE_PID" 2>/dev/null || true
    fi
    if command -v scancel >/dev/null && [[ -s $WORK/run/slurmctld.pid ]]; then
        scancel --user root --quiet 2>/dev/null || true
    fi
    stop_daemons
    restore_etc
    if [[ $rc -eq 0 && ${MOELAB_SLURM_KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
    say "teardown done (exit $rc)"
    exit "$rc"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 5))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    die "$what not ready after ${limit}s"
}

[[ $(id -u) -eq 0 ]] || die "run as root (installs Debian packages and starts the Slurm daemons)"
[[ -x $PY ]] || die "no Python at $PY: run 'make setup' (or 'make test') first, or set MOELAB_PYTHON"

# 1. Install ------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
say "$(slurmctld -V), $(munged -V 2>&1 | head -1)"

# 2. Configure a one-node cluster in the scratch folder ------------------------------------------------
stop_daemons 2>/dev/null || true # a previous run that was killed hard (SIGKILL skips the trap)
restore_etc
rm -rf "$WORK"
mkdir -p "$WORK"/{etc,run,log,state,spool,dev,munge}
trap on_exit EXIT
trap 'exit 130' INT TERM

NODE=$(hostname -s)
# Hardware line as slurmd sees it (CPUs, sockets, cores, threads); memory: 90% of what slurmd reports.
HW=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
MEM=$(slurmd -C | head -1 | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
MEM=$((MEM * 9 / 10))
# Two fake GPUs: Slurm only needs character devices as gres files; the jobs still compute on the CPU.
mknod "$WORK/dev/fakegpu0" c 195 0
mknod "$WORK/dev/fakegpu1" c 195 1

# A private munged (own key, socket, pid file) so a system munged, if any, is left alone.
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chown -R munge:munge "$WORK/munge"
chmod 755 "$WORK/munge" # the socket dir must be searchable by all clients
chmod 400 "$WORK/munge/munge.key"
MUNGE_SOCKET=$WORK/munge/munge.socket

cat >"$WORK/etc/slurm.conf" <<EOF
$MARK
ClusterName=moelabci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$WORK/log/jobcomp.log
ReturnToService=2
MailProg=/bin/true
MinJobAge=3600
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 $HW RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$WORK/etc/gres.conf" <<EOF
$MARK
NodeName=$NODE Name=gpu File=$WORK/dev/fakegpu[0-1]
EOF
# The config goes to Slurm's default place: the executor plugin clears SLURM_* variables (SLURM_CONF too)
# before sbatch, so srun inside the jobs only finds /etc/slurm/slurm.conf. Files already there are restored.
for f in slurm.conf gres.conf; do
    if [[ -e $ETC/$f ]] && ! grep -qxF "$MARK" "$ETC/$f"; then mv "$ETC/$f" "$WORK/etc/$f.orig"; fi
    cp "$WORK/etc/$f" "$ETC/$f"
done
unset SLURM_CONF

# 3. Start the daemons (no systemd): munged, then slurmctld, then slurmd; each writes a pid file --------
say "starting munged, slurmctld, slurmd ($NODE: $HW RealMemory=$MEM, 2 fake GPUs)"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$WORK/munge/munge.key" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/munged.seed"
wait_for 20 munged test -s "$WORK/munge/munged.pid"
ln -sf "$WORK/munge/munged.pid" "$WORK/run/munged.pid"
wait_for 20 "munge round trip" bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
slurmctld
wait_for 30 slurmctld scontrol ping
slurmd
wait_for 30 slurmd test -s "$WORK/run/slurmd.pid"
wait_for 60 "node $NODE idle" bash -c "sinfo -h -N -o %T | grep -qx idle"
say "cluster up: $(sinfo -h -o '%P %a %D %T %G')"

# 4. Phases, in a copy of the workflow ---------------------------------------------------------------
WF=$WORK/wf
mkdir -p "$WF"
for name in "${WORKFLOW_FILES[@]}"; do cp -r "$ROOT/$name" "$WF/"; done
cd "$WF"

run_snakemake() { # run_snakemake LOG ARGS...: snakemake through both profiles, in the background (trap-safe)
    local log=$1
    shift
    say "snakemake --profile profiles/slurm --profile profiles/slurm-ci $*"
    "$PY" -m snakemake --profile profiles/slurm --profile profiles/slurm-ci "$@" >"$log" 2>&1 &
    SNAKEMAKE_PID=$!
    wait "$SNAKEMAKE_PID" || die "snakemake failed (log: $log)"
    SNAKEMAKE_PID=
}

jobcomp_lines() { # jobcomp lines so far: a phase checks only the jobs after them
    if [[ -f $WORK/log/jobcomp.log ]]; then wc -l <"$WORK/log/jobcomp.log"; else echo 0; fi
}

phase_smoke() { # the whole smoke DAG; every job through sbatch and COMPLETED, evaluate with the fake GPU
    local t=$SECONDS skip
    skip=$(jobcomp_lines)
    run_snakemake "$WORK/log/snakemake.log" --configfile config/smoke.yaml
    say "smoke DAG done in $((SECONDS - t))s"
    "$PY" "$ROOT/.ci/slurm_check.py" --log "$WORK/log/snakemake.log" --jobcomp "$WORK/log/jobcomp.log" \
        --workdir "$WF" --gpu-rule evaluate --jobcomp-skip "$skip"
}

phase_smoke_tests() { # the smoke workflow tests on the folder the smoke phase built through Slurm; each runs its
    # own targets locally there (.ci/run deselects them from `make test`, so CI builds the smoke DAG once)
    local t=$SECONDS
    [[ -f $WF/results/papers/llama_moe/table_main.csv ]] || die "smoke_tests needs the smoke phase first"
    local tests
    mapfile -t tests <"$ROOT/.ci/smoke_tests.txt"
    say "pytest ${tests[*]} on $WF"
    (cd "$ROOT" && MOELAB_SMOKE_WORKDIR=$WF OMP_WAIT_POLICY=PASSIVE "$PY" -m pytest -q -p no:cacheprovider \
        --durations=0 "${tests[@]}") || die "a smoke workflow test failed"
    say "smoke workflow tests done in $((SECONDS - t))s"
}

phase_resume() { # a training job killed at its Slurm time limit is resubmitted and resumes from its checkpoint
    local t=$SECONDS skip
    skip=$(jobcomp_lines)
    cat >"$WF/resume.yaml" <<'EOF'
# .ci/slurm.sh resume phase: ~2 min of training (CI node, one thread) against a 1-minute first attempt
pretrain:
  steps: 300
  save_every: 10
  mixture: {eval_interval: 100}
job_resources:
  pretrain: {runtime: 1}
EOF
    # the target comes before --configfile (which takes every following word as a config file)
    run_snakemake "$WORK/log/snakemake-resume.log" results/models/pretrain --forcerun pretrain --retries 2 \
        --configfile config/smoke.yaml resume.yaml
    say "resume phase done in $((SECONDS - t))s"
    "$PY" "$ROOT/.ci/slurm_check.py" --log "$WORK/log/snakemake-resume.log" --jobcomp "$WORK/log/jobcomp.log" \
        --workdir "$WF" --resume-rule pretrain --summary "$WF/results/models/pretrain/train_summary.json" \
        --jobcomp-skip "$skip"
}

[[ -n ${PHASES// /} ]] || die "MOELAB_SLURM_PHASES is empty (phases: smoke, smoke_tests, resume)"
for phase in $PHASES; do
    case $phase in
    smoke | smoke_tests | resume) "phase_$phase" ;;
    *) die "unknown phase '$phase' in MOELAB_SLURM_PHASES (smoke, smoke_tests, resume)" ;;
    esac
done
say "all checks passed ($PHASES); total $((SECONDS - T0))s"
