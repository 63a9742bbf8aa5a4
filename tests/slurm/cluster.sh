#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for the tests and CI (issue 7).
#
#   bash tests/slurm/cluster.sh up      # install slurm-wlm + munge if missing, start munged, slurmctld, slurmd
#   bash tests/slurm/cluster.sh status  # say what runs, show sinfo
#   bash tests/slurm/cluster.sh down    # cancel the test jobs, stop exactly what `up` started (PID files)
#
# Both `up` and `down` are idempotent: `up` on a running cluster returns at once, `down` on a stopped
# one does nothing. Needs root (apt-get, daemons). Debian 12 ships slurm-wlm 22.05 and munge 0.5.15.
#
# The cluster: one node `localhost` with every core and (MemTotal - 2 GiB) of memory, two fake GPUs
# declared as a count-only GRES (so `--gpus=1` requests are scheduled for real; the jobs see no CUDA
# device and run on CPU), two partitions on that node, `cpu` (default) and `gpu`. No accounting
# database: the controller writes one job-completion record per finished job to
# $STATE_DIR/jobcomp.txt (JobCompType=jobcomp/filetxt); the tests read SLURM's records from there.
# MinJobAge=600 keeps finished jobs visible to `squeue`, which is how Snakemake's SLURM executor
# learns that a job finished on a cluster without accounting (`slurm-status-command: squeue`).
#
# Environment:
#   CLIP_ROBUSTNESS_SLURM_DIR  state folder: logs, spool, PID files, job-completion records
#                              (default /tmp/clip-robustness-slurm)
#   SLURM_CONF                 where slurm.conf is written (default /etc/slurm/slurm.conf, where
#                              every SLURM client looks). An existing slurm.conf that this script did
#                              not write is never overwritten.
#   CLIP_ROBUSTNESS_SLURM_GPUS number of fake GPUs on the node (default 2; 0 declares none)

set -euo pipefail

STATE_DIR="${CLIP_ROBUSTNESS_SLURM_DIR:-/tmp/clip-robustness-slurm}"
SLURM_CONF_PATH="${SLURM_CONF:-/etc/slurm/slurm.conf}"
GRES_CONF_PATH="$(dirname "$SLURM_CONF_PATH")/gres.conf"
N_GPUS="${CLIP_ROBUSTNESS_SLURM_GPUS:-2}"
MARKER="# written by clip-robustness tests/slurm/cluster.sh"
NODE=localhost
MUNGE_PID_FILE=/run/munge/munged.pid
WAIT_S=60

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (installs packages, starts munged/slurmctld/slurmd); try: sudo bash $0 $1"
}

# --------------------------------------------------------------------------------------------- install

ensure_packages() {
    local missing=()
    for tool in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
        command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        log "missing ${missing[*]}: installing Debian's slurm-wlm and munge (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    fi
    [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing or empty after installing munge; create it with: mungekey --create"
}

# --------------------------------------------------------------------------------------------- config

write_config() {
    local cpus mem_mb gres_line=""
    cpus="$(nproc)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
    ((mem_mb > 512)) || die "this machine has too little memory for a test node (${mem_mb} MB after keeping 2 GiB back)"

    for path in "$SLURM_CONF_PATH" "$GRES_CONF_PATH"; do
        if [[ -e "$path" ]] && ! grep -qF "$MARKER" "$path"; then
            die "$path exists and was not written by this script: refusing to overwrite a site configuration. Set SLURM_CONF=/some/other/slurm.conf (and export it to every SLURM client) to use another path."
        fi
    done
    mkdir -p "$(dirname "$SLURM_CONF_PATH")"

    if ((N_GPUS > 0)); then
        gres_line="Gres=gpu:${N_GPUS}"
        # slurmd counts GPUs by their device files: give it character devices that behave like
        # /dev/null (major 1, minor 3), one per fake GPU.
        install -d -m 0755 "$STATE_DIR/dev"
        for ((i = 0; i < N_GPUS; i++)); do
            [[ -c "$STATE_DIR/dev/fakegpu$i" ]] || mknod -m 0666 "$STATE_DIR/dev/fakegpu$i" c 1 3
        done
        cat >"$GRES_CONF_PATH" <<EOF
$MARKER
# Fake GPUs: SLURM schedules --gpus requests against them; the devices behave like /dev/null.
AutoDetect=off
NodeName=$NODE Name=gpu File=$STATE_DIR/dev/fakegpu[0-$((N_GPUS - 1))]
EOF
    fi

    cat >"$SLURM_CONF_PATH" <<EOF
$MARKER
# A single-node test cluster. State, logs and job-completion records: $STATE_DIR
ClusterName=cliprobustness
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (120 by default): 30 keeps the requeue test short.
AuthInfo=cred_expire=30
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# No accounting database: sacct is disabled; finished jobs stay in squeue for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
# SLURM's own record of every finished job (JobId, Name, JobState, ExitCode, times), one line each.
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/jobcomp.txt
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/slurmctld.log
SlurmdLogFile=$STATE_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
${gres_line:+GresTypes=gpu}
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb $gres_line State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
    log "wrote $SLURM_CONF_PATH (node $NODE: CPUs=$cpus RealMemory=${mem_mb} MB, GPUs=$N_GPUS)"
}

# --------------------------------------------------------------------------------------------- processes

# pid_alive PIDFILE NAME: true when PIDFILE names a live process whose command is NAME.
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] && [[ "$(ps -o comm= -p "$pid" 2>/dev/null)" == "$2" ]]
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
    if munge_works; then
        log "munged already answers: reusing it (down will leave it running)"
        return
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    runuser -u munge -- munged --pid-file="$MUNGE_PID_FILE"
    echo "$MUNGE_PID_FILE" >"$STATE_DIR/munged.started"
    for _ in $(seq 50); do munge_works && return; sleep 0.1; done
    die "munged did not answer within 5 s; see /var/log/munge/munged.log"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local deadline=$((SECONDS + $1)) what="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
    log "$what"
}

