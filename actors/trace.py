"""`ccctl trace JOBID`: why is my job (not) in ClusterCockpit? Every stage of its journey, one verdict.

Stages: what Slurm says now (one `sacct --json -X -j JOBID`), when the adapter saw it (jobs_seen),
what the translator made of it (the start/stop bodies, or the quarantine record), where each outbox
row stands per sink, and what cc-backend lists now. Works with the daemon running or not: the
durable store is opened read-only, and the daemon is only asked for its status (a short timeout).
Nothing is ever changed.

`gather()` is the plumbing; `verdict(facts)` is the policy, a pure function of the gathered facts
(the same dict `--json` prints), so every verdict has a table test.
"""

from __future__ import annotations

import json
import os
import sys
import time

import msgspec

from actors.outbox import START_REFUSED, Outbox
from actors.slurm_views import SacctState, SacctTime, first_str, int_value
from actors.translate import STOP_STATES, UNFINISHED_STATES, FALLBACK_STOP_STATE

EXIT_OK = 0  #: delivered and consistent
EXIT_PROBLEM = 1  #: any other verdict: the job is not (yet, or not rightly) in cc-backend
EXIT_UNKNOWN = 4  #: Slurm and the adapter do not know the job
SLURM_TIMEOUT_S = 30.0  #: the one sacct call at most (capped by slurmCommandTimeout)
BACKEND_TIMEOUT_S = 10.0  #: the one cc-backend query at most (capped by ccRestTimeout)
START_SLACK_S = 60  #: cc-backend is asked for jobs started this close to a known start time
BODY_CHARS = 120  #: a body is cut to this in the text output (--json has it whole)
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


class TraceSacctJob(msgspec.Struct):
    """Only what trace shows: a record poisoned elsewhere (say `user`) still reads here."""

    job_id: int
    cluster: str | None = None
    nodes: str | None = None
    state: SacctState | None = None
    time: SacctTime | None = None


class TraceSacctDocument(msgspec.Struct):
    jobs: list[TraceSacctJob]


# --- the policy -------------------------------------------------------------------------------------


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
        return WAITING, _waiting_line(facts, waiting)
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


# --- the plumbing -----------------------------------------------------------------------------------


def gather(config, job_id: int, cluster: str | None, timeout_s: float, now: float | None = None) -> dict:
    status = daemon_status(config, timeout_s)
    slurm = slurm_facts(config, job_id, cluster)
    cluster = cluster or (slurm or {}).get("cluster") or None
    facts = {"jobId": job_id, "cluster": cluster, "tracedAt": time.time() if now is None else now,
             "daemon": "running" if status is not None else "not running",
             "poll": poll_facts(config, status), "backendError": "", "slurm": slurm, "seen": [],
             "translation": {"runs": [], "quarantine": None}, "delivery": {s: [] for s in SINKS}}
    if status is not None:
        facts["backendError"] = ((status.get("backend") or {}).get("rest") or {}).get("last_error") or ""
    if os.path.exists(config.outbox_path):
        store_facts(facts, Outbox(config.outbox_path, readonly=True))
    facts["cluster"] = facts["cluster"] or _only({s["cluster"] for s in facts["seen"]} |
                                                 {r["cluster"] for s in SINKS for r in facts["delivery"][s]})
    facts["backend"] = backend_facts(config, facts)
    if not any(facts["delivery"].values()) and facts["backend"].get("jobs") and os.path.exists(config.outbox_path):
        # cc-backend lists a job the store had no row for: delivered long ago and pruned, or delivered while
        # we were asking cc-backend. Read the store again so a fresh delivery is not mistaken for a pruned one.
        facts["seen"], facts["delivery"] = [], {s: [] for s in SINKS}
        facts["translation"] = {"runs": [], "quarantine": None}
        store_facts(facts, Outbox(config.outbox_path, readonly=True))
    code, text = verdict(facts)
    facts["verdict"] = {"code": code, "text": text}
    return facts


def daemon_status(config, timeout_s: float) -> dict | None:
    """The daemon's `status` answer, or None when it does not answer within timeout_s."""
    from actors.ctl_client import request_daemon

    reply = request_daemon(config.ctl_sock_path, "status", timeout_s)
    return msgspec.json.decode(reply.data) if reply is not None and reply.ok else None


