"""The few fields of a Slurm job record the querier routes by, and the split of a document into records.

`split_jobs` turns `sacct --json` (or `squeue`/`scontrol --json`) output into one (JobKey, raw record)
per job without decoding the rest; `JobKey.ready_for` tells whether a record is the one a hook event
waits for.
"""

from __future__ import annotations

import re

import msgspec

from actors.errors import SlurmError

__all__ = ["JobKey", "split_jobs"]


class JobsDoc(msgspec.Struct):
    jobs: list[msgspec.Raw] = []


class _Time(msgspec.Struct, frozen=True):
    start: int | None = 0
    end: int | None = 0


class _State(msgspec.Struct, frozen=True):
    current: str | list[str] | None = None


class _Number(msgspec.Struct, frozen=True):
    """24.11+'s {"set": true, "infinite": false, "number": N}."""

    set: bool = False
    number: int | None = 0


#: slurmctld's states of a job that will not run (again): its end time is final
ENDED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                          "PREEMPTED", "BOOT_FAIL", "DEADLINE"})


class JobKey(msgspec.Struct):
    """Just enough of a job record to route it and to tell whether sacct has its final record."""

    job_id: int
    cluster: str | None = ""
    name: str | None = ""
    partition: str | None = ""
    time: _Time = _Time()
    state: _State = _State()
    nodes: str | None = ""
    job_state: str | list[str] | None = None  #: slurmctld's records (squeue/scontrol --json) only
    end_time: int | _Number | None = None  #: slurmctld's records only

    @property
    def ended_in_slurmctld_at(self) -> int:
        """For a record of slurmctld's: when the job ended after it ran; 0 while it is pending or
        running, and for a job that never ran (no nodes: sacct's windows do not list those)."""
        states = [self.job_state] if isinstance(self.job_state, str) else (self.job_state or [])
        if not ENDED_STATES.intersection(states) or not self.nodes:
            return 0
        end = self.end_time.number if isinstance(self.end_time, _Number) and self.end_time.set else self.end_time
        return end if isinstance(end, int) and end > 0 else 0

    @property
    def is_placeholder(self) -> bool:
        # slurmdbd's first 1-5 s after a start: name "allocation", no partition, state PENDING.
        return self.name == "allocation" and not self.partition

    @property
    def progress(self) -> tuple:
        """What changes when a job moves on; a record with the same progress says nothing new."""
        state = self.state.current
        return (self.time.start, self.time.end, tuple(state) if isinstance(state, list) else state,
                self.is_placeholder)

    @property
    def may_be_completed_by_live(self) -> bool:
        """A placeholder of an ended job: slurmctld's record of it may have what it lacks
        (actors/translate_placeholder.py)."""
        return self.is_placeholder and bool(self.time.end)

    def ready_for(self, context: str, live: JobKey | None = None) -> bool:
        """Whether this record (with `live`, slurmctld's record of the job, if any) shows what a
        hook event of `context` promised."""
        if self.is_placeholder:
            return (context == "epilog_slurmctld" and self.may_be_completed_by_live and live is not None
                    and bool(live.name) and bool(live.partition))
        if context == "epilog_slurmctld":
            return bool(self.time.end)
        return bool(self.time.start)


class _JobId(msgspec.Struct):
    job_id: int
    cluster: msgspec.Raw = msgspec.Raw(b'""')


_LONE_SURROGATE = re.compile(  # the same as actors.translate's
    rb"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})(?<!\\)\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_doc_decoder = msgspec.json.Decoder(JobsDoc)
_key_decoder = msgspec.json.Decoder(JobKey)
_id_decoder = msgspec.json.Decoder(_JobId)


def split_jobs(document: bytes, what: str) -> list[tuple[JobKey, msgspec.Raw]]:
    """One (key, raw record) per job. A record whose other key fields cannot be read still goes on
    with its job id (the translator quarantines it with the JSON path of the fault); one without a
    usable job_id is skipped and logged."""
    try:
        raws = _doc_decoder.decode(document).jobs
    except msgspec.DecodeError as e:
        # A lone UTF-16 surrogate escape anywhere fails the whole document, even into Raw: replace it
        # by U+FFFD (as translate._repair_text does per job), so that it costs no job at all.
        repaired = _LONE_SURROGATE.sub(rb"\\ufffd", document)
        try:
            raws = _doc_decoder.decode(repaired).jobs
        except msgspec.DecodeError:
            raise SlurmError(f"{what} printed something that is not Slurm JSON: {e}") from None
    result = []
    for index, raw in enumerate(raws):
        try:
            result.append((_key_decoder.decode(raw), raw))
        except (msgspec.DecodeError, UnicodeDecodeError) as e:  # invalid UTF-8: a latin-1 job name, say
            try:
                found = _id_decoder.decode(raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                log_line = f"{what}: $.jobs[{index}] has no usable job_id/cluster ({e}); skipped"
                result.append((None, log_line))
            else:
                try:
                    cluster = msgspec.json.decode(found.cluster)
                except (msgspec.DecodeError, UnicodeDecodeError):
                    cluster = ""
                result.append((JobKey(job_id=found.job_id, cluster=cluster if isinstance(cluster, str) else ""), raw))
    return result
