#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests/test_slurm.py and .ci/run.
#
# Installs Debian's Slurm and MUNGE if missing, writes /etc/slurm/slurm.conf for this
# host (its node line from `slurmd -C`; no accounting, no cgroups), starts munged,
# slurmctld and slurmd by hand (services do not autostart on these machines) and waits
# until `sinfo` shows the node idle. Safe to run again: a cluster that answers is left
# alone, and daemons already running are not started twice. Run it as root.
#
#   bash scripts/slurm_localhost.sh            # state, spool and logs in /tmp/vxsim-slurm
#   VXSIM_SLURM_DIR=/some/dir bash scripts/slurm_localhost.sh
#
# The daemons keep running after the script ends. Their pid files, state and logs
# are in that folder; a later run finds it in the slurm.conf it wrote.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
MARK="# written by vxsim scripts/slurm_localhost.sh"
# the folder of an earlier run, from the slurm.conf it wrote, unless told otherwise
EARLIER=
if [ -e "$CONF" ] && grep -qxF "$MARK" "$CONF"; then
    EARLIER=$(sed -n 's/^StateSaveLocation=\(.*\)\/state$/\1/p' "$CONF")
fi
DIR=${VXSIM_SLURM_DIR:-${EARLIER:-/tmp/vxsim-slurm}}
WAIT_S=${VXSIM_SLURM_WAIT_S:-90}

say() { echo "slurm_localhost: $*" >&2; }
die() { say "error: $*"; exit 1; }

node_state() {
    # the state of our node as sinfo prints it (idle, mixed, down*, ...), empty if none
    timeout 10 sinfo -h -N -n "$1" -o '%T' 2>/dev/null | head -n 1 || true
}

alive() {
    # true when the pid file $1 names a running process
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

ours() {
    # true when slurm.conf is the one this script writes
    [ -e "$CONF" ] && grep -qxF "$MARK" "$CONF"
}

answers() {
    # true when a controller answers and our node can take jobs; for a cluster this
    # script set up (pid files in folder $1), both daemons must be alive too: the
    # controller notices a dead slurmd only minutes later and shows it idle until then
    command -v sinfo >/dev/null 2>&1 || return 1
    if ours; then
        alive "$1/slurmctld.pid" && alive "$1/slurmd.pid" || return 1
    fi
    case "$(node_state "$(hostname -s)")" in
        idle | mixed | allocated | completing) return 0 ;;
        *) return 1 ;;
    esac
}

if answers "${EARLIER:-$DIR}"; then
    say "a cluster is already running here: $(sinfo -h -N -o '%N %P %T %c CPUs' | head -n 1)"
    exit 0
fi
if [ -n "$EARLIER" ] && [ "$EARLIER" != "$DIR" ] \
    && { alive "$EARLIER/slurmctld.pid" || alive "$EARLIER/slurmd.pid"; }; then
    die "daemons of an earlier run (files in $EARLIER) are running; stop them first"
fi

[ "$(id -u)" = 0 ] || die "must run as root to install and start Slurm (uid is $(id -u))"

# 1. the packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || die "Slurm is not installed and there is no apt-get"
    say "installing slurmctld slurmd slurm-client munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >/dev/null || die "apt-get install of Slurm failed"
fi

# 2. MUNGE, which Slurm authenticates with
if ! (munge -n | unmunge) >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 600 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do
        (munge -n | unmunge) >/dev/null 2>&1 && break
        sleep 0.5
    done
    (munge -n | unmunge) >/dev/null 2>&1 || die "munged does not answer"
fi

# 3. slurm.conf for this host
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
HOST=$(hostname -s)
NODE=$(slurmd -C | head -n 1)
case "$NODE" in
    NodeName=*) ;;
    *) die "slurmd -C printed no node line: $NODE" ;;
esac
# Memory is not a consumable here (CR_Core), but a job's --mem must fit RealMemory:
# declare 90 % of what slurmd sees, so that a small change in free memory at the next
# start cannot drain the node for "Low RealMemory".
NODE=$(echo "$NODE" | awk '{
    for (i = 1; i <= NF; i++)
        if ($i ~ /^RealMemory=/) { split($i, kv, "="); $i = "RealMemory=" int(kv[2] * 0.9) }
    print }')
NEW=$(cat <<EOF
$MARK
# A one-node test cluster: everything on $HOST, no accounting, no cgroups.
ClusterName=vxsim-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# finished jobs stay visible to scontrol show job (state, exit code) for 10 minutes
MinJobAge=600
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ -e "$CONF" ] && ! ours; then
    die "$CONF exists and was not written by this script; not replacing it"
fi
if [ ! -e "$CONF" ] || [ "$(cat "$CONF")" != "$NEW" ]; then
    mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$NEW" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    say "wrote $CONF"
    # a controller already running reads the new file
    if alive "$DIR/slurmctld.pid"; then scontrol reconfigure || true; fi
fi

# 4. the daemons (each daemonises itself and writes its pid file)
if ! alive "$DIR/slurmctld.pid"; then
    say "starting slurmctld (log: $DIR/log/slurmctld.log)"
    slurmctld
fi
for _ in $(seq 1 40); do
    scontrol ping 2>/dev/null | grep -q UP && break
    sleep 0.5
done
scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer; see $DIR/log/slurmctld.log"
if ! alive "$DIR/slurmd.pid"; then
    say "starting slurmd (log: $DIR/log/slurmd.log)"
    slurmd
fi

# 5. wait for the node to be idle; a node left down or drained by an earlier run is resumed
deadline=$((SECONDS + WAIT_S))
while ! answers "$DIR"; do
    state=$(node_state "$HOST")
    case "$state" in
        down | drained | draining | drain | down~ | fail)
            say "node $HOST is $state: resuming it"
            scontrol update NodeName="$HOST" State=RESUME || true
            ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || die "node $HOST is '$state' after ${WAIT_S}s; see $DIR/log/"
    sleep 1
done
say "ready: $(sinfo -h -N -o '%N %P %T %c CPUs' | head -n 1)"
