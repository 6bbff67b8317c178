#!/usr/bin/env bash
# Stop the single-node SLURM that .ci/slurm/start.sh started. Safe to run twice, and
# when nothing was started.
#
#   .ci/slurm/stop.sh                  cancel every job, stop slurmd, slurmctld and
#                                      the munged that start.sh started (by pid file)
#   .ci/slurm/stop.sh --daemons-only   stop slurmd and slurmctld only (start.sh uses it
#                                      to restart after a config change)
#
# Jobs go first: a job's slurmstepd outlives slurmd, so stopping the daemons first
# would leave dask workers running.
set -uo pipefail

DIR=${CUBIE_SLURM_DIR:-/tmp/cubie-slurm}
CONF=$DIR/etc/slurm.conf
say() { echo "slurm/stop: $*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid_file() {  # stop_pid_file NAME FILE: TERM, wait up to 10 s, then KILL
    local name=$1 file=$2 pid
    if ! alive "$file"; then
        rm -f "$file"
        return 0
    fi
    pid=$(cat "$file")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        say "$name (pid $pid) killed"
    else
        say "$name (pid $pid) stopped"
    fi
    rm -f "$file"
}

if [ ! -f "$CONF" ]; then
    say "nothing to stop ($CONF not found)"
    exit 0
fi
export SLURM_CONF=$CONF

if [ "${1:-}" != "--daemons-only" ] && alive "$DIR/run/slurmctld.pid"; then
    jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
    if [ -n "${jobs// /}" ]; then
        say "cancelling jobs: $jobs"
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 50); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
        left=$(squeue -h -o '%i %T' 2>/dev/null | tr '\n' ' ')
        [ -z "$left" ] || say "still in the queue after 10 s: $left"
    fi
fi

stop_pid_file slurmd "$DIR/run/slurmd.pid"
stop_pid_file slurmctld "$DIR/run/slurmctld.pid"
[ "${1:-}" = "--daemons-only" ] && exit 0

stop_pid_file munged "$DIR/run/munged.pid"
if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
fi
say "done (state and logs kept in $DIR)"
