"""The control commands: each one a small class with the supervisor's side (`answer`) and
ccctl's side (`render`), registered in a plain dict."""

from __future__ import annotations

import json
import os
import time

import msgspec

from actors.messages import CtlReply, CtlRequest

EXIT_OK = 0
EXIT_DEGRADED = 1  #: an actor is not running, or a sink has failed for too long
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  #: no answer from the supervisor
#: A sink whose oldest undelivered row is older than this counts as failing.
SINK_STALLED_AFTER_S = 900
#: sacct this far behind slurmctld on an ended job is a problem (the usual lag is seconds)
ACCOUNTING_LAG_PROBLEM_S = 300
#: Slurm counts as failing once its latest call failed and no poll succeeded for this many poll intervals.
SLURM_FAILING_AFTER_POLLS = 3
#: Less free space than this in stateDir is a problem: SQLite's WAL grows to ~4 MB (1000 pages) between checkpoints.
STORE_MIN_FREE_BYTES = 4 * 1024 * 1024


def delivery_summary(outbox_path: str, now: float) -> dict:
    """Outbox counts per sink, oldest pending age, quarantined jobs; read-only, from any process."""
    from actors.outbox import Outbox

    if not os.path.exists(outbox_path):
        return {"sinks": {}, "quarantined": 0}
    outbox = Outbox(outbox_path, readonly=True)
    try:
        sinks = {}
        for sink, counts in outbox.counts().items():
            oldest = outbox.oldest_pending_at(sink)
            sinks[sink] = {**counts, "oldest_pending_age_s": None if oldest is None else round(now - oldest, 1)}
        return {"sinks": sinks, "quarantined": len(outbox.quarantined("held"))}
    finally:
        outbox.close()


def store_health(state_dir: str, facts: dict[str, dict]) -> dict:
    """stateDir as the file system sees it (free space, read-only), and the write errors actors report."""
    health = {"path": state_dir, "free_bytes": None, "read_only": None, "error": "",
              "errors": {name: f["store_error"] for name, f in facts.items() if f.get("store_error")}}
    try:
        fs = os.statvfs(state_dir)
    except OSError as e:
        health["error"] = str(e)
    else:
        health["free_bytes"] = fs.f_bavail * fs.f_frsize
        health["read_only"] = bool(fs.f_flag & os.ST_RDONLY)
    return health


