"""metaData.slurmInfo: a short `scontrol show job`-like text made from the records we already have.

The original sends scontrol's own text (cc-slurm-adapter-spec.md §3.1); that costs one Slurm call
per job and is gone once slurmctld forgot the job, so this text is built from the sacct record
instead, with scontrol's key names.
"""

from __future__ import annotations

import time

from actors.slurm_views import SacctJob, int_value

#: Minutes whose "YYYY-MM-DDTHH:MM:" prefix is kept (one per distinct minute of the window).
MINUTES_CACHE_MAX = 16384

_MINUTES: dict[int, str] = {}


def timestamp(seconds: int | None) -> str:
    """UTC in scontrol's layout plus a Z. strftime per job is too slow: the text up to the
    minute is cached."""
    if seconds is None or seconds <= 0:
        return "Unknown"
    minute, second = divmod(seconds, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        try:
            prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        except (OverflowError, OSError, ValueError):
            return str(seconds)
        if len(_MINUTES) >= MINUTES_CACHE_MAX:
            _MINUTES.clear()
        _MINUTES[minute] = prefix
    return f"{prefix}{second:02d}Z"


def slurm_info(job: SacctJob, job_id, name, user, account, partition, state, exit_code, submit, start,
               end, limit, nodes, num_nodes, num_cpus, tres_text) -> str:
    """The text; the arguments are the values the mapping already normalised."""
    qos = job.qos if type(job.qos) is str else ""
    info = (
        f"JobId={job_id} JobName={name}\n"
        f"UserId={user} Account={account} QOS={qos}\n"
        f"JobState={state} ExitCode={exit_code or 'N/A'}\n"
        f"SubmitTime={timestamp(submit)} StartTime={timestamp(start)} EndTime={timestamp(end)}\n"
        f"Partition={partition} TimeLimit={'UNLIMITED' if limit is None else limit} "
        f"NodeList={nodes} NumNodes={num_nodes} NumCPUs={num_cpus}\n"
        f"TRES={tres_text}"
    )
    array = job.array
    if array is not None:
        array_id = int_value(array.job_id)
        if array_id:
            task = int_value(array.task_id)
            info += f"\nArrayJobId={array_id} ArrayTaskId={'N/A' if task is None else task}"
    het = job.het
    if het is not None:
        het_id = int_value(het.job_id)
        if het_id is not None and het_id > 0:  # a component of a heterogeneous job: its own job id, sent as its own job
            offset = int_value(het.job_offset)
            info += f"\nHetJobId={het_id} HetJobOffset={'N/A' if offset is None else offset}"
    workdir = job.working_directory
    if type(workdir) is str and workdir:
        info += f"\nWorkDir={workdir}"
    comment = job.comment.job if job.comment is not None else None
    if type(comment) is str and comment:
        info += f"\nComment={comment}"
    return info
