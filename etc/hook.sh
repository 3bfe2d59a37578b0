#!/bin/sh
# cc-slurm-adapter hook: slurm.conf's PrologSlurmctld and EpilogSlurmctld point here
# (see etc/slurm.conf.snippet). slurmctld runs it at the start and the end of every job, with
# SLURM_JOB_ID, SLURM_SCRIPT_CONTEXT, ... in the environment; the adapter's hook client passes
# them on to the daemon, which then looks at that job at once instead of at its next poll.
#
#   CC_SLURM_ADAPTER         the adapter executable (default below)
#   CC_SLURM_ADAPTER_CONFIG  its config file; empty = the adapter's default config path
adapter=${CC_SLURM_ADAPTER:-/opt/cc-slurm-adapter/bin/cc-slurm-adapter}
# stdout stays quiet; stderr goes to the slurmctld log, where the admin looks for problems
if [ -n "${CC_SLURM_ADAPTER_CONFIG:-}" ]; then
  "$adapter" -config "$CC_SLURM_ADAPTER_CONFIG" >/dev/null
else
  "$adapter" >/dev/null
fi
# Always succeed: a non-zero exit of PrologSlurmctld fails the job's allocation (the job is
# requeued or cancelled). The hook only speeds the adapter up; its periodic poll finds every job
# anyway, so an adapter that is down or slow must never cost a user a job.
exit 0