node_idle() { [[ "$(sinfo -h -n "$NODE" -o %T 2>/dev/null | sort -u)" == idle ]]; }

cluster_up() {
    pid_alive "$STATE_DIR/slurmctld.pid" slurmctld && pid_alive "$STATE_DIR/slurmd.pid" slurmd && node_idle
}

up() {
    need_root up
    ensure_packages
    if cluster_up; then
        log "already up (state in $STATE_DIR)"
        sinfo
        return
    fi
    install -d -m 0755 "$STATE_DIR"
    install -d -o slurm -g slurm -m 0755 "$STATE_DIR/slurmctld"
    install -d -m 0755 "$STATE_DIR/slurmd"
    touch "$STATE_DIR/jobcomp.txt" "$STATE_DIR/slurmctld.log"
    chown slurm:slurm "$STATE_DIR/jobcomp.txt" "$STATE_DIR/slurmctld.log"
    write_config
    start_munged

    if ! pid_alive "$STATE_DIR/slurmctld.pid" slurmctld; then
        # -c: start with no jobs. Jobs saved by an earlier controller of this test cluster (a machine
        # snapshot taken mid-run, a kill -9) belong to processes that no longer exist; recovering them
        # would hold the node "allocated" for jobs that never finish.
        slurmctld -c -f "$SLURM_CONF_PATH"
    fi
    wait_for "$WAIT_S" "slurmctld answers" scontrol ping \
        || die "slurmctld did not answer within ${WAIT_S} s; see $STATE_DIR/slurmctld.log"
    if ! pid_alive "$STATE_DIR/slurmd.pid" slurmd; then
        slurmd -f "$SLURM_CONF_PATH" -N "$NODE"
    fi
    if ! wait_for 20 "node $NODE is idle" node_idle; then
        # A node left down/drained by an earlier unclean stop: return it to service once.
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        wait_for "$WAIT_S" "node $NODE is idle" node_idle \
            || die "node $NODE is not idle after ${WAIT_S} s (sinfo: $(sinfo -h -n "$NODE" -o '%T %E' 2>&1)); see $STATE_DIR/slurmd.log and $STATE_DIR/slurmctld.log"
    fi
    sinfo
}

# stop PIDFILE NAME: TERM the process named in PIDFILE (only if it is NAME), wait, then KILL.
stop() {
    local pidfile="$1" name="$2" pid
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        return
    fi
    pid="$(tr -dc '0-9' <"$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; rm -f "$pidfile"; return; }
        sleep 0.1
    done
    log "$name (pid $pid) ignored TERM for 10 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

down() {
    need_root down
    if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld; then
        # Jobs of this test cluster only: it was started by `up`, nobody else submits to it.
        scancel --full --quiet --partition=cpu,gpu 2>/dev/null || true
        sleep 1
    fi
    stop "$STATE_DIR/slurmd.pid" slurmd
    stop "$STATE_DIR/slurmctld.pid" slurmctld
    if [[ -s "$STATE_DIR/munged.started" ]]; then
        stop "$(cat "$STATE_DIR/munged.started")" munged
        rm -f "$STATE_DIR/munged.started"
    fi
    for path in "$SLURM_CONF_PATH" "$GRES_CONF_PATH"; do
        if [[ -e "$path" ]] && grep -qF "$MARKER" "$path"; then rm -f "$path"; fi
    done
    log "down (logs and job-completion records kept in $STATE_DIR)"
}

status() {
    local what
    for what in slurmctld slurmd; do
        if pid_alive "$STATE_DIR/$what.pid" "$what"; then echo "$what: running (pid $(cat "$STATE_DIR/$what.pid"))"; else echo "$what: stopped"; fi
    done
    if munge_works; then echo "munged: answers"; else echo "munged: not answering"; fi
    cluster_up && sinfo
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: bash $0 up|down|status" >&2; exit 2 ;;
esac
