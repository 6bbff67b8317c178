#!/usr/bin/env bash
# Start a real single-node SLURM on loopback, for `make test-slurm` (as root,
# non-interactive, idempotent). Recipe and pitfalls: shared/notes/slurm-local.md.
#
#   .ci/slurm/start.sh     install (if missing) and start munge, slurmctld, slurmd;
#                          wait until `sinfo` shows the node idle
#   .ci/slurm/stop.sh      cancel every job, then stop the daemons
#
# Everything lives under $CUBIE_SLURM_DIR (default /tmp/cubie-slurm): etc/ (slurm.conf,
# cgroup.conf, gres.conf), dev/ (two fake GPUs: character devices, so jobs asking for
# --gres=gpu:N get CUDA_VISIBLE_DEVICES), state/, spool/, log/, run/ (pid files).
# Clients find slurm.conf through SLURM_CONF, or through /etc/slurm/slurm.conf, which
# this script links to ours when no such file exists yet.
#
# The node: NodeName = `hostname -s` on 127.0.0.1, 8 CPUs on however many cores the
# machine has (oversubscribed: jobs are mostly idle dask workers), 2 GPUs, one partition
# `debug` (the default). Runs on a machine without systemd: daemons are started by hand.
set -euo pipefail

DIR=${CUBIE_SLURM_DIR:-/tmp/cubie-slurm}
CPUS=${CUBIE_SLURM_CPUS:-8}
GPUS=2
WAIT_S=${CUBIE_SLURM_WAIT_S:-60}
ETC=$DIR/etc
CONF=$ETC/slurm.conf
HOST=$(hostname -s)

say() { echo "slurm/start: $*"; }
die() { echo "slurm/start: error: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts slurmd as root)"

# --- packages --------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
else
    say "packages present (slurmd $(dpkg-query -W -f '${Version}' slurmd 2>/dev/null || echo '?'))"
fi

mkdir -p "$ETC" "$DIR/dev" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/run"

# --- munge: the daemon refuses to run as root ("Logfile is insecure") -------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge /etc/munge/munge.key
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    munge -n | unmunge >/dev/null || die "munged started but munge -n | unmunge fails"
    cp /run/munge/munged.pid "$DIR/run/munged.pid" 2>/dev/null || true  # stop.sh stops ours only
else
    say "munged already running"
fi

# --- config ----------------------------------------------------------------------------
# Socket/core/thread layout: from `slurmd -C`, stretched to $CPUS cores (a bare CPUs=N
# that disagrees with the hardware drains the node; config_overrides accepts ours).
hw=$(slurmd -C | head -n 1)
field() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$hw"; }
MEM=$(field RealMemory)
[ -n "$MEM" ] || die "cannot read RealMemory from 'slurmd -C': $hw"

for i in $(seq 0 $((GPUS - 1))); do
    dev=$DIR/dev/nvidia$i
    if [ ! -c "$dev" ]; then rm -f "$dev"; mknod "$dev" c 1 3; fi  # same numbers as /dev/null
done

cat >"$CONF.new" <<EOF
# Written by .ci/slurm/start.sh: single-node SLURM on loopback for tests.
ClusterName=cubie
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# The v2 autodetection can be fatal inside containers.
printf 'CgroupPlugin=cgroup/v1\n' >"$ETC/cgroup.conf"
printf 'AutoDetect=off\nName=gpu File=%s/dev/nvidia[0-%d]\n' "$DIR" $((GPUS - 1)) >"$ETC/gres.conf"

if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
    rm "$CONF.new"
else
    mv "$CONF.new" "$CONF"
    if alive "$DIR/run/slurmctld.pid" || alive "$DIR/run/slurmd.pid"; then
        say "config changed: restarting the daemons"
        "$(dirname "$0")/stop.sh" --daemons-only
    fi
fi
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    mkdir -p /etc/slurm
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    conf_note="/etc/slurm/slurm.conf -> $CONF"
else
    conf_note="/etc/slurm/slurm.conf is someone else's: export SLURM_CONF=$CONF for clients"
fi
export SLURM_CONF=$CONF

# --- daemons ---------------------------------------------------------------------------
if alive "$DIR/run/slurmctld.pid"; then
    say "slurmctld already running (pid $(cat "$DIR/run/slurmctld.pid"))"
else
    say "starting slurmctld"
    slurmctld -c -f "$CONF"   # -c: no saved jobs from an earlier run
fi
if alive "$DIR/run/slurmd.pid"; then
    say "slurmd already running (pid $(cat "$DIR/run/slurmd.pid"))"
else
    say "starting slurmd"
    slurmd -f "$CONF"
fi

# --- wait for the node -----------------------------------------------------------------
state=""
for _ in $(seq 1 $((WAIT_S * 2))); do
    state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n 1 || true)
    case $state in
        idle|mix|alloc) break ;;
        drain*|down*)   scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case $state in
    idle|mix|alloc) ;;
    *)
        echo "slurm/start: node $HOST not ready after ${WAIT_S}s (state '${state:-none}')" >&2
        sinfo -N -l >&2 || true
        tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        exit 1 ;;
esac
say "ready: node $HOST $state, $CPUS CPUs, gpu:$GPUS (fake, $DIR/dev/nvidia*), partition debug"
say "config $CONF; $conf_note; logs $DIR/log"
