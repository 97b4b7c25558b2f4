#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the tests in tests/cluster/.
#
# As root on a fresh Debian machine: installs slurm-wlm and munge, writes a short
# /etc/slurm/slurm.conf for this host (no accounting, no cgroups: proctrack/linuxproc), starts
# munged, slurmctld and slurmd as plain daemons (no systemd) and waits until `sinfo` shows
# the node idle. The daemons talk over 127.0.0.1, so the host name need not resolve.
# Idempotent: a cluster already up is left as it is. Exits non-zero with one line and the
# daemons' logs when it cannot start.
#
#   sudo .ci/slurm.sh             # or SLURM_WAIT=120 .ci/slurm.sh
set -euo pipefail

WAIT=${SLURM_WAIT:-60}   # seconds to wait for the node to become idle
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
NODE=$(hostname -s)

fail() {
    echo "slurm.sh: error: $*" >&2
    for log in "$LOGS/slurmctld.log" "$LOGS/slurmd.log" /var/log/munge/munged.log; do
        if [ -s "$log" ]; then
            echo "--- last lines of $log" >&2
            tail -n 15 "$log" >&2
        fi
    done
    exit 1
}

node_state() {  # the node's state as sinfo prints it (idle, mix, alloc, down*, ...)
    timeout 10 sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n 1
}

up() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

if command -v sinfo >/dev/null && up; then
    echo "slurm.sh: SLURM is already up on $NODE ($(node_state))"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages and starts daemons)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmd slurmctld slurm-client \
        munge >/dev/null || fail "apt-get could not install slurm-wlm and munge"
fi

# --- munge: the key comes with the package; make one if it did not
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force >/dev/null 2>&1 \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /etc/munge/munge.key /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
fi
for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n | unmunge >/dev/null 2>&1 || fail "munge does not answer (munged not running?)"

# --- slurm.conf for one node: this host, its cores, a bit less memory than it has
cpus=$(nproc)
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p /etc/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd /run/slurm
cat > "$CONF" <<EOF
# written by .ci/slurm.sh: a one-node cluster on $NODE
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmdTimeout=30
SlurmctldTimeout=30
KillWait=5
MinJobAge=30
InactiveLimit=0
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

if ! pgrep -x slurmctld >/dev/null; then
    slurmctld || fail "slurmctld did not start"
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd || fail "slurmd did not start"
fi

# --- wait (bounded) until the node takes jobs
deadline=$((SECONDS + WAIT))
until up; do
    state=$(node_state)
    case "$state" in
        down*|drain*)  # a node that was down before (e.g. a restarted machine)
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] \
        || fail "the node $NODE is not idle after ${WAIT}s (sinfo: '${state:-no answer}')"
    sleep 1
done
echo "slurm.sh: SLURM is up on $NODE: $cpus CPUs, ${memory_mb} MB ($(node_state))"
