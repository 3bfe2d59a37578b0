"""One decoded Slurm job -> what cc-backend gets: a start (and a stop for a finished run), nothing
(yet or ever), or a quarantine with the JSON path that made it impossible.

The mapping of cc-slurm-adapter-spec.md §3 with the fixes of §13 and of the translator issue:
never-started, pending and placeholder records send nothing; a body the server would reject
(contract §5.2: no user, no host, counts beyond int32) is quarantined instead of sent; stops
carry startTime. Its parts live beside it: translate_states (jobState, exit code),
translate_resources (hosts, hardware threads, GPUs), translate_info (slurmInfo text),
translate_placeholder (an ended placeholder record completed from the live record).
Heterogeneous jobs need no rule of their own: sacct reports each component as a record with its
own job_id, which goes to cc-backend as its own job, as the original does (spec §4.8); slurmInfo
names the het job and the offset.
"""

from __future__ import annotations

import msgspec

from actors.cc_bodies import INT32_MAX, INT64_MAX, JobMeta, StartJob, StopJob
from actors.slurm_live_views import LiveJob
from actors.slurm_views import NO_VAL32, TRES_LIST, SacctJob, first_str, int_value
from actors.translate_context import CACHE_MAX, TranslateContext
from actors.translate_info import slurm_info
from actors.translate_placeholder import PLACEHOLDER_NAME, completed_from_live, is_placeholder
from actors.translate_resources import live_resources
from actors.translate_states import UNFINISHED_STATES, exit_code, slurm_state, stop_state

class Translation(msgspec.Struct, gc=False):
    """What one Slurm record asks of cc-backend. Exactly one of: a start (and, for a finished
    run, a stop), a skip_reason (nothing to send, yet or ever), or a quarantine (json_path, error)."""

    start: StartJob | None = None
    stop: StopJob | None = None
    skip_reason: str = ""
    quarantine: tuple[str, str] | None = None
    warning: str = ""  #: e.g. a live record that could not be used; the job still flows


class Quarantine(Exception):
    """The job cannot be sent: `path` is the JSON path of the value that makes it so."""

    def __init__(self, path: str, error: str):
        super().__init__(path, error)
        self.path, self.error = path, error


def translate_job(job: SacctJob, live: LiveJob | None, job_script: str | None,
                  ctx: TranslateContext) -> Translation:
    """The decoded views -> Translation; never raises."""
    try:
        return _translate(job, live, job_script, ctx)
    except Quarantine as q:
        return Translation(quarantine=(q.path, q.error))
    except Exception as e:  # a bug must cost one job, not the batch
        return Translation(quarantine=("$", f"translator error: {type(e).__name__}: {e}"))


def _translate(job: SacctJob, live: LiveJob | None, job_script: str | None,
               ctx: TranslateContext) -> Translation:
    if job.name == PLACEHOLDER_NAME and is_placeholder(job):
        job = completed_from_live(job, live) or job  # a finished job slurmdbd has no full record of yet
    job_id = job.job_id
    if not 0 < job_id <= INT64_MAX:
        raise Quarantine("$.job_id", f"job id {job_id} is outside 1..2^63-1")
    times = job.time
    if times is None:  # sacct always has it: without it the job would pass for never started
        raise Quarantine("$.time", "no time record: when the job started and ended is unknown")
    else:  # plain ints on every release at this level: test for them inline, it is the hot path
        start, end, submit, limit = times.start, times.end, times.submission, times.limit
        if type(start) is not int or start >= NO_VAL32:
            start = int_value(start)
            if start is None and type(times.start) in (str, float):  # not Slurm's null or NO_VAL: garbage
                raise Quarantine("$.time.start", f"start time {str(times.start)[:40]!r} is not a usable number")
        if type(end) is not int or end >= NO_VAL32:
            end = int_value(end)
            if end is None and type(times.end) in (str, float):  # else the job would pass for running, for good
                raise Quarantine("$.time.end", f"end time {str(times.end)[:40]!r} is not a usable number")
        if type(submit) is not int or submit >= NO_VAL32:
            submit = int_value(submit)
        if limit is not None:
            limit = int_value(limit)
    state = slurm_state(job.state)
    if not state:  # sacct always has one: without it a job that ended would pass for running, for good
        raise Quarantine("$.state", "no state: whether the job ended is unknown")
    name = job.name or ""
    partition = job.partition or ""
    allocation_nodes = job.allocation_nodes
    if type(allocation_nodes) is not int:
        allocation_nodes = int_value(allocation_nodes)

    if name == PLACEHOLDER_NAME and not partition and not allocation_nodes:
        return Translation(skip_reason="placeholder record (sacct's first seconds after a start)")
    if state == "PENDING":
        array = job.array
        if array is not None and int_value(array.job_id) and int_value(array.task_id) is None:
            return Translation(skip_reason="pending array (tasks not started)")
        return Translation(skip_reason="pending")
    if start is None or start <= 0:
        return Translation(skip_reason="never started")
    nodes = job.nodes or ""
    if not allocation_nodes and (not nodes or nodes.lower() == "none assigned"):
        return Translation(skip_reason="never started")  # 22.05: start = end, "None assigned"

    cluster = job.cluster or ""
    if not cluster:
        raise Quarantine("$.cluster", "cluster is empty: cc-backend cannot place the job")
    user = job.user or ""
    if not user:
        raise Quarantine("$.user", "user is empty: cc-backend rejects a start without a user")

    if live is not None:
        live_start = int_value(live.start_time)
        if live_start and live_start != start:
            live = None  # another run of the same job id (requeue): its nodes are not this run's
    resources = live_resources(live, cluster, ctx) if live is not None else None
    if resources is None:
        try:
            resources = ctx.plain_resources(cluster, nodes)
        except ValueError as e:
            raise Quarantine("$.nodes", f"hostlist {nodes!r} does not expand: {e}") from None
        if not resources:
            if not nodes or nodes.lower() == "none assigned":
                raise Quarantine("$.nodes", f"no hosts although the job started ({state})")
            return Translation(skip_reason="all hosts ignored (ignoreHosts)")
    elif not resources:
        return Translation(skip_reason="all hosts ignored (ignoreHosts)")

    num_hwthreads, num_acc, tres_text = _tres(job, ctx)
    if num_hwthreads > INT32_MAX:
        raise Quarantine("$.tres", f"numHwthreads {num_hwthreads} does not fit cc-backend's int32")
    if num_acc > INT32_MAX:
        raise Quarantine("$.tres", f"numAcc {num_acc} does not fit cc-backend's int32")
    walltime = limit * 60 if limit is not None and limit > 0 else 0
    if walltime > INT64_MAX:
        walltime = 0
    array_job_id = int_value(job.array.job_id) if job.array is not None else None
    if array_job_id is None or array_job_id < 0:
        array_job_id = 0

    finished = end is not None and end > 0 and state not in UNFINISHED_STATES
    stop = None
    exit_text = ""
    if finished:
        stop = StopJob(job_id=job_id, cluster=cluster, start_time=start, job_state=stop_state(state),
                       stop_time=end if end >= start else start)
        exit_text = exit_code(job, live, state)

    account = job.account or ""
    script = job_script or job.script or ""
    info = slurm_info(job, job_id, name, user, account, partition, state, exit_text, submit,
                      start, end if finished else None, limit, nodes, len(resources),
                      num_hwthreads, tres_text)
    meta = JobMeta(job_name=name, submit_time=str(submit) if submit is not None else "",
                   slurm_info=info, job_script=script, slurm_state=state, exit_code=exit_text)
    body = StartJob(job_id=job_id, user=user, project=account, cluster=cluster, sub_cluster="",
                    partition=partition, shared=_shared(job, live), num_nodes=len(resources),
                    num_hwthreads=num_hwthreads, num_acc=num_acc, walltime=walltime,
                    array_job_id=array_job_id, start_time=start, resources=resources,
                    meta_data=meta)
    return Translation(start=body, stop=stop)


