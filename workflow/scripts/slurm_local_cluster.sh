#!/usr/bin/env bash
# Run an experiment (default: the paper-structure smoke config) on a real, throw-away, one-node
# SLURM cluster on this machine and check that it gives the same results as a local run.
#
#   workflow/scripts/slurm_local_cluster.sh [WORKDIR]
#
#  1. installs Debian's slurm-wlm and munge with apt-get when missing (root or passwordless sudo);
#  2. starts munged, slurmctld and slurmd for a one-node cluster on localhost, with every config,
#     key, socket, state and log file in one temporary directory and on free ports, so an
#     existing SLURM or MUNGE installation is neither used nor disturbed;
#  3. runs `snakemake --profile workflow/profiles/slurm --configfile workflow/configs/paper-smoke.yaml`
#     in WORKDIR/slurm: model jobs through sbatch, oracles, holdout models and unlearning runs
#     grouped into shared submissions, figure and small-table rules in the Snakemake process
#     (localrules), as at paper scale;
#  4. runs the same workflow locally in WORKDIR/local and compares: scores.parquet, every table
#     under results/ (parquet/csv), every model.pt state_dict, the set of figure files;
#  5. stops the daemons it started (by their recorded PIDs), also on failure or interruption.
#
# The whole DAG runs (SLURM_TEST_TARGETS: a space-separated list of targets instead, e.g. one
# figure's PNG); SLURM_TEST_CONFIG: another config file (e.g. workflow/configs/test.yaml);
# SLURM_TEST_ARGS: more options for the SLURM run's snakemake (e.g. --group-components oracles=2).
# WORKDIR defaults to a new temporary directory (removed at the end unless KEEP=1).
#
#   workflow/scripts/slurm_local_cluster.sh --run CMD [ARGS...]
#
# only brings the cluster up around CMD (SLURM_CONF and PATH set), e.g. to try the profile by hand:
#   ... --run bash -c 'snakemake --profile workflow/profiles/slurm ...; squeue -t all'
#
# Environment: PYTHON (interpreter with perinstance's dependencies, snakemake and the plugin;
#   default: `python` on PATH), SNAKEMAKE_TIMEOUT (seconds per snakemake run, default 600),
#   KEEP=1 (keep the cluster's logs and the work directory).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
PYTHON_BIN="$(cd "$(dirname "$PYTHON")" && pwd)"
PYTHON="$PYTHON_BIN/$(basename "$PYTHON")"   # absolute, without resolving a venv's symlink
SNAKEMAKE_TIMEOUT="${SNAKEMAKE_TIMEOUT:-600}"
read -r -a TARGETS <<<"${SLURM_TEST_TARGETS:-all}"
TEST_CONFIG="$(cd "$REPO" && realpath "${SLURM_TEST_CONFIG:-workflow/configs/paper-smoke.yaml}")"
START=$SECONDS

