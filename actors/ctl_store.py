"""ccctl commands that work on the durable store directly: they answer with the daemon down too.

`jobs` lists outbox rows, `retry` puts failed rows back, `quarantine` shows and retries the jobs
the translator set aside. Writes are single short transactions, safe beside the running daemon.
"""

from __future__ import annotations

import json
import os
import sys
import time

from actors.ctl_commands import EXIT_OK, EXIT_USAGE
from actors.outbox import Outbox

EXIT_NOT_FOUND = 4  #: the job or row asked for is not in the store


def open_store(config, readonly: bool) -> Outbox | None:
    if not os.path.exists(config.outbox_path):
        print(f"ccctl: no outbox at {config.outbox_path} yet (has the daemon run with this stateDir?)", file=sys.stderr)
        return None
    return Outbox(config.outbox_path, readonly=readonly)


def jobs(config, state: str | None, as_json: bool, limit: int) -> int:
    outbox = open_store(config, readonly=True)
    if outbox is None:
        return EXIT_NOT_FOUND
    rows = outbox.rows(state=state, limit=limit)
    if as_json:
        print(json.dumps([_row_dict(r) for r in rows], indent=1))
        return EXIT_OK
    print(f"{'ROW':>7} {'SINK':<5} {'JOB':<22} {'EVENT':<10} {'STATE':<10} {'TRIES':>5}  LAST ANSWER")
    for r in rows:
        answer = f"{r.last_status or ''} {r.last_error}".strip()
        print(f"{r.id:>7} {r.sink:<5} {f'{r.job_id}@{r.cluster}':<22} {r.event:<10} {r.state:<10} {r.attempts:>5}  {answer[:80]}")
    return EXIT_OK


def retry(config, row_id: int | None) -> int:
    outbox = open_store(config, readonly=False)
    if outbox is None:
        return EXIT_NOT_FOUND
    count = outbox.requeue(row_id)
    print(f"{count} row(s) queued again")
    return EXIT_OK if count or row_id is None else EXIT_NOT_FOUND


def quarantine(config, action: str, job_id: int | None, as_json: bool) -> int:
    outbox = open_store(config, readonly=action != "retry")
    if outbox is None:
        return EXIT_NOT_FOUND
    if action == "list":
        entries = outbox.quarantined(state=None)
        if as_json:
            print(json.dumps([_quarantine_dict(e, raw=False) for e in entries], indent=1))
            return EXIT_OK
        print(f"{'JOB':<22} {'STATE':<9} {'SEEN':>5}  {'SINCE':<20} PATH: ERROR")
        for e in entries:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.first_at))
            print(f"{f'{e.job_id}@{e.cluster}':<22} {e.state:<9} {e.count:>5}  {since:<20} {e.json_path}: {e.error}")
        return EXIT_OK
    if job_id is None:
        print(f"ccctl: quarantine {action} needs a job id", file=sys.stderr)
        return EXIT_USAGE
    if action == "show":
        entry = outbox.quarantine_entry(job_id)
        if entry is None:
            print(f"ccctl: job {job_id} is not quarantined", file=sys.stderr)
            return EXIT_NOT_FOUND
        print(json.dumps(_quarantine_dict(entry, raw=True), indent=1, ensure_ascii=False))
        return EXIT_OK
    count = outbox.quarantine_retry(job_id)
    if not count:
        print(f"ccctl: job {job_id} is not held in quarantine", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"job {job_id} will be read and translated again at the next poll")
    return EXIT_OK


def _row_dict(r) -> dict:
    return {"id": r.id, "sink": r.sink, "cluster": r.cluster, "jobId": r.job_id, "startTime": r.start_time,
            "event": r.event, "state": r.state, "attempts": r.attempts, "nextTryAt": r.next_try_at,
            "lastStatus": r.last_status, "lastError": r.last_error, "createdAt": r.created_at,
            "deliveredAt": r.delivered_at, "body": json.loads(r.body)}


def _quarantine_dict(e, raw: bool) -> dict:
    d = {"jobId": e.job_id, "cluster": e.cluster, "state": e.state, "path": e.json_path, "error": e.error,
         "release": e.release, "firstAt": e.first_at, "lastAt": e.last_at, "count": e.count}
    if raw:
        d["record"] = json.loads(e.raw) if e.raw else None
    return d