def _tres(job: SacctJob, ctx: TranslateContext) -> tuple[int, int, str]:
    """(numHwthreads, numAcc, TRES text) from the TRES lists.

    Spec §3.2 with "allocated wins" taken as a whole: when the allocated list has a cpu entry
    (the job ran) it decides both counts, an absent gres/gpu there meaning 0 GPUs; otherwise
    the requested list, and for the CPUs finally required.CPUs. Counts are the first untyped
    `cpu` and `gres`/`gpu` entries; negative counts (NO_VAL64 as -2) read as 0. A TRES list
    that does not decode counts as absent."""
    tres = job.tres
    if tres is None:
        hwthreads = acc = None
        text = ""
    else:
        key = bytes(tres.allocated)
        found = ctx.tres_cache.get(key)
        if found is None:
            found = _allocated_tres(_tres_list(tres.allocated))
            if len(ctx.tres_cache) >= CACHE_MAX:
                ctx.tres_cache.clear()
            ctx.tres_cache[key] = found
        hwthreads, acc, text = found
    if hwthreads is None:
        acc = None
        for entry in _tres_list(tres.requested) if tres is not None else ():
            count = int_value(entry.count)
            if count is None:
                continue
            if entry.type == "cpu" and hwthreads is None:
                hwthreads = count
            elif entry.type == "gres" and entry.name == "gpu" and acc is None:
                acc = count
        if hwthreads is None and job.required is not None:
            hwthreads = int_value(job.required.CPUs)
    hwthreads = hwthreads if hwthreads is not None and hwthreads > 0 else 0
    acc = acc if acc is not None and acc > 0 else 0
    return hwthreads, acc, text


def _allocated_tres(entries) -> tuple[int | None, int | None, str]:
    hwthreads = acc = None
    parts = []
    for entry in entries:
        kind = entry.type
        count = int_value(entry.count)
        if count is None or count < 0 or kind is None:
            continue
        name = entry.name
        if kind == "cpu":
            if hwthreads is None:
                hwthreads = count
            parts.append(f"cpu={count}")
        elif kind == "mem":
            parts.append(f"mem={count}M")
        elif name:
            if acc is None and kind == "gres" and name == "gpu":
                acc = count
            parts.append(f"{kind}/{name}={count}")
        else:
            parts.append(f"{kind}={count}")
    return hwthreads, acc, ",".join(parts)


def _tres_list(raw) -> list:
    try:
        return TRES_LIST.decode(raw) or []
    except (msgspec.DecodeError, UnicodeDecodeError):
        return []


def _shared(job: SacctJob, live: LiveJob | None) -> str:
    """spec table 3.3 on the live record; 26.05's squeue has no shared/exclusive any more, so
    sacct's v0.0.45 `exclusive` string decides there."""
    if live is not None:
        exclusive = live.exclusive
        if exclusive is True:
            return "none"
        if exclusive is not None and exclusive is not False:
            word = first_str(exclusive).lower()
            if word == "true":
                return "none"
            if word == "user":
                return "single_user"
        shared = first_str(live.shared).lower()
        if shared == "user":
            return "single_user"
        if shared == "none":
            return "none"
        if shared:
            return "multi_user"
    exclusive = (job.exclusive or "").upper() if type(job.exclusive) is str else ""
    if exclusive in ("YES", "TRUE", "EXCLUSIVE", "TOPO"):
        return "none"
    if exclusive == "USER":
        return "single_user"
    return "multi_user"
