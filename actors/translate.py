"""Slurm job records -> cc-backend start/stop bodies. Pure functions: no sockets, no files.

Mapping: cc-slurm-adapter-spec.md §3, with the fixes of §13 and of the translator issue:
hardware-thread ids through cc-backend's topology, GPUs from GRES indices via gpuPciAddrs (first
matching regex in config order) or the topology, a comment only when it is a list of PCI
addresses, ignoreHosts per host, every stop state inside cc-backend v1.5's enum, stop bodies with
startTime, exit codes that are right on 22.05, and never a body the server would reject (such a
job is quarantined with the JSON path that made it so).

Two entry points:
* `translate_record(sacct_raw, live_raw, job_script, ctx)` for one record from a SlurmJobRecord;
* `translate_documents(sacct_doc, live_doc, ctx)`: whole `sacct --json` (and `squeue`/`scontrol
  --json`) documents, decoded in one pass; only when that pass fails is the document split into
  one Raw per job to set the odd job aside and let the others through.
"""

from __future__ import annotations

import gc
import re
import time
from collections.abc import Iterator

import msgspec

from actors.cc_bodies import INT32_MAX, INT64_MAX, JobMeta, Resource, StartJob, StopJob
from actors.errors import SlurmError
from actors.slurm_views import (
    NO_VAL32, LIVE_DOCUMENT, LIVE_JOB, LIVE_RAW_DOCUMENT, SACCT_DOCUMENT, SACCT_JOB, SACCT_RAW_DOCUMENT,
    TRES_LIST, LiveExit, LiveJob, SacctJob, expand_hostlist, first_str, int_value,
)
from actors.topology import HostTopology, Topology

#: Slurm state -> cc-backend v1.5 JobState for a finished run. The last block are Slurm states
#: outside cc-backend's enum, mapped to the closest valid one (metaData.slurmState keeps the word).
STOP_STATES = {
    "COMPLETED": "completed", "CANCELLED": "cancelled", "FAILED": "failed", "TIMEOUT": "timeout",
    "PREEMPTED": "preempted", "OUT_OF_MEMORY": "out_of_memory", "NODE_FAIL": "node_fail",
    "BOOT_FAIL": "boot_fail", "DEADLINE": "deadline",
    "REQUEUED": "preempted", "REQUEUE_FED": "preempted", "REQUEUE_HOLD": "preempted",
    "RESIZING": "completed", "REVOKED": "cancelled", "SPECIAL_EXIT": "failed",
}
#: States of a job that has not finished; anything else with an end time is treated as finished.
UNFINISHED_STATES = frozenset((
    "PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING", "STOPPED", "SIGNALING",
    "STAGE_OUT", "RESV_DEL_HOLD", "POWER_UP_NODE", "UPDATE_DB", "",
))
#: A finished state that is neither in STOP_STATES nor unfinished maps to this.
FALLBACK_STOP_STATE = "failed"

#: The record sacct shows for 1-5 s after a start, before the real one (fixtures README).
PLACEHOLDER_NAME = "allocation"

_GRES_GPU = re.compile(r"(?:^|,)gpu(?::[^:(),]+)?(?::\d+)?(?:\(S:[^)]*\))?\(IDX:([0-9,\-]+)\)")
_PCI_ADDRESS = re.compile(r"[0-9A-Fa-f]{1,8}:[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}\.[0-7]")
_CACHE_MAX = 16384
#: Jobs translated per stretch with the cyclic GC paused (translate_documents).
GC_PAUSE_JOBS = 2048


class Translation(msgspec.Struct, gc=False):
    """What one Slurm record asks of cc-backend. Exactly one of: a start (and, for a finished
    run, a stop), a skip_reason (nothing to send, yet or ever), or a quarantine (json_path, error)."""

    start: StartJob | None = None
    stop: StopJob | None = None
    skip_reason: str = ""
    quarantine: tuple[str, str] | None = None
    warning: str = ""  #: e.g. a live record that could not be used; the job still flows


