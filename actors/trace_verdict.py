"""The verdict of `ccctl trace`: a pure function of the facts actors/trace.py gathered (the same dict
`ccctl trace --json` prints), with the one line that tells the admin what to do next.
"""

from __future__ import annotations

import time

from actors.outbox import START_REFUSED
from actors.translate import STOP_STATES, UNFINISHED_STATES, FALLBACK_STOP_STATE

SINKS = ("rest", "nats")

# Verdict codes: stable, for scripts. Each line starts with the words after the code.
DELIVERED = "delivered"  #: "delivered and consistent"
UNCONFIRMED = "unconfirmed"  #: "delivered, not confirmed" (cc-backend could not be asked)
WAITING = "waiting"  #: "waiting for retry"
QUARANTINED = "quarantined"  #: "quarantined"
REJECTED = "rejected"  #: "rejected by cc-backend"
NOT_SEEN = "not_seen"  #: "not yet seen"
NOT_STARTED = "not_started"  #: "not started" (Slurm has not run it: nothing to send yet)
UNKNOWN = "unknown"  #: "unknown to Slurm"
SLURM_FAILED = "slurm_failed"  #: "Slurm did not answer" (and the adapter has no record either)
INCONSISTENT = "inconsistent"  #: "inconsistent"
#: V1.5 states a v1.4 cc-backend stores as another one (cc_rest.V15_ONLY_STATES).
V14_STATES = {"node_fail": "failed", "boot_fail": "failed", "deadline": "timeout"}


def verdict(facts: dict) -> tuple[str, str]:
    """(code, one line with the admin's next step) from the facts `gather` collected."""
    job, slurm = facts["jobId"], facts["slurm"]
    rows = [r for sink in SINKS for r in facts["delivery"].get(sink, [])]
    quarantine = facts["translation"].get("quarantine")
    known_here = bool(facts["seen"] or rows or quarantine)
    slurm_ok = slurm is None or not slurm.get("error")
    if slurm is None and not known_here:
        return UNKNOWN, (f"unknown to Slurm: sacct has no job {job} (a wrong id, another cluster (--cluster), "
                         "or purged from the accounting database); the adapter has no record of it either")
    if not slurm_ok and not known_here:
        return SLURM_FAILED, (f"Slurm did not answer: {slurm['error']}; the adapter has no record of job {job}: "
                              f"check slurmctld/slurmdbd (sacct -j {job}), then trace again")
    if quarantine and quarantine["state"] in ("held", "retry"):
        then = ("a retry is asked for: the next poll reads it again" if quarantine["state"] == "retry"
                else f"fix the cause (or upgrade the adapter), then run: ccctl quarantine retry {job}")
        return QUARANTINED, (f"quarantined: the translator cannot read {quarantine['path']} of job {job} "
                             f"({quarantine['error']}); {then}")
    failed = [r for r in rows if r["state"] == "failed"]
    refused = [r for r in failed if r["lastError"] != START_REFUSED] or failed
    if refused:
        r = refused[0]
        answer = " ".join(str(x) for x in (r["lastStatus"], r["lastError"]) if x not in (None, ""))
        return REJECTED, (f"rejected by cc-backend: {answer} ({r['sink']} {r['event']}, row {r['row']}); "
                          f"fix the cause, then run: ccctl retry {r['row']}")
    waiting = [r for r in rows if r["state"] in ("pending", "published")]
    if waiting:
        return WAITING, _held_stop_line(facts, rows, waiting) or _waiting_line(facts, waiting)
    slurm_start = slurm.get("startTime") if slurm and slurm_ok else None
    backend = facts["backend"]
    if not rows and backend.get("reachable") and backend.get("jobs"):  # delivered long ago: rows pruned
        same, difference, advice = compare(facts)
        if same:
            return DELIVERED, f"delivered and consistent: {difference}; nothing to do"
        return INCONSISTENT, f"inconsistent: {difference}; {advice}"
    if not rows:
        if slurm and slurm_ok and (slurm_start is None or slurm.get("state") == "PENDING"):
            return NOT_STARTED, (f"not started: Slurm has job {job} {slurm.get('state') or 'without a start'}; "
                                 "cc-backend gets a job once it runs: nothing to do")
        return NOT_SEEN, _not_seen_line(facts, f"the adapter has no record of job {job}" if not facts["seen"] else
                                        f"the adapter saw job {job} but had nothing to send yet")
    runs = {r["startTime"] for r in rows}
    if slurm_start is not None and slurm_start not in runs:
        return NOT_SEEN, _not_seen_line(facts, f"the run of job {job} that started at {clock(slurm_start)} "
                                               "(requeued?) is not in the outbox yet")
    delivered_at = max(r["deliveredAt"] or 0 for r in rows)
    if not backend.get("reachable"):
        return UNCONFIRMED, (f"delivered, not confirmed: delivered at {clock(delivered_at)}, but cc-backend could "
                             f"not be asked ({backend.get('error') or 'no answer'}); check it, then trace again")
    same, difference, advice = compare(facts)
    if same:
        return DELIVERED, f"delivered and consistent: {difference}; nothing to do"
    return INCONSISTENT, f"inconsistent: {difference}; {advice}"


