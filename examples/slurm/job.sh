#!/bin/sh
# A Slurm batch job that survives preemption and requeue with cairn run.
#
#   sbatch --requeue --signal=B:TERM@60 examples/slurm/job.sh
#
# On preemption or `scontrol requeue JOBID`, Slurm sends SIGTERM to this
# batch shell 60 s before it ends the job (B: the batch shell only). The
# shell is replaced by cairn run (exec), which takes a final checkpoint,
# stops the job and exits 0; when Slurm starts the requeued job, cairn run
# finds the checkpoint in the same directory and restores it.
#
# Not yet tested under Slurm: only the cairn run behaviour it relies on is
# (tests/run.rs). cairn needs root (or CAP_CHECKPOINT_RESTORE and
# CAP_SYS_PTRACE) on the compute node.
#
#SBATCH --job-name=cairn-job
#SBATCH --output=job-%j.out
#SBATCH --open-mode=append
#SBATCH --ntasks=1

set -eu
mkdir -p "${CKPT:-/scratch/$USER/cairn}"
# Checkpoints live here, one directory per job id (kept across requeues).
CKPT=${CKPT:-/scratch/$USER/cairn}
# --pid-ns: the restarted job keeps its pids even if other processes
# took them on this node meanwhile.
exec cairn -o "$CKPT/$SLURM_JOB_ID.log" run -D "$CKPT/$SLURM_JOB_ID" \
    --interval 10m --keep 2 --pid-ns \
    -- ./my_simulation --input input.dat
