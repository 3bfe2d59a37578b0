"""Slurm job records -> cc-backend start/stop bodies: the plumbing. Pure functions: no sockets, no files.

Two entry points:
* `translate_record(sacct_raw, live_raw, job_script, ctx)` for one record from a SlurmJobRecord;
* `translate_documents(sacct_doc, live_doc, ctx)`: whole `sacct --json` (and `squeue`/`scontrol
  --json`) documents, decoded in one pass; only when that pass fails is the document split into
  one Raw per job to set the odd job aside (quarantined with its JSON path) and let the others through.

The mapping itself (cc-slurm-adapter-spec.md §3 with the fixes of §13) is policy and lives apart:
translate_mapping (one job -> Translation), translate_states (jobState, exit code),
translate_resources (hosts, hardware threads, GPUs), translate_info (slurmInfo text) and
translate_context (config, topology, caches). This module re-exports what callers use.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator

import msgspec

from actors.errors import SlurmError
from actors.slurm_live_views import LIVE_DOCUMENT, LIVE_JOB, LIVE_RAW_DOCUMENT, LiveJob
from actors.slurm_views import SACCT_DOCUMENT, SACCT_JOB, SACCT_RAW_DOCUMENT
from actors.translate_context import TranslateContext
from actors.translate_mapping import Translation, translate_job
from actors.translate_states import FALLBACK_STOP_STATE, STOP_STATES, UNFINISHED_STATES

__all__ = ["FALLBACK_STOP_STATE", "GC_PAUSE_JOBS", "STOP_STATES", "UNFINISHED_STATES", "TranslateContext",
           "Translation", "translate_documents", "translate_job", "translate_record"]

#: Jobs translated per stretch with the cyclic GC paused (translate_documents).
GC_PAUSE_JOBS = 2048


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