class TranslateContext:
    """What the mapping needs beyond the records, plus per-host caches."""

    __slots__ = ("topology", "gpu_pci_addrs", "ignore_hosts", "_hosts", "_resources", "tres_cache")

    def __init__(self, topology: Topology | None = None,
                 gpu_pci_addrs: list[tuple[re.Pattern, list[str]]] | None = None,
                 ignore_hosts: re.Pattern | None = None):
        self.topology = topology
        self.gpu_pci_addrs = list(gpu_pci_addrs or ())
        self.ignore_hosts = ignore_hosts
        self._hosts: dict[tuple[str, str], tuple[bool, list[str] | None, HostTopology | None]] = {}
        self._resources: dict[tuple[str, str], list[Resource]] = {}
        #: allocated TRES bytes -> (cpus, gpus, text): jobs of one shape share the answer
        self.tres_cache: dict[bytes, tuple[int | None, int | None, str]] = {}

    @classmethod
    def from_config(cls, config, topology: Topology | None = None) -> TranslateContext:
        """From actors.config.Config: gpuPciAddrs in file order, ignoreHosts compiled."""
        pci = [(re.compile(pattern), list(ids)) for pattern, ids in config.gpu_pci_addrs.items()]
        ignore = re.compile(config.ignore_hosts) if config.ignore_hosts else None
        return cls(topology, pci, ignore)

    def host(self, cluster: str, hostname: str) -> tuple[bool, list[str] | None, HostTopology | None]:
        """(ignored, PCI ids from the first matching gpuPciAddrs regex, topology) for a host."""
        key = (cluster, hostname)
        found = self._hosts.get(key)
        if found is None:
            ignored = self.ignore_hosts is not None and self.ignore_hosts.search(hostname) is not None
            pci = next((ids for pattern, ids in self.gpu_pci_addrs if pattern.search(hostname)), None)
            topo = self.topology.lookup(cluster, hostname) if self.topology is not None else None
            found = (ignored, pci, topo)
            if len(self._hosts) >= _CACHE_MAX:
                self._hosts.clear()
            self._hosts[key] = found
        return found

    def plain_resources(self, cluster: str, nodes: str) -> list[Resource]:
        """Resources for a sacct `nodes` hostlist (no per-node detail), ignored hosts dropped."""
        key = (cluster, nodes)
        found = self._resources.get(key)
        if found is None:
            found = [Resource(hostname=h) for h in expand_hostlist(nodes) if not self.host(cluster, h)[0]]
            if len(self._resources) >= _CACHE_MAX:
                self._resources.clear()
            self._resources[key] = found
        return list(found)


class _Quarantine(Exception):
    def __init__(self, path: str, error: str):
        super().__init__(path, error)
        self.path, self.error = path, error


# ------------------------------------------------------------------------------ entry points

def translate_record(sacct_raw: bytes, live_raw: bytes | None, job_script: str | None,
                     ctx: TranslateContext) -> Translation:
    """One sacct jobs[] element (+ the same job from squeue/scontrol, or None/b"null")."""
    try:
        job, warning = _decode_one(SACCT_JOB, sacct_raw)
    except msgspec.DecodeError as e:
        return Translation(quarantine=_decode_error("$", e))
    live = None
    if live_raw is not None and bytes(live_raw).strip() not in (b"", b"null"):
        try:
            live, _ = _decode_one(LIVE_JOB, live_raw)
        except msgspec.DecodeError as e:
            path, error = _decode_error("$", e)
            warning = f"live record ignored: {error} at {path}"
        else:
            if live.job_id != job.job_id:
                live, warning = None, f"live record ignored: it is job {live.job_id}, not {job.job_id}"
    result = translate_job(job, live, job_script, ctx)
    if warning and not result.warning:
        result.warning = warning
    return result


