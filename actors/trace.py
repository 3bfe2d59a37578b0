"""`ccctl trace JOBID`: why is my job (not) in ClusterCockpit? Every stage of its journey, one verdict.

Stages: what Slurm says now (one `sacct --json -X -j JOBID`), when the adapter saw it (jobs_seen),
what the translator made of it (the start/stop bodies, or the quarantine record), where each outbox
row stands per sink, and what cc-backend lists now. Works with the daemon running or not: the
durable store is opened read-only, and the daemon is only asked for its status (a short timeout).
Nothing is ever changed.

`gather()` (here) is the plumbing; `verdict(facts)` (actors/trace_verdict.py) is the policy, a pure
function of the gathered facts (the same dict `--json` prints), so every verdict has a table test.
"""

from __future__ import annotations

import json
import os
import sys
import time

import msgspec

from actors.delivery_policy import stop_hold_s
from actors.outbox import Outbox
from actors.slurm_views import SacctState, SacctTime, first_str, int_value
from actors.trace_verdict import DELIVERED, SINKS, UNKNOWN, clock, compare, verdict

EXIT_OK = 0  #: delivered and consistent
EXIT_PROBLEM = 1  #: any other verdict: the job is not (yet, or not rightly) in cc-backend
EXIT_UNKNOWN = 4  #: Slurm and the adapter do not know the job
SLURM_TIMEOUT_S = 30.0  #: the one sacct call at most (capped by slurmCommandTimeout)
BACKEND_TIMEOUT_S = 10.0  #: the one cc-backend query at most (capped by ccRestTimeout)
START_SLACK_S = 60  #: cc-backend is asked for jobs started this close to a known start time
BODY_CHARS = 120  #: a body is cut to this in the text output (--json has it whole)


class TraceSacctJob(msgspec.Struct):
    """Only what trace shows: a record poisoned elsewhere (say `user`) still reads here."""

    job_id: int
    cluster: str | None = None
    nodes: str | None = None
    state: SacctState | None = None
    time: SacctTime | None = None


class TraceSacctDocument(msgspec.Struct):
    jobs: list[TraceSacctJob]


# --- the plumbing -----------------------------------------------------------------------------------


def gather(config, job_id: int, cluster: str | None, timeout_s: float, now: float | None = None) -> dict:
    status = daemon_status(config, timeout_s)
    slurm = slurm_facts(config, job_id, cluster)
    cluster = cluster or (slurm or {}).get("cluster") or None
    facts = {"jobId": job_id, "cluster": cluster, "tracedAt": time.time() if now is None else now,
             "daemon": "running" if status is not None else "not running",
             "poll": poll_facts(config, status), "backendError": "", "stopHoldS": stop_hold_s(
                 config.cc_commit_interval, ((status or {}).get("backend") or {}).get("profile")), "slurm": slurm, "seen": [],
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