def poll_facts(config, status: dict | None) -> dict:
    """When Slurm was last polled: the daemon says, or else lastRunPath's mtime (the watermark)."""
    last, source = ((status or {}).get("slurm") or {}).get("last_poll_at"), "status"
    if last is None:
        try:
            last, source = os.stat(config.last_run_path).st_mtime, "lastRunPath"
        except OSError:
            last, source = None, None
    return {"lastPollAt": last, "intervalS": config.slurm_poll_interval, "from": source}


def slurm_facts(config, job_id: int, cluster: str | None) -> dict | None:
    """What sacct says now; None when it does not know the job, {"error": ...} when it failed."""
    from actors.errors import SlurmError
    from actors.slurm_cli import SlurmCommands

    empty = {"error": None, "cluster": None, "state": None, "startTime": None, "endTime": None, "nodes": None}
    try:
        document = SlurmCommands(min(SLURM_TIMEOUT_S, config.slurm_command_timeout or SLURM_TIMEOUT_S)) \
            .sacct_jobs([job_id])
        jobs = msgspec.json.decode(document, type=TraceSacctDocument).jobs
    except SlurmError as e:
        return {**empty, "error": str(e)}
    except msgspec.DecodeError as e:
        return {**empty, "error": f"sacct printed JSON trace cannot read: {e}"}
    jobs = [j for j in jobs if j.job_id == job_id and (not cluster or j.cluster in (cluster, None))]
    if not jobs:
        return None
    j = jobs[-1]
    times = j.time or SacctTime()
    start = int_value(times.start)
    return {**empty, "cluster": j.cluster, "state": first_str(j.state.current) if j.state else "",
            "startTime": start if start else None, "endTime": int_value(times.end) or None,
            "nodes": j.nodes if j.nodes and j.nodes != "None assigned" else None}


def store_facts(facts: dict, outbox: Outbox) -> None:
    job_id, cluster = facts["jobId"], facts["cluster"]
    try:
        facts["seen"] = [{"cluster": s.cluster, "startTime": s.start_time, "firstSeenAt": s.first_seen_at,
                          "lastSeenAt": s.last_seen_at, "lastSource": s.last_source,
                          "lastSlurmState": s.last_slurm_state, "timesSeen": s.times_seen}
                         for s in outbox.seen(cluster, job_id)]
        entry = outbox.quarantine_entry(job_id, cluster)
        if entry is not None:
            facts["translation"]["quarantine"] = {
                "state": entry.state, "path": entry.json_path, "error": entry.error, "release": entry.release,
                "firstAt": entry.first_at, "lastAt": entry.last_at, "count": entry.count,
                "retryCommand": f"ccctl quarantine retry {job_id}"}
        runs: dict[int, dict] = {}
        for r in outbox.rows(cluster=cluster, job_id=job_id, limit=10_000):
            run = runs.setdefault(r.start_time, {"startTime": r.start_time, "start": None, "stop": None})
            run["start" if r.event == "start_job" else "stop"] = run["start" if r.event == "start_job" else "stop"] \
                or json.loads(r.body)
            facts["delivery"].setdefault(r.sink, []).append({
                "row": r.id, "sink": r.sink, "cluster": r.cluster, "event": r.event, "startTime": r.start_time,
                "state": r.state, "attempts": r.attempts, "createdAt": r.created_at,
                "lastTryAt": r.updated_at if r.attempts else None, "lastStatus": r.last_status,
                "lastError": r.last_error, "nextTryAt": r.next_try_at if r.state in ("pending", "published") else None,
                "deliveredAt": r.delivered_at})
        facts["translation"]["runs"] = [runs[t] for t in sorted(runs)]
    finally:
        outbox.close()


def backend_facts(config, facts: dict) -> dict:
    """The jobs cc-backend lists under this id, around every start time we know."""
    from actors.cc_rest import CcRest
    from actors.errors import BackendUnavailable

    answer = {"url": config.cc_rest_url, "reachable": None, "error": None, "jobs": [], "matchesSlurm": None}
    starts = {r["startTime"] for s in SINKS for r in facts["delivery"][s]}
    slurm = facts["slurm"]
    if slurm and slurm.get("startTime"):
        starts.add(slurm["startTime"])
    if not config.cc_rest_url:
        return {**answer, "error": "ccRestUrl is empty"}
    if not starts or not facts["cluster"]:
        return {**answer, "error": "not asked: no start time (or cluster) known for the job"}
    client = CcRest(config.cc_rest_url, config.cc_rest_jwt, min(BACKEND_TIMEOUT_S, config.cc_rest_timeout or 1e9))
    try:
        listed = client.list_jobs(cluster=facts["cluster"],
                                  start_time=(min(starts) - START_SLACK_S, max(starts) + START_SLACK_S))
    except BackendUnavailable as e:
        return {**answer, "reachable": False, "error": str(e)}
    finally:
        client.close()
    keep = ("id", "jobId", "cluster", "startTime", "jobState", "duration", "numNodes")
    mine = [{k: j.get(k) for k in keep} for j in listed if j.get("jobId") == facts["jobId"]]
    answer.update(reachable=True, jobs=mine)
    if any(facts["delivery"][s] for s in SINKS) or answer["jobs"]:
        answer["matchesSlurm"] = compare({**facts, "backend": answer})[0]
    return answer


