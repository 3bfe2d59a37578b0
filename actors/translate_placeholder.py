"""A finished job still shown by sacct as its placeholder, completed from slurmctld's live record.

slurmctld sends the start record of a job that started within seconds of its submission to
slurmdbd only on its next 5-second pass, so for up to ~5 s sacct shows such a job as a placeholder
(name "allocation", no partition), even after its end. Compared on the bench (22.05, the same job
read as a placeholder and, a second later, in full; tests/golden/placeholder-22.05/) the
placeholder lacks exactly: name, partition, qos, time.limit (0 instead of the limit), nodes (the
first host only), allocation_nodes (0), working_directory (""), required (0) and tres.requested
([]), plus fields we do not read (flags, priority, time.eligible). Its times, state, exit code and
allocated TRES are already the real ones. slurmctld's record of the job (squeue/scontrol --json)
has every one of those fields, so the job need not wait for slurmdbd: the bodies come out exactly
as from the full record.

Only a finished placeholder is completed: a running one says PENDING (not its state), and its start
goes out from the full record a few seconds later anyway.
"""

from __future__ import annotations

import msgspec

from actors.slurm_live_views import LiveJob
from actors.slurm_views import SacctJob, SacctRequired, int_value
from actors.translate_states import UNFINISHED_STATES, slurm_state

#: The record sacct shows for 1-5 s after a start, before the real one (fixtures README).
PLACEHOLDER_NAME = "allocation"


def is_placeholder(job: SacctJob) -> bool:
    return job.name == PLACEHOLDER_NAME and not job.partition and not int_value(job.allocation_nodes)


def completed_from_live(job: SacctJob, live: LiveJob | None) -> SacctJob | None:
    """The placeholder `job` with the fields it lacks taken from `live`; None when `live` cannot
    give them (absent, itself without a name or partition, another run of the job id) or the job
    has not finished."""
    if live is None or not live.name or not live.partition or job.time is None:
        return None
    start = int_value(job.time.start)
    if not start or int_value(live.start_time) != start:
        return None
    if not int_value(job.time.end) or slurm_state(job.state) in UNFINISHED_STATES:
        return None
    required = job.required
    if live.cpus is not None:
        required = SacctRequired(CPUs=live.cpus)
    return msgspec.structs.replace(
        job, name=live.name, partition=live.partition, qos=live.qos, nodes=live.nodes,
        allocation_nodes=live.node_count, working_directory=live.current_working_directory,
        required=required, time=msgspec.structs.replace(job.time, limit=live.time_limit))
