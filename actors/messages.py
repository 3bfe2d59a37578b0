"""Every message that crosses a ZeroMQ socket, and the union each socket decodes.

Messages carry ids and facts, not whole objects. New fields get defaults and go last.
All sockets speak JSON (msgspec.json), so Slurm's own JSON travels inside as msgspec.Raw.
"""

from __future__ import annotations

import msgspec


#: msgspec cannot decode `Raw | None`; an absent JSON value travels as the raw text `null`.
NULL_RAW = msgspec.Raw(b"null")


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """Base of every wire message; the `kind` tag selects the type when decoding."""


# --- every actor -> supervisor --------------------------------------------------------------

class Heartbeat(Message, tag="heartbeat"):
    actor: str
    pid: int
    sent_at: float  #: unix s
    #: Small facts for `ccctl status`, e.g. {"slurm_release": "22.05.8", "last_poll_at": 1.7e9}.
    facts: dict[str, str | int | float | bool | None] = {}


# --- hook client -> hook_listener -----------------------------------------------------------

class HookEvent(Message, tag="hook_event"):
    job_id: str
    cluster: str
    context: str  #: SLURM_SCRIPT_CONTEXT: prolog_slurmctld or epilog_slurmctld
    sent_at: float  #: unix s, when the hook ran (a replayed spool event keeps its time)
    #: The Slurm PrEp variables the original forwards (names as in the environment).
    env: dict[str, str] = {}


class HookAck(Message, tag="hook_ack"):
    accepted: bool


# --- hook_listener / ccctl -> slurm_querier -------------------------------------------------

class JobNudge(Message, tag="job_nudge"):
    """Look at this job now instead of at the next poll."""

    cluster: str
    job_id: int
    source: str  #: "hook", "spool" or "ctl"
    at: float  #: unix s
    context: str = ""  #: prolog_slurmctld / epilog_slurmctld: what sacct must show before we stop asking


# --- slurm_querier -> translator ------------------------------------------------------------

class SlurmJobRecord(msgspec.Struct, frozen=True, kw_only=True):
    job_id: int
    cluster: str
    sacct: msgspec.Raw  #: one element of `sacct --json` jobs[]
    live: msgspec.Raw = NULL_RAW  #: the same job from squeue/scontrol --json, while slurmctld has it
    job_script: str | None = None


class SlurmBatch(Message, tag="slurm_batch"):
    batch_id: int
    release: str  #: e.g. "22.05.8"
    source: str  #: "poll", "hook" or "reconcile"
    polled_at: float  #: unix s
    records: list[SlurmJobRecord]


# --- translator -> slurm_querier ------------------------------------------------------------

class BatchDone(Message, tag="batch_done"):
    """The batch's jobs are in the outbox (or quarantined): the querier may move on."""

    batch_id: int
    translated: int
    quarantined: int
    skipped: int


# --- translator -> sinks --------------------------------------------------------------------

class OutboxChanged(Message, tag="outbox_changed"):
    """New rows wait in the outbox; sinks look now instead of at their next timer."""

    rows: int


# --- ccctl <-> supervisor -------------------------------------------------------------------

class CtlRequest(Message, tag="ctl_request"):
    command: str  #: "status", "trace", "nudge", ...
    args: dict[str, str | int | float | bool | None] = {}


class CtlReply(Message, tag="ctl_reply"):
    ok: bool
    data: msgspec.Raw = NULL_RAW  #: the command's JSON answer
    error: str = ""


# --- what each socket accepts -----------------------------------------------------------------

SupervisorInbox = Heartbeat
HookInbox = HookEvent
QuerierInbox = JobNudge | BatchDone
TranslatorInbox = SlurmBatch
SinkInbox = OutboxChanged