log() { printf '[slurm-local %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ $EUID -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    die "needs root or passwordless sudo (apt-get, munged, slurmctld, slurmd)"
fi
as_root() { "${SUDO[@]}" "$@"; }

# ---------------------------------------------------------------------------------------------
# state that cleanup() needs; filled in as we go
CLUSTER_DIR=""     # temporary directory with everything the cluster writes
DAEMON_PIDS=()     # "name:pid" of the daemons we started, in start order
declare -A RUN_PIDS=()  # process groups (setsid) of running snakemakes, killed on interruption
OWN_WORKDIR=0
POLICY_RC_CREATED=0

stop_pid() {  # stop_pid NAME PID: TERM, wait up to 10 s, then KILL
    local name=$1 pid=$2
    as_root kill -0 "$pid" 2>/dev/null || return 0
    as_root kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        as_root kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
        sleep 0.2
    done
    as_root kill -KILL "$pid" 2>/dev/null || true
    log "killed $name (pid $pid)"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid
    for pid in "${RUN_PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        log "killing snakemake (process group $pid)"
        kill -KILL -- "-$pid" 2>/dev/null
    done
    if [[ ${#DAEMON_PIDS[@]} -gt 0 && -n ${SLURM_CONF:-} ]]; then
        # jobs still queued or running on our cluster (after a failure): cancel, let them go
        if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
            scancel --user="$(id -un)" 2>/dev/null
            for _ in $(seq 25); do [[ -z $(squeue -h -t R,CG,PD -o %i 2>/dev/null) ]] && break; sleep 0.2; done
        fi
    fi
    if [[ $rc -ne 0 && -n $CLUSTER_DIR ]]; then
        for f in "$CLUSTER_DIR"/log/*.log; do
            [[ -f $f ]] && { log "--- tail of $f"; as_root tail -n 25 "$f" >&2; }
        done
    fi
    local i entry
    for ((i = ${#DAEMON_PIDS[@]} - 1; i >= 0; i--)); do   # slurmd, slurmctld, munged
        entry=${DAEMON_PIDS[i]}
        stop_pid "${entry%%:*}" "${entry#*:}"
    done
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then as_root rm -f /usr/sbin/policy-rc.d; fi
    if [[ -n $CLUSTER_DIR && ${KEEP:-0} != 1 ]]; then
        as_root rm -rf "$CLUSTER_DIR"
    elif [[ -n $CLUSTER_DIR ]]; then
        log "kept cluster files in $CLUSTER_DIR"
    fi
    if [[ $OWN_WORKDIR -eq 1 && ${KEEP:-0} != 1 ]]; then rm -rf "$WORKDIR"; fi
    if [[ $rc -eq 0 ]]; then log "OK"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------------
# 1. packages
install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && { log "slurm and munge already installed"; return; }
    log "installing slurm-wlm munge (missing: ${missing[*]})"
    # keep the packages' init scripts from starting system daemons (there is no init system
    # here, and we start our own); only when no policy is in place already
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        POLICY_RC_CREATED=1
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 755 /usr/sbin/policy-rc.d
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
    if [[ $POLICY_RC_CREATED -eq 1 ]]; then as_root rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
    log "installed $(slurmctld -V)"
}

wait_for_file() {  # wait_for_file PATH SECONDS WHAT
    local path=$1 seconds=$2 what=$3
    for _ in $(seq $((seconds * 5))); do
        as_root test -s "$path" && return 0
        sleep 0.2
    done
    die "$what did not start (no $path after ${seconds}s)"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------------------------------------
# 2. the cluster
start_cluster() {
    CLUSTER_DIR=$(mktemp -d /tmp/perinstance-slurm.XXXXXX)
    chmod 755 "$CLUSTER_DIR"
    mkdir -p "$CLUSTER_DIR"/{log,run,ctld,spool}
    local host cpus mem_mb ctld_port slurmd_port
    host=$(hostname -s 2>/dev/null || hostname)
    # Advertise at least 8 CPUs (config_overrides below; nothing binds jobs to cores): while one
    # submission waits for Snakemake's next status check, others run, as on a real cluster where
    # the queue, not the node, limits how many jobs run at once.
    cpus=$(nproc)
    ((cpus < 8)) && cpus=8
    mem_mb=$(free -m | awk '/^Mem:/ {print $2}')
    # The profile asks for paper-scale memory (up to 16 GB per job on attempt 1). Advertise at
    # least 64 GB and let slurmd accept it (config_overrides): nothing enforces the limits here
    # (no cgroups), and the CI jobs use a few hundred MB.
    ((mem_mb < 65536)) && mem_mb=65536
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done

    # munge: own key, socket and daemon (run as the munge user, as munged insists)
    local munge_dir=$CLUSTER_DIR/munge
    as_root mkdir -p "$munge_dir"
    as_root dd if=/dev/urandom of="$munge_dir/munge.key" bs=1024 count=1 status=none
    as_root chown -R munge:munge "$munge_dir"
    as_root chmod 711 "$munge_dir"   # not listable, but clients reach the socket by name
    as_root chmod 400 "$munge_dir/munge.key"
    as_root runuser -u munge -- munged \
        --key-file="$munge_dir/munge.key" --socket="$munge_dir/munge.socket" \
        --pid-file="$munge_dir/munged.pid" --log-file="$munge_dir/munged.log" \
        --seed-file="$munge_dir/munged.seed"
    wait_for_file "$munge_dir/munged.pid" 20 munged
    DAEMON_PIDS+=("munged:$(as_root cat "$munge_dir/munged.pid")")

    export SLURM_CONF=$CLUSTER_DIR/slurm.conf
    cat >"$SLURM_CONF" <<EOF
# one-node test cluster written by workflow/scripts/slurm_local_cluster.sh
ClusterName=perinstance
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_dir/munge.socket
CredType=cred/munge
StateSaveLocation=$CLUSTER_DIR/ctld
SlurmdSpoolDir=$CLUSTER_DIR/spool
SlurmctldPidFile=$CLUSTER_DIR/run/slurmctld.pid
SlurmdPidFile=$CLUSTER_DIR/run/slurmd.pid
SlurmctldLogFile=$CLUSTER_DIR/log/slurmctld.log
SlurmdLogFile=$CLUSTER_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
# finished jobs stay visible to squeue (the profile's status command) for 5 minutes
MinJobAge=300
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # Inside a job the plugin's jobstep runs `srun` with every SLURM_* variable removed, so
    # srun would look for /etc/slurm/slurm.conf. Rather than writing there, put an srun on
    # PATH (jobs inherit PATH) that points the real one at this cluster.
    mkdir -p "$CLUSTER_DIR/bin"
    printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$SLURM_CONF" "$(command -v srun)" \
        >"$CLUSTER_DIR/bin/srun"
    chmod 755 "$CLUSTER_DIR/bin/srun"
    export PATH="$CLUSTER_DIR/bin:$PATH"

    as_root slurmctld -f "$SLURM_CONF"
    wait_for_file "$CLUSTER_DIR/run/slurmctld.pid" 30 slurmctld
    DAEMON_PIDS+=("slurmctld:$(as_root cat "$CLUSTER_DIR/run/slurmctld.pid")")
    as_root slurmd -f "$SLURM_CONF" -N "$host"
    wait_for_file "$CLUSTER_DIR/run/slurmd.pid" 30 slurmd
    DAEMON_PIDS+=("slurmd:$(as_root cat "$CLUSTER_DIR/run/slurmd.pid")")
    local state=""
    for _ in $(seq 150); do
        state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
        [[ $state == idle ]] && break
        sleep 0.2
    done
    [[ $state == idle ]] || die "node $host is '$state', not idle after 30 s"
    log "cluster up: node $host ($cpus CPUs), partition debug, ${DAEMON_PIDS[*]}"
}

# ---------------------------------------------------------------------------------------------
# 3./4. the workflow, on the cluster and locally
start_snakemake() {  # start_snakemake NAME ARGS...: snakemake in WORKDIR/NAME, in the background,
    # bounded by `timeout -s KILL`, in its own process group (killed as a whole on interruption)
    local name=$1 dir=$WORKDIR/$1
    shift
    mkdir -p "$dir"
    # the Snakefile's `configfile: "config.yaml"` is relative to the working directory
    cp "$REPO/config.yaml" "$dir/config.yaml"
    (cd "$dir" && exec setsid timeout -s KILL "$SNAKEMAKE_TIMEOUT" "$PYTHON" -m snakemake \
        "${TARGETS[@]}" --snakefile "$REPO/Snakefile" --directory "$dir" --configfile "$TEST_CONFIG" "$@") \
        >"$WORKDIR/$name.log" 2>&1 &
    RUN_PIDS[$name]=$!
    log "snakemake $* in $dir (pid ${RUN_PIDS[$name]})"
}

wait_snakemake() {  # wait_snakemake NAME
    local name=$1 rc=0
    wait "${RUN_PIDS[$name]}" || rc=$?
    unset "RUN_PIDS[$name]"
    if [[ $rc -ne 0 ]]; then
        tail -n 60 "$WORKDIR/$name.log" >&2
        die "snakemake in $WORKDIR/$name failed (exit $rc$([[ $rc -eq 137 ]] && echo ", killed after ${SNAKEMAKE_TIMEOUT}s"))"
    fi
    log "snakemake in $WORKDIR/$name finished"
}

compare_runs() {
    PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$WORKDIR/slurm" "$WORKDIR/local" "$TEST_CONFIG" <<'EOF'
import re
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from perinstance.io import load_table

slurm, local = Path(sys.argv[1]), Path(sys.argv[2])
name = yaml.safe_load(Path(sys.argv[3]).read_text())["experiment"]
TIMING = re.compile(r"second|time|elapsed|duration|date", re.IGNORECASE)

def files(root, pattern):
    return sorted(p.relative_to(root) for p in root.glob(pattern) if p.is_file())

read_table = load_table

scores = Path(f"results/{name}/scores.parquet")
assert (local / scores).is_file() and (slurm / scores).is_file(), "scores.parquet missing"
assert len(pd.read_parquet(local / scores)) > 0

# every table, except provenance and timings (benchmarks/, logs/)
tables = [p for p in files(local, f"results/{name}/**/*") if p.suffix in (".parquet", ".csv")
          and not {"benchmarks", "logs"} & set(p.parts)]
tables += files(local, f"figures/{name}/*.csv")
for rel in tables:
    assert (slurm / rel).is_file(), f"{rel} missing in the SLURM run"
    a, b = read_table(slurm / rel), read_table(local / rel)
    # wall-clock columns (e.g. history.csv's `seconds`) differ between any two runs
    timing = [c for c in b.columns if TIMING.search(str(c))]
    pd.testing.assert_frame_equal(a.drop(columns=timing, errors="ignore"), b.drop(columns=timing),
                                  check_exact=True, obj=str(rel))

models = files(local, f"results/{name}/**/model.pt")
assert models, "no model.pt in the local run"
for rel in models:
    a = torch.load(slurm / rel, map_location="cpu", weights_only=True)
    b = torch.load(local / rel, map_location="cpu", weights_only=True)
    assert a.keys() == b.keys(), rel
    for key in a:
        assert torch.equal(a[key], b[key]), f"{rel}: {key} differs"

figures_local = files(local, f"figures/{name}/*")
figures_slurm = files(slurm, f"figures/{name}/*")
assert figures_local == figures_slurm, (figures_local, figures_slurm)
names = {p.name for p in figures_local}
for figure in ("F0_training", "F1_privacy_loss"):
    for suffix in ("png", "pdf"):
        assert f"{figure}.{suffix}" in names, f"{figure}.{suffix} missing"
for rel in figures_slurm:
    assert (slurm / rel).stat().st_size > 0, rel
# keep_models: false deletes the model weights once read; training runs always stay
config = yaml.safe_load(Path(sys.argv[3]).read_text())
if not config.get("keep_models", True):
    for root in (local, slurm):
        left = [p for pattern in ("oracles/**/*.pt", "unlearn/**/*.pt", "barriers/spawned/**/*.pt")
                for p in files(root, f"results/{name}/{pattern}")]
        assert not left, f"temporary model weights left in {root}: {left[:3]}"
print(f"identical: {len(tables)} tables, {len(models)} model.pt state_dicts; "
      f"{len(figures_slurm)} figure files in both runs")
EOF
}

main() {
    if [[ ${1:-} == --run ]]; then   # --run CMD...: only bring the cluster up around CMD
        shift
        export PATH="$PYTHON_BIN:$PATH"
        install_packages
        start_cluster
        log "running: $*"
        "$@"
        return
    fi
    if [[ $# -ge 1 ]]; then
        WORKDIR=$1
        mkdir -p "$WORKDIR"
        WORKDIR=$(cd "$WORKDIR" && pwd)
    else
        WORKDIR=$(mktemp -d /tmp/perinstance-slurm-work.XXXXXX)
        OWN_WORKDIR=1
    fi
    [[ -e $WORKDIR/slurm || -e $WORKDIR/local ]] && die "$WORKDIR/slurm or $WORKDIR/local exists already"
    "$PYTHON" -c 'import snakemake_executor_plugin_slurm, perinstance' 2>/dev/null \
        || PYTHONPATH="$REPO/src" "$PYTHON" -c 'import snakemake_executor_plugin_slurm, perinstance' \
        || die "$PYTHON lacks snakemake-executor-plugin-slurm or perinstance's dependencies"
    # jobs inherit this environment (sbatch --export=ALL): rules' `python` is $PYTHON's
    export PATH="$PYTHON_BIN:$PATH"

    # the local run goes first and overlaps with the cluster's start and the SLURM run (which
    # mostly waits between status checks)
    start_snakemake local --cores 2
    install_packages
    start_cluster
    # SLURM_TEST_ARGS: more snakemake options for the SLURM run (the test passes smaller groups and
    # quicker status checks: a 2-core machine runs the whole DAG, not a queue of GPU jobs)
    read -r -a extra <<<"${SLURM_TEST_ARGS:-}"
    start_snakemake slurm --profile "$REPO/workflow/profiles/slurm" "${extra[@]}"
    wait_snakemake slurm
    local submitted grouped local_jobs states
    submitted=$(grep -c "has been submitted with SLURM jobid" "$WORKDIR/slurm.log" || true)
    ((submitted > 0)) || die "no job was submitted to SLURM (see $WORKDIR/slurm.log)"
    # every job we submitted has finished as COMPLETED (squeue keeps them for MinJobAge)
    states=$(squeue -h -t all -o %T | sort | uniq -c | tr -s ' ' | paste -sd, -)
    [[ $(squeue -h -t all -o %T | grep -vc COMPLETED || true) -eq 0 ]] \
        || die "not all SLURM jobs COMPLETED: $states"
    # grouped submissions log to .snakemake/slurm_logs/group_<name>/; localrules print as `localrule`
    grouped=$(grep "has been submitted with SLURM jobid" "$WORKDIR/slurm.log" | grep -c "group_" || true)
    local_jobs=$(grep -c "^localrule " "$WORKDIR/slurm.log" || true)
    log "SLURM run: $submitted jobs submitted ($grouped grouped), $local_jobs local jobs, states:$states"
    wait_snakemake local
    log "comparing"
    compare_runs
    # a finished run (its temporary files deleted) has nothing left to do
    (cd "$WORKDIR/local" && "$PYTHON" -m snakemake -n "${TARGETS[@]}" --snakefile "$REPO/Snakefile" \
        --directory "$WORKDIR/local" --configfile "$TEST_CONFIG" 2>&1 | tail -n 3) | tee "$WORKDIR/rerun.log" >&2
    grep -q "Nothing to be done" "$WORKDIR/rerun.log" || die "a rerun of the finished local run would run jobs again"
}

main "$@"