def compare(facts: dict) -> tuple[bool, str, str]:
    """Does cc-backend list the job as Slurm (or, Slurm having forgotten it, the adapter) has it?
    Returns (same, what is seen or what differs, what to do about a difference)."""
    job, slurm = facts["jobId"], facts["slurm"]
    rows = [r for sink in SINKS for r in facts["delivery"].get(sink, [])]
    listed = facts["backend"].get("jobs") or []
    if slurm and not slurm.get("error") and slurm.get("startTime") is not None:
        start, slurm_state = slurm["startTime"], slurm.get("state") or ""
        expected, said = expected_cc_state(slurm_state), f"{slurm_state} in Slurm"
    elif rows:
        start = max(r["startTime"] for r in rows)
        stop = next((run["stop"] for run in facts["translation"]["runs"] if run["startTime"] == start), None)
        expected = (stop or {}).get("jobState") or "running"
        said = f"{expected} as the adapter sent it (Slurm no longer knows the job)"
    elif listed:
        start, expected = listed[-1].get("startTime"), listed[-1].get("jobState") or ""
        said = "(Slurm no longer knows the job)"
    else:
        return False, f"cc-backend does not list job {job}", "trace again once the adapter has sent it"
    mine = [j for j in listed if j.get("startTime") == start]
    if not mine:
        sent = f" was delivered at {clock(max(r['deliveredAt'] or 0 for r in rows))} but" if rows else ""
        return False, f"job {job} (start {clock(start)}){sent} cc-backend does not list it", \
            ("cc-backend lists a job once committed (every few seconds): trace again; if it stays missing, the job "
             "was removed there")
    state = mine[0].get("jobState") or ""
    if state == expected or V14_STATES.get(expected) == state:
        return True, f"job {job} is in cc-backend as {state} (start {clock(start)}), {said}", ""
    difference = f"{state} in cc-backend, {said}"
    if state == "running":
        if not any(r["event"] == "stop_job" and r["startTime"] == start for r in rows):
            soon = next_poll_in_s(facts) if facts["daemon"] == "running" else None
            when = f"in {soon} s" if soon is not None else "once the daemon runs"
            return False, difference, (f"the adapter has not read the end yet: the next poll ({when}) sends the stop "
                                       "and fixes it; if it stays so, trace again after that poll")
        return False, difference, "the stop was delivered but cc-backend kept the job running: check cc-backend's log"
    if expected == "running":
        return False, difference, ("cc-backend stopped a job Slurm still runs (an admin, or a stop of another run): "
                                   "nothing the adapter will change; check the job in cc-backend")
    return False, difference, "cc-backend keeps the first stop it got: correct the job there if it matters"


def expected_cc_state(slurm_state: str) -> str:
    if slurm_state in UNFINISHED_STATES:
        return "running"
    return STOP_STATES.get(slurm_state, FALLBACK_STOP_STATE)


def next_poll_in_s(facts: dict) -> int | None:
    poll = facts.get("poll") or {}
    if poll.get("lastPollAt") is None:
        return None
    return max(0, int(round(poll["lastPollAt"] + poll["intervalS"] - facts["tracedAt"])))


def _held_stop_line(facts: dict, rows: list[dict], waiting: list[dict]) -> str | None:
    """The line for a REST stop held until cc-backend has committed its start (ccCommitInterval)."""
    hold = facts.get("stopHoldS") or 0
    if not hold or any((r["sink"], r["event"], r["attempts"]) != ("rest", "stop_job", 0) for r in waiting):
        return None
    starts = [r["deliveredAt"] for r in rows if (r["sink"], r["event"], r["state"]) == ("rest", "start_job", "delivered")
              and r["startTime"] in {w["startTime"] for w in waiting} and r["deliveredAt"]]
    if not starts or max(starts) + hold <= facts["tracedAt"]:
        return None
    return (f"waiting for cc-backend's commit: the stop goes out at {clock(max(starts) + hold)}, once its start is "
            f"{hold:g} s old (ccCommitInterval + 2 s; a stop that meets an uncommitted job can stop another one in "
            "cc-backend v1.5); nothing to do")


def _waiting_line(facts: dict, waiting: list[dict]) -> str:
    since = clock(min(r["createdAt"] for r in waiting))
    tried = sorted((r for r in waiting if r["attempts"]), key=lambda r: r["lastTryAt"] or 0)
    if tried:
        last = tried[-1]
        answer = " ".join(str(x) for x in (last["lastStatus"], last["lastError"]) if x not in (None, "")) or "none"
        head = f"waiting for retry (backend down since {since}): last answer {answer}"
    elif facts.get("backendError"):
        head = f"waiting for retry (backend down since {since}): {facts['backendError']}"
    else:
        head = f"waiting for retry (queued since {since}, not sent yet)"
    events = ", ".join(sorted({f"{r['sink']} {r['event']}" for r in waiting}))
    if facts["daemon"] != "running":
        return f"{head}; {events} to send; the daemon is not running: start it (systemctl start cc-slurm-adapter)"
    return f"{head}; {events} to send; nothing to do: it goes out once cc-backend answers (check it; ccctl status)"


def _not_seen_line(facts: dict, what: str) -> str:
    poll = facts.get("poll") or {}
    last = f"last poll {clock(poll['lastPollAt'])}" if poll.get("lastPollAt") else "no poll yet"
    if facts["daemon"] != "running":
        return (f"not yet seen: {what}, and the daemon is not running ({last}); start it "
                "(systemctl start cc-slurm-adapter): its first poll reads the job")
    soon = next_poll_in_s(facts)
    when = f"next poll in {soon} s" if soon is not None else "the first poll is still to come"
    return (f"not yet seen: {what}; {when} ({last}); if it should be there already: was the hook called? "
            "(slurmctld's PrologSlurmctld/EpilogSlurmctld running cc-slurm-adapter)")


def clock(unix_s: float | None) -> str:
    return "-" if not unix_s else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))