def translate_documents(sacct_doc: bytes, live_doc: bytes | list[bytes] | None,
                        ctx: TranslateContext) -> Iterator[tuple[int | None, str, Translation]]:
    """Every job of a `sacct --json` document, matched with `squeue`/`scontrol --json` records
    by job id (`live_doc` may be several documents; the first record of a job id wins). Yields
    (job_id, cluster, Translation); job_id is None only for a record so broken that it has no
    integer job_id. Raises SlurmError when a document is not Slurm JSON at all."""
    live: dict[int, LiveJob] = {}
    for doc in ([live_doc] if isinstance(live_doc, (bytes, bytearray, memoryview)) else live_doc or ()):
        for job_id, record in _live_index(doc).items():
            live.setdefault(job_id, record)
    try:
        jobs = _decode_without_gc(SACCT_DOCUMENT, sacct_doc).jobs
    except (msgspec.DecodeError, UnicodeDecodeError):
        yield from _translate_one_by_one(sacct_doc, live, ctx)
        return
    get = live.get
    for first in range(0, len(jobs), GC_PAUSE_JOBS):
        # The mapping makes no cycles; with the collector paused it does not walk the decoded
        # document over and over. Paused only inside this loop, never across a yield.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            chunk = [(job.job_id, job.cluster or "", translate_job(job, get(job.job_id), None, ctx))
                     for job in jobs[first:first + GC_PAUSE_JOBS]]
        finally:
            if was_enabled:
                gc.enable()
        yield from chunk