def _only(values: set) -> str | None:
    values.discard(None)
    return values.pop() if len(values) == 1 else None


# --- ccctl's side -----------------------------------------------------------------------------------


def run(config, job_id: int, cluster: str | None, as_json: bool, timeout_s: float) -> int:
    facts = gather(config, job_id, cluster, timeout_s)
    if as_json:
        print(json.dumps(facts, indent=1, ensure_ascii=False))
    else:
        print("\n".join(render(facts)))
    code = facts["verdict"]["code"]
    return EXIT_OK if code == DELIVERED else EXIT_UNKNOWN if code == UNKNOWN else EXIT_PROBLEM


def render(facts: dict) -> list[str]:
    job, slurm = facts["jobId"], facts["slurm"]
    lines = [f"job {job}@{facts['cluster'] or '?'} (daemon {facts['daemon']})"]
    if slurm is None:
        lines.append("slurm:        unknown to Slurm")
    elif slurm["error"]:
        lines.append(f"slurm:        sacct failed: {slurm['error']}")
    else:
        lines.append(f"slurm:        {slurm['state']}, start {clock(slurm['startTime'])}, "
                     f"end {clock(slurm['endTime'])}, nodes {slurm['nodes'] or '-'}")
    lines.append("seen:         " + ("; ".join(
        f"first {clock(s['firstSeenAt'])}, last {clock(s['lastSeenAt'])} by {s['lastSource']} ({s['timesSeen']}x)"
        for s in facts["seen"]) or "never"))
    translation = facts["translation"]
    parts = []
    if translation["quarantine"]:
        q = translation["quarantine"]
        parts.append(f"quarantined ({q['state']}) at {q['path']}: {q['error']} — {q['retryCommand']}")
    for run_ in translation["runs"]:
        for event in ("start", "stop"):
            if run_[event] is not None:
                parts.append(f"{event} {_short(run_[event])}")
    lines.append("translation:  " + ("; ".join(parts) or "nothing yet"))
    for sink in SINKS:
        rows = facts["delivery"].get(sink) or []
        lines.append(f"delivery {sink}: " + ("; ".join(_row_line(r) for r in rows) or "no rows"))
    backend = facts["backend"]
    if not backend["reachable"]:
        lines.append(f"cc-backend:   {'unreachable: ' if backend['reachable'] is False else ''}{backend['error']}")
    elif not backend["jobs"]:
        lines.append("cc-backend:   does not list the job")
    else:
        listed = "; ".join(f"{j['jobState']}, start {clock(j['startTime'])}" for j in backend["jobs"])
        match = {True: "matches Slurm", False: "does NOT match Slurm", None: ""}[backend["matchesSlurm"]]
        lines.append(f"cc-backend:   {listed}" + (f" — {match}" if match else ""))
    lines.append(f"verdict:      {facts['verdict']['text']}")
    return lines


def _row_line(r: dict) -> str:
    head = f"row {r['row']} {r['event']} (start {r['startTime']}) {r['state']}, {r['attempts']} tries"
    if r["state"] == "delivered":
        return f"{head}, delivered at {clock(r['deliveredAt'])}"
    answer = " ".join(str(x) for x in (r["lastStatus"], r["lastError"]) if x not in (None, ""))
    tail = f", last try {clock(r['lastTryAt'])}" if r["lastTryAt"] else ""
    tail += f", last answer {answer}" if answer else ""
    tail += f", next try {clock(r['nextTryAt'])}" if r["nextTryAt"] else ""
    return head + tail


def _short(body) -> str:
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= BODY_CHARS else text[:BODY_CHARS] + "…"


if __name__ == "__main__":  # pragma: no cover - ccctl trace is the way in
    sys.exit("use: ccctl trace JOBID")