class StatusCommand:
    name = "status"

    @staticmethod
    def answer(supervisor, args: dict) -> dict:
        now = time.time()
        config = supervisor.config
        actors = [
            {
                "name": slot.name,
                "pid": slot.pid,
                "state": slot.state,
                "restarts": slot.restarts,
                "heartbeat_age_s": slot.heartbeat_age_s(now),
                "last_exit": slot.last_exit,
                "facts": slot.facts,
            }
            for slot in supervisor.slots.values()
        ]
        facts = {slot.name: slot.facts for slot in supervisor.slots.values()}
        querier, rest, nats = facts["slurm_querier"], facts["rest_submitter"], facts["nats_publisher"]
        spool = config.hook_spool_path
        return {
            "supervisor": {
                "pid": os.getpid(),
                "uptime_s": round(now - supervisor.started_at, 1),
                "version": supervisor.version,
                "ready": supervisor.ready_sent,
                "summary": supervisor.summary(),
            },
            "actors": actors,
            "slurm": {
                "release": querier.get("slurm_release"),
                "last_poll_at": querier.get("last_poll_at"),
                "last_error": querier.get("last_error", ""),
                "watermark": querier.get("watermark"),
                "pending_nudges": querier.get("pending_nudges", 0),
                # ended in slurmctld, not (yet) in sacct at the last poll: the watermark waits for them
                "accounting_lagging_jobs": querier.get("accounting_lagging_jobs", 0),
                "accounting_lag_s": querier.get("accounting_lag_s", 0),
                # while the latest call failed: seconds since the last good poll (or the daemon's start)
                "failing_for_s": round(now - (querier.get("last_poll_at") or supervisor.started_at), 1)
                if querier.get("last_error") else None,
                "failing_after_s": SLURM_FAILING_AFTER_POLLS * config.slurm_poll_interval,
            },
            "backend": {
                "url": config.cc_rest_url,
                "profile": rest.get("backend_profile"),
                "mode": _mode(config),
                "rest": {k: rest.get(k) for k in ("backend_ok", "last_success_at", "auth_failing", "last_error")},
                "nats": {k: nats.get(k) for k in ("connected", "last_success_at", "last_error")},
            },
            "delivery": delivery_summary(config.outbox_path, now),
            "store": store_health(config.state_dir, facts),
            "hook_spool_bytes": os.path.getsize(spool) if os.path.exists(spool) else 0,
        }

    @staticmethod
    def problems(data: dict) -> list[str]:
        found = [f"actor {a['name']} is {a['state']}" for a in data["actors"] if a["state"] != "running"]
        if (data.get("backend") or {}).get("rest", {}).get("auth_failing"):
            found.append("cc-backend refuses the JWT (ccRestJwt)")
        slurm = data.get("slurm") or {}
        if slurm.get("failing_for_s") is not None and slurm["failing_for_s"] > slurm.get("failing_after_s", 0):
            found.append(f"Slurm: no successful poll for {int(slurm['failing_for_s'])} s: {slurm['last_error']}")
        if slurm.get("accounting_lag_s", 0) > ACCOUNTING_LAG_PROBLEM_S:
            found.append(f"Slurm: sacct has not shown the end of {slurm['accounting_lagging_jobs']} job(s) slurmctld "
                         f"ended up to {int(slurm['accounting_lag_s'])} s ago: slurmdbd is behind slurmctld")
        store = data.get("store") or {}
        if store.get("error"):
            found.append(f"stateDir {store['path']}: {store['error']}")
        elif store.get("read_only"):
            found.append(f"stateDir {store['path']} is read-only")
        elif store.get("free_bytes") is not None and store["free_bytes"] < STORE_MIN_FREE_BYTES:
            found.append(f"stateDir {store['path']}: only {store['free_bytes']} bytes free")
        found += [f"{name} cannot write stateDir: {error}" for name, error in sorted(store.get("errors", {}).items())]
        for sink, row in (data.get("delivery") or {}).get("sinks", {}).items():
            age = row.get("oldest_pending_age_s")
            if age is not None and age > SINK_STALLED_AFTER_S:
                found.append(f"sink {sink}: oldest undelivered job waits since {int(age)} s")
        return found

    @staticmethod
    def render(data: dict, as_json: bool) -> tuple[str, int]:
        problems = StatusCommand.problems(data)
        code = EXIT_DEGRADED if problems else EXIT_OK
        if as_json:
            return json.dumps({**data, "problems": problems}, indent=2, sort_keys=True), code
        sup = data["supervisor"]
        lines = [
            f"supervisor pid {sup['pid']}, up {_duration(sup['uptime_s'])}, version {sup['version']}: {sup['summary']}",
            f"{'ACTOR':<16}{'PID':>8}  {'STATE':<11}{'RESTARTS':>8}  HEARTBEAT",
        ]
        for a in data["actors"]:
            age = "never" if a["heartbeat_age_s"] is None else f"{a['heartbeat_age_s']:.1f} s ago"
            pid = a["pid"] if a["pid"] is not None else "-"
            lines.append(f"{a['name']:<16}{pid:>8}  {a['state']:<11}{a['restarts']:>8}  {age}")
        slurm, backend, delivery = data["slurm"], data["backend"], data["delivery"]
        lines.append(f"slurm: release {slurm['release'] or '?'}, last poll {_ago(slurm['last_poll_at'])}"
                     + (f", sacct behind slurmctld on {slurm['accounting_lagging_jobs']} ended job(s)"
                        if slurm.get("accounting_lagging_jobs") else "")
                     + (f", error: {slurm['last_error']}" if slurm["last_error"] else ""))
        lines.append(f"cc-backend: {backend['url']} ({backend['profile'] or 'not reached yet'}), mode {backend['mode']},"
                     f" last REST success {_ago(backend['rest']['last_success_at'])}")
        for sink, row in sorted(delivery["sinks"].items()):
            lines.append(f"outbox {sink}: {row['pending']} pending, {row['published']} published, {row['delivered']} delivered,"
                         f" {row['failed']} failed; oldest waiting {_age(row['oldest_pending_age_s'])}")
        lines.append(f"quarantined jobs: {delivery['quarantined']}; hook spool: {data['hook_spool_bytes']} bytes")
        store = data.get("store")
        if store:
            free = "?" if store["free_bytes"] is None else f"{store['free_bytes']} bytes free"
            lines.append(f"stateDir: {store['path']}, {free}" + (", read-only" if store["read_only"] else "")
                         + "".join(f"; {name}: {error}" for name, error in sorted(store["errors"].items())))
        lines += [f"PROBLEM: {p}" for p in problems]
        return "\n".join(lines), code


COMMANDS = {command.name: command for command in (StatusCommand,)}


def answer_control(supervisor, request: CtlRequest) -> CtlReply:
    command = COMMANDS.get(request.command)
    if command is None:
        return CtlReply(ok=False, error=f"unknown command {request.command!r}; known: {', '.join(COMMANDS)}")
    return CtlReply(ok=True, data=msgspec.Raw(msgspec.json.encode(command.answer(supervisor, request.args))))


def _mode(config) -> str:
    if config.cc_rest_submit_jobs and config.nats_server:
        return "REST+NATS"
    return "REST" if config.cc_rest_submit_jobs else "NATS"


def _ago(unix_s: float | None) -> str:
    return "never" if not unix_s else f"{_duration(time.time() - unix_s)} ago"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else _duration(seconds)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