def _decode_without_gc(decoder: msgspec.json.Decoder, document: bytes):
    """Decode with the cyclic GC paused: the views hold no cycles, and a full collection in the
    middle of a 50 000-job document costs a quarter of the decode time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return decoder.decode(document)
    finally:
        if was_enabled:
            gc.enable()


def _decode_one(decoder: msgspec.json.Decoder, raw) -> tuple:
    """(view, warning). Invalid UTF-8 (a latin-1 job name from the DB, say) and lone UTF-16
    surrogate escapes are replaced by U+FFFD, as cc-backend itself does with bad UTF-8, instead
    of costing the job."""
    try:
        return decoder.decode(raw), ""
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        repaired = _repair_text(raw)
        if repaired == raw:
            raise msgspec.DecodeError(str(e)) from None
        return decoder.decode(repaired), "invalid UTF-8 or lone surrogate replaced by U+FFFD"


_LONE_SURROGATE = re.compile(
    rb"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})(?<!\\)\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _repair_text(raw) -> bytes:
    data = bytes(raw).decode("utf-8", "replace").encode("utf-8")
    return _LONE_SURROGATE.sub(rb"\\ufffd", data)


def _translate_one_by_one(sacct_doc: bytes, live: dict[int, LiveJob], ctx: TranslateContext):
    """The slow path: one Raw per job, so the job that does not decode is the only one lost."""
    try:
        raws = _decode_one(SACCT_RAW_DOCUMENT, sacct_doc)[0].jobs
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise SlurmError(f"not a sacct --json document: {e}") from None
    for i, raw in enumerate(raws):
        try:
            job, warning = _decode_one(SACCT_JOB, raw)
        except msgspec.DecodeError as e:
            job_id, cluster = _identity(raw)
            yield job_id, cluster, Translation(quarantine=_decode_error(f"$.jobs[{i}]", e))
            continue
        result = translate_job(job, live.get(job.job_id), None, ctx)
        if warning and not result.warning:
            result.warning = warning
        yield job.job_id, job.cluster or "", result


def _live_index(live_doc: bytes) -> dict[int, LiveJob]:
    """Live records by job id; a live record that does not decode is left out (sacct is the
    primary record, the job still flows without per-node detail)."""
    try:
        jobs = _decode_without_gc(LIVE_DOCUMENT, live_doc).jobs
    except (msgspec.DecodeError, UnicodeDecodeError):
        try:
            raws = _decode_one(LIVE_RAW_DOCUMENT, live_doc)[0].jobs
        except (msgspec.DecodeError, UnicodeDecodeError) as e:
            raise SlurmError(f"not a squeue/scontrol --json document: {e}") from None
        jobs = []
        for raw in raws:
            try:
                jobs.append(_decode_one(LIVE_JOB, raw)[0])
            except msgspec.DecodeError:
                continue
    index: dict[int, LiveJob] = {}
    for job in jobs:
        index.setdefault(job.job_id, job)
    return index


def _identity(raw: msgspec.Raw) -> tuple[int | None, str]:
    """Job id and cluster of a record that does not decode through the view, if they can be read."""
    try:
        record = msgspec.json.decode(_repair_text(raw))
    except msgspec.DecodeError:
        return None, ""
    if not isinstance(record, dict):
        return None, ""
    job_id, cluster = record.get("job_id"), record.get("cluster")
    return (job_id if type(job_id) is int else None), (cluster if type(cluster) is str else "")


def _decode_error(prefix: str, error: msgspec.DecodeError) -> tuple[str, str]:
    """msgspec says "Expected `int`, got `str` - at `$.time.start`": split into path and text."""
    message = str(error)
    what, sep, where = message.rpartition(" - at `")
    if sep and where.endswith("`") and where.startswith("$"):
        return prefix + where[1:-1], what
    return prefix, message


# ----------------------------------------------------------------------------------- mapping

def translate_job(job: SacctJob, live: LiveJob | None, job_script: str | None,
                  ctx: TranslateContext) -> Translation:
    """The decoded views -> Translation; never raises."""
    try:
        return _translate(job, live, job_script, ctx)
    except _Quarantine as q:
        return Translation(quarantine=(q.path, q.error))
    except Exception as e:  # a bug must cost one job, not the batch
        return Translation(quarantine=("$", f"translator error: {type(e).__name__}: {e}"))


def _translate(job: SacctJob, live: LiveJob | None, job_script: str | None,
               ctx: TranslateContext) -> Translation:
    job_id = job.job_id
    if not 0 < job_id <= INT64_MAX:
        raise _Quarantine("$.job_id", f"job id {job_id} is outside 1..2^63-1")
    times = job.time
    if times is None:
        start = end = submit = limit = None
    else:  # plain ints on every release at this level: test for them inline, it is the hot path
        start, end, submit, limit = times.start, times.end, times.submission, times.limit
        if type(start) is not int or start >= NO_VAL32:
            start = int_value(start)
        if type(end) is not int or end >= NO_VAL32:
            end = int_value(end)
        if type(submit) is not int or submit >= NO_VAL32:
            submit = int_value(submit)
        if limit is not None:
            limit = int_value(limit)
    state_view = job.state
    state = first_str(state_view.current) if state_view is not None else ""
    if state not in STOP_STATES and state not in UNFINISHED_STATES:
        state = state.upper()
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
        raise _Quarantine("$.cluster", "cluster is empty: cc-backend cannot place the job")
    user = job.user or ""
    if not user:
        raise _Quarantine("$.user", "user is empty: cc-backend rejects a start without a user")

    if live is not None:
        live_start = int_value(live.start_time)
        if live_start and live_start != start:
            live = None  # another run of the same job id (requeue): its nodes are not this run's
    resources = _live_resources(live, cluster, ctx) if live is not None else None
    if resources is None:
        try:
            resources = ctx.plain_resources(cluster, nodes)
        except ValueError as e:
            raise _Quarantine("$.nodes", f"hostlist {nodes!r} does not expand: {e}") from None
        if not resources:
            if not nodes or nodes.lower() == "none assigned":
                raise _Quarantine("$.nodes", f"no hosts although the job started ({state})")
            return Translation(skip_reason="all hosts ignored (ignoreHosts)")
    elif not resources:
        return Translation(skip_reason="all hosts ignored (ignoreHosts)")

    num_hwthreads, num_acc, tres_text = _tres(job, ctx)
    if num_hwthreads > INT32_MAX:
        raise _Quarantine("$.tres", f"numHwthreads {num_hwthreads} does not fit cc-backend's int32")
    if num_acc > INT32_MAX:
        raise _Quarantine("$.tres", f"numAcc {num_acc} does not fit cc-backend's int32")
    walltime = limit * 60 if limit is not None and limit > 0 else 0
    if walltime > INT64_MAX:
        walltime = 0
    array_job_id = int_value(job.array.job_id) if job.array is not None else None
    if array_job_id is None or array_job_id < 0:
        array_job_id = 0

    finished = end is not None and end > 0 and state not in UNFINISHED_STATES
    stop = None
    exit_code = ""
    if finished:
        stop = StopJob(job_id=job_id, cluster=cluster, start_time=start,
                       job_state=STOP_STATES.get(state, FALLBACK_STOP_STATE),
                       stop_time=end if end >= start else start)
        exit_code = _exit_code(job, live, state)

    account = job.account or ""
    script = job_script or job.script or ""
    info = _slurm_info(job, job_id, name, user, account, partition, state, exit_code, submit,
                       start, end if finished else None, limit, nodes, len(resources),
                       num_hwthreads, tres_text)
    meta = JobMeta(job_name=name, submit_time=str(submit) if submit is not None else "",
                   slurm_info=info, job_script=script, slurm_state=state, exit_code=exit_code)
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
            if len(ctx.tres_cache) >= _CACHE_MAX:
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


def _live_resources(live: LiveJob, cluster: str, ctx: TranslateContext) -> list[Resource] | None:
    """One resource per allocated node of job_resources (either shape), ignored hosts dropped;
    None when the live record has no node detail."""
    res = live.job_resources
    if res is None:
        return None
    gres = live.gres_detail or ()
    comment_ids = _pci_comment(live.comment)
    resources = []
    nodes = res.nodes
    if type(nodes) is not str and nodes is not None and nodes.allocation:
        for position, node in enumerate(nodes.allocation):
            hostname = node.name if type(node.name) is str else ""
            if not hostname:
                continue
            ignored, pci, topo = ctx.host(cluster, hostname)
            if ignored:
                continue
            index = int_value(node.index)
            index = position if index is None else index
            cores = []  # (socket, core) of allocated cores
            per_socket = 0
            for socket in node.sockets or ():
                socket_index = int_value(socket.index) or 0
                core_list = socket.cores or ()
                if not per_socket:
                    per_socket = len(core_list)
                for core in core_list:
                    status = core.status
                    if status == "ALLOCATED" or (type(status) is list and "ALLOCATED" in status):
                        cores.append((socket_index, int_value(core.index) or 0))
            resources.append(_resource(hostname, cores, per_socket, topo, pci, gres, index, comment_ids))
        return resources
    if res.allocated_nodes:
        for position, node in enumerate(res.allocated_nodes):
            hostname = node.nodename if type(node.nodename) is str else ""
            if not hostname:
                continue
            ignored, pci, topo = ctx.host(cluster, hostname)
            if ignored:
                continue
            cores = []
            sockets = node.sockets or {}
            for socket_key, socket in sockets.items():
                socket_index = int_value(socket_key)
                if socket_index is None:
                    continue
                for core_key in (socket.cores or {}):
                    core_index = int_value(core_key)
                    if core_index is not None:
                        cores.append((socket_index, core_index))
            # Shape 1 lists only allocated cores: Slurm's cores per socket is unknown, which
            # matters only past socket 0.
            per_socket = 0 if any(s for s, _ in cores) else 1
            resources.append(_resource(hostname, cores, per_socket, topo, pci, gres, position, comment_ids))
        return resources
    return None


def _resource(hostname, cores, slurm_per_socket, topo, pci, gres, index, comment_ids) -> Resource:
    hwthreads = None
    if cores:
        if topo is not None and topo.core_hwthreads:
            per_socket = topo.cores_per_socket
            table = topo.core_hwthreads
            hwthreads = []
            for socket, core in sorted(cores):
                abstract = socket * per_socket + core
                if 0 <= abstract < len(table):
                    hwthreads.extend(table[abstract])
            hwthreads = hwthreads or None
        elif slurm_per_socket:
            hwthreads = sorted(socket * slurm_per_socket + core for socket, core in cores)
    accelerators = None
    if 0 <= index < len(gres):
        detail = gres[index]
        if type(detail) is str and "IDX:" in detail:
            indices = _gres_indices(detail)
            if indices:
                ids = pci if pci is not None else (topo.accelerator_ids if topo is not None else ())
                accelerators = [ids[i] for i in indices if i < len(ids)] or None
    if accelerators is None and comment_ids:
        accelerators = list(comment_ids)
    return Resource(hostname=hostname, hwthreads=hwthreads, accelerators=accelerators)


def _gres_indices(detail: str) -> list[int]:
    """`gpu:a100:2(IDX:0-1)` / `gpu:4(IDX:0,2-3)` / several GRES -> the GPU indices, in order."""
    indices: list[int] = []
    for match in _GRES_GPU.finditer(detail):
        for part in match.group(1).split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                continue
            first, last = int(low), int(high) if dash else int(low)
            if last - first > 1024:
                continue
            indices.extend(range(first, last + 1))
    return list(dict.fromkeys(indices))


def _pci_comment(comment) -> tuple[str, ...]:
    """The legacy NHR@FAU comment with GPU PCI ids; any other comment is free text, not GPUs."""
    if type(comment) is not str or ":" not in comment:
        return ()
    parts = [part.strip() for part in comment.split(",")]
    if all(_PCI_ADDRESS.fullmatch(part) for part in parts):
        return tuple(parts)
    return ()


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


def _exit_code(job: SacctJob, live: LiveJob | None, state: str) -> str:
    """ExitCode as sacct's text shows it ("exit:signal").

    sacct's JSON is right from v0.0.40 on (status is a list). On 22.05 and v0.0.39 (status is a
    string) signals are reported right but every normal exit reads SUCCESS/0: the exit number
    then comes from the live record's raw wait status (status >> 8) when it shows a normal exit,
    else from the state (FAILED -> "1:0", anything else "0:0")."""
    code = job.exit_code
    if code is None:
        return _state_exit(state)
    if type(code.status) is list:
        return _verbose_exit(code.status, code.return_code, code.signal) or _state_exit(state)
    word = code.status or ""
    if word == "SIGNALED" or word == "CORE_DUMPED":
        return _verbose_exit(word, None, code.signal) or _state_exit(state)
    if word == "SUCCESS" and live is not None and first_str(live.job_state).upper() not in UNFINISHED_STATES:
        raw = live.exit_code
        if type(raw) is LiveExit:
            if raw.status is not None:  # obj B in the live record
                return _verbose_exit(raw.status, raw.return_code, raw.signal) or _state_exit(state)
            raw = raw.number if raw.set and not raw.infinite else None
        status = int_value(raw)
        # A signal here contradicts sacct's "exited normally": keep sacct's word for it.
        if status is not None and 0 <= status <= 0xFFFF and not status & 0x7F:
            return f"{status >> 8}:0"
    return _state_exit(state)


def _state_exit(state: str) -> str:
    return "1:0" if state == "FAILED" else "0:0"


def _verbose_exit(status, return_code, signal) -> str:
    word = first_str(status)
    if word == "SUCCESS":
        return "0:0"
    if word == "ERROR":
        number = int_value(return_code)
        return f"{number}:0" if number is not None else ""
    if word in ("SIGNALED", "CORE_DUMPED") and signal is not None:
        number = int_value(signal.id)
        if number is None:
            number = int_value(signal.signal_id)
        return f"0:{number}" if number is not None else ""
    return ""


# ------------------------------------------------------------------------------- slurmInfo

_MINUTES: dict[int, str] = {}


def _timestamp(seconds: int | None) -> str:
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
        if len(_MINUTES) >= _CACHE_MAX:
            _MINUTES.clear()
        _MINUTES[minute] = prefix
    return f"{prefix}{second:02d}Z"


def _slurm_info(job, job_id, name, user, account, partition, state, exit_code, submit, start,
                end, limit, nodes, num_nodes, num_cpus, tres_text) -> str:
    """A short `scontrol show job`-like text from the records we have (no extra Slurm call)."""
    qos = job.qos if type(job.qos) is str else ""
    info = (
        f"JobId={job_id} JobName={name}\n"
        f"UserId={user} Account={account} QOS={qos}\n"
        f"JobState={state} ExitCode={exit_code or 'N/A'}\n"
        f"SubmitTime={_timestamp(submit)} StartTime={_timestamp(start)} EndTime={_timestamp(end)}\n"
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
    workdir = job.working_directory
    if type(workdir) is str and workdir:
        info += f"\nWorkDir={workdir}"
    comment = job.comment.job if job.comment is not None else None
    if type(comment) is str and comment:
        info += f"\nComment={comment}"
    return info
