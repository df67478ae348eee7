#!/usr/bin/env bash
# Start a Radical Edge agent inside a batch allocation, so that its plugins (psij, rhapsody)
# run work on the allocated nodes; the agent says bye to the bridge and exits when the job is
# cancelled or reaches its time limit.
#
#   sbatch -N 2 -t 02:00:00 radical-edge-agent-job.sh                    # Slurm
#   qsub -l select=2 -l walltime=02:00:00 -V radical-edge-agent-job.sh   # PBS
#
# Settings (environment, e.g. exported before sbatch/qsub, which pass it on):
#   RADICAL_BRIDGE_URL        the bridge, https://bridge.example.org (required)
#   RADICAL_EDGE_TOKEN_FILE   this edge's token, mode 0600 (default ~/.radical/edge-batch.token);
#                             the token names the edge: one token per allocation that may run
#                             at the same time (a second agent with the same token replaces
#                             the first)
#   RADICAL_BRIDGE_CA_CERT    a site CA, if the bridge's certificate is not publicly trusted
#   RADICAL_EDGE_AGENT        the agent command (default ~/.radical/venv/bin/radical-edge-service)
#   RADICAL_EDGE_PLUGINS      default sysinfo,psij,queue_info,rhapsody
#   RADICAL_EDGE_STATE_DIR    default ~/.radical/edge-job-<job id>
# Arguments are passed on to the agent (e.g. --option psij.poll_interval=2).
#
#SBATCH --job-name=radical-edge-agent
#SBATCH --signal=B:TERM@60
#PBS -N radical-edge-agent
set -euo pipefail

: "${RADICAL_BRIDGE_URL:?set RADICAL_BRIDGE_URL to the bridge, e.g. https://bridge.example.org}"
export RADICAL_BRIDGE_URL
job_id=${SLURM_JOB_ID:-${PBS_JOBID:-local-$$}}
agent=${RADICAL_EDGE_AGENT:-$HOME/.radical/venv/bin/radical-edge-service}
args=(--token-file "${RADICAL_EDGE_TOKEN_FILE:-$HOME/.radical/edge-batch.token}"
      --state-dir "${RADICAL_EDGE_STATE_DIR:-$HOME/.radical/edge-job-$job_id}"
      --plugins "${RADICAL_EDGE_PLUGINS:-sysinfo,psij,queue_info,rhapsody}")
if [[ -n ${RADICAL_BRIDGE_CA_CERT:-} ]]; then
    args+=(--ca-cert "$RADICAL_BRIDGE_CA_CERT")
fi

echo "radical-edge-agent-job: job $job_id on $(hostname), bridge $RADICAL_BRIDGE_URL"
# The agent runs in the background so that this shell can pass on the scheduler's signals:
# Slurm's --signal=B:TERM@60 and scancel signal the batch shell, PBS signals the job.
$agent "${args[@]}" "$@" &
pid=$!
signalled=0
trap 'signalled=1; kill -TERM "$pid" 2>/dev/null || true' TERM INT HUP
status=0
wait "$pid" || status=$?
if (( signalled && status > 128 )); then
    # wait was interrupted by the signal to this shell: now wait for the agent's own exit.
    status=0
    wait "$pid" || status=$?
fi
echo "radical-edge-agent-job: agent exited with $status"
exit "$status"
