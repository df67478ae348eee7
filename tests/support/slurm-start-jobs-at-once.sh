#!/usr/bin/env bash
# Make the test Slurm (../shared/scripts/slurm-up.sh) start a batch job as soon as it can run.
#
# Slurm schedules batch jobs at most once every batch_sched_delay seconds (3 by default), a
# throttle meant for sites that take thousands of submissions a minute. On the tests' one
# node it made each job wait up to 3 s to start, and every wave of an array's tasks 3 s:
# the 20 one-second tasks of tests/test_psij_arrays_slurm.py took 30 s on the 2 CPUs.
# Nothing the tests assert depends on it (they wait for states, never for durations).
#
# Idempotent; `scontrol reconfigure` applies it to the running daemons (running jobs are not
# touched). slurm-up.sh writes slurm.conf anew, and so drops this line, when it runs again:
# run this after it (.ci/run does).
set -euo pipefail
CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}
LINE="SchedulerParameters=batch_sched_delay=0"
[ -f "$CONF" ] || { echo "no $CONF: start Slurm first (slurm-up.sh)" >&2; exit 1; }
if grep -qx "$LINE" "$CONF"; then
    exit 0
fi
if grep -q '^SchedulerParameters=' "$CONF"; then
    echo "$CONF already sets SchedulerParameters; left alone: $(grep '^SchedulerParameters=' "$CONF")" >&2
    exit 0
fi
echo "$LINE" >>"$CONF"
scontrol reconfigure
echo "slurm: $LINE"
