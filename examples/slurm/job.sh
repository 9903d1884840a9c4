#!/bin/sh
# A Slurm batch job that survives its time limit, preemption and requeue
# with cairn run:
#
#   sbatch --requeue --signal=B:TERM@60 job.sh ./my_simulation --input input.dat
#
# The job runs under `cairn run`, which checkpoints it every
# $CAIRN_INTERVAL (default 10m) into $CKPT/$SLURM_JOB_ID (kept across
# requeues: a requeued job has the same id). When SIGTERM reaches this
# batch shell alone (B: above, 60 s before the time limit; `scancel
# --batch --signal=TERM JOBID`; a preemption with
# PreemptParameters=send_user_signal), cairn run takes a final
# checkpoint and stops the job, and this script puts the job back in the
# queue (`scontrol requeue`). When Slurm starts it again, cairn run finds
# the checkpoint and restores the job where it stopped.
#
# `scontrol requeue JOBID` (or a preemption without send_user_signal)
# sends SIGTERM to every process of the job at once: the job itself ends
# before it can be checkpointed, Slurm requeues it, and its next start
# restores the newest periodic checkpoint (the work since then is done
# again).
#
# Environment: CKPT (default /scratch/$USER/cairn), CAIRN_INTERVAL,
# CAIRN (the cairn executable, default `cairn` on PATH), CAIRN_RUN_FLAGS
# (more flags of cairn run, e.g. --pid-ns: the restarted job keeps its
# pids even if other processes took them on the node meanwhile). cairn
# needs root (or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE) on the
# compute node. Tested by tests/slurm.rs.
#
#SBATCH --job-name=cairn-job
#SBATCH --output=job-%j.out
#SBATCH --open-mode=append
#SBATCH --ntasks=1
#SBATCH --requeue
#SBATCH --signal=B:TERM@60

set -u
if [ $# -eq 0 ]; then
    echo "usage: sbatch [--requeue --signal=B:TERM@60] job.sh CMD [ARGS...]" >&2
    exit 2
fi
CKPT=${CKPT:-/scratch/${USER:-$(id -un)}/cairn}
mkdir -p "$CKPT" || exit 1

# SIGTERM goes on to cairn run, which checkpoints the job and stops it.
pid=
term=0
trap 'term=1; [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null' TERM
# shellcheck disable=SC2086 # CAIRN_RUN_FLAGS is a list of flags
"${CAIRN:-cairn}" -o "$CKPT/$SLURM_JOB_ID.log" run -D "$CKPT/$SLURM_JOB_ID" \
    --interval "${CAIRN_INTERVAL:-10m}" --keep 2 ${CAIRN_RUN_FLAGS:-} -- "$@" &
pid=$!
[ "$term" = 0 ] || kill -TERM "$pid" 2>/dev/null
# wait returns early when the trap runs: wait again until cairn run ends.
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do
    rc=0
    wait "$pid" || rc=$?
done

if [ "$term" = 1 ] && [ "$rc" = 0 ]; then
    # Checkpointed and stopped: back to the queue, restored at its next start.
    echo "job $SLURM_JOB_ID: checkpointed in $CKPT/$SLURM_JOB_ID; requeued"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$rc"
