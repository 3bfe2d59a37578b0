"""The durable outbox: every obligation to a sink, and everything else the daemon must not forget.

All SQL of the project lives here. One SQLite file in WAL mode under stateDir, opened by several
processes at once (translator writes, sinks deliver, ccctl reads): short transactions, a busy
timeout, BEGIN IMMEDIATE for writes, batched executemany.

Durability: journal_mode=WAL with synchronous=NORMAL. A committed transaction is in the WAL file
before COMMIT returns, so it survives the kill -9 of any process (ours or all of them); the WAL is
only fsync'ed at checkpoints, so a power loss or kernel crash can lose the last commits (never
corrupt the file). Commit first, acknowledge second: callers ack a batch only after enqueue()
returned, and a sink marks a row delivered only after the receiver said yes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Iterable

import msgspec

from actors.errors import AdapterError
from actors.outbox_journal import ERROR_MAX_CHARS, JobJournal
from actors.outbox_schema import MIGRATIONS, SCHEMA_VERSION

BUSY_TIMEOUT_MS = 10_000  #: a writer waits this long for another process's transaction
CACHE_KIB = 1024  #: SQLite page cache per connection; the tree's memory matters more than cache hits
PRUNE_CHUNK_ROWS = 5_000  #: rows deleted per transaction when pruning (keeps each lock short)
SINKS = ("rest", "nats")
EVENTS = ("start_job", "stop_job")
#: kv key of cc-backend's GET /api/clusters/ answer: rest_submitter keeps it, translator reads it.
BACKEND_CLUSTERS_KEY = "backend.clusters"
#: kv key of the latest node-state body (slurm_querier writes it each poll, rest_submitter sends it).
NODESTATE_KEY = "slurm.nodestate"
#: Row states: pending (to send) -> published (NATS: sent, waiting to read it back) -> delivered;
#: failed = set aside (the receiver refused it for good); an admin can requeue it.
STATES = ("pending", "published", "delivered", "failed")
LOOKUP_CHUNK_IDS = 500  #: job ids per SELECT ... IN (...) (SQLite's variable limit is far above)
#: last_error of a stop set aside because its start was refused; requeueing the start revives it.
START_REFUSED = "its start_job was refused"

class OutboxEvent(msgspec.Struct, frozen=True, kw_only=True):
    sink: str  #: "rest" or "nats"
    cluster: str
    job_id: int
    start_time: int  #: unix s; with cluster and job_id the identity of one run
    event: str  #: "start_job" or "stop_job"
    body: bytes  #: the JSON cc-backend gets


class Row(msgspec.Struct, frozen=True):
    id: int
    sink: str
    cluster: str
    job_id: int
    start_time: int
    event: str
    body: bytes
    state: str
    attempts: int
    next_try_at: float  #: unix s
    last_status: int | None
    last_error: str
    created_at: float
    updated_at: float
    delivered_at: float | None


ROW_COLUMNS = ", ".join(Row.__struct_fields__)


class Outbox(JobJournal):
    def __init__(self, path: str, *, readonly: bool = False):
        self.path = path
        if readonly:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                      isolation_level=None, check_same_thread=False)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode=WAL")  # persistent: stays on for every later opener
            self.db.execute("PRAGMA synchronous=NORMAL")  # per connection; see the module docstring
            self._migrate()
        self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")

    def close(self) -> None:
        self.db.close()

    def _write(self) -> _Transaction:
        return _Transaction(self.db)

    def _migrate(self) -> None:
        with self._write() as db:  # BEGIN IMMEDIATE: two processes starting together migrate once
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise AdapterError(f"{self.path} has outbox schema {version}, newer than this adapter's "
                                   f"{SCHEMA_VERSION}: run the newer adapter (downgrades are not supported)")
            for statement in (s for migration in MIGRATIONS[version:] for s in migration):
                db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        return self.db.execute("SELECT version FROM schema_version").fetchone()[0]

    # --- writing obligations -------------------------------------------------------------------

    def enqueue(self, events: Iterable[OutboxEvent], *, seen: Iterable[tuple] = (),
                clear_kv: str | None = None, next_try_at: float = 0.0) -> int:
        """Insert the events (the same job seen twice is one row), note the jobs as seen (see
        note_seen), and clear a kv entry, all in one transaction. Returns the number of new rows.
        `next_try_at` orders new rows among the due ones (due() sorts by it): ccctl backfill gives its
        rows the time of the backfill, so the daemon's own fresh rows (0) go out first."""
        now = time.time()
        events = list(events)
        seen = list(seen)
        with self._write() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (sink, cluster, job_id, start_time, event, body, created_at,"
                " updated_at, next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.sink, e.cluster, e.job_id, e.start_time, e.event, e.body, now, now, next_try_at) for e in events])
            new_rows = db.total_changes - before
            # a stop that comes after its start was refused is set aside with it, as in mark_failed
            db.executemany(
                "UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ? WHERE sink = ? AND cluster = ?"
                " AND job_id = ? AND start_time = ? AND event = 'stop_job' AND state = 'pending' AND EXISTS"
                " (SELECT 1 FROM deliveries s WHERE s.sink = ? AND s.cluster = ? AND s.job_id = ? AND s.start_time = ?"
                " AND s.event = 'start_job' AND s.state = 'failed')",
                [(START_REFUSED, now, *key, *key) for key in
                 {(e.sink, e.cluster, e.job_id, e.start_time) for e in events if e.event == "stop_job"}])
            if seen:
                self._upsert_seen(db, seen, now)
                translated = {(e.cluster, e.job_id) for e in events}
                db.executemany("UPDATE quarantine SET state = 'released', last_at = ? WHERE cluster = ?"
                               " AND job_id = ? AND state != 'released'",
                               [(now, s[0], s[1]) for s in seen if (s[0], s[1]) in translated])
            if clear_kv is not None:
                db.execute("DELETE FROM kv WHERE key = ?", (clear_kv,))
        return new_rows

    # --- handing rows to a sink ----------------------------------------------------------------

    def due(self, sink: str, now: float, limit: int, stop_hold_s: float = 0.0) -> list[Row]:
        """Pending rows whose time has come, longest due first; a stop only once the start of the
        same run (sink, cluster, job_id, start_time) is delivered, and at least `stop_hold_s` ago."""
        rows = self.db.execute(
            f"SELECT {ROW_COLUMNS} FROM deliveries d INDEXED BY deliveries_due"
            " WHERE d.sink = ? AND d.state = 'pending' AND d.next_try_at <= ?"
            " AND (d.event = 'start_job' OR EXISTS (SELECT 1 FROM deliveries s WHERE s.sink = d.sink"
            " AND s.cluster = d.cluster AND s.job_id = d.job_id AND s.start_time = d.start_time"
            " AND s.event = 'start_job' AND s.state = 'delivered' AND s.delivered_at <= ?))"
            " ORDER BY d.next_try_at, d.id LIMIT ?", (sink, now, now - stop_hold_s, limit)).fetchall()
        return [Row(*r) for r in rows]

    def next_due_at(self, sink: str, stop_hold_s: float = 0.0) -> float | None:
        """When due() will next hand out a row (same rules: a stop waits for its start, and then
        `stop_hold_s`), None if never. Called at every wakeup: the start rows are one index seek,
        and only pending stops are matched with their start."""
        start = self.db.execute(
            "SELECT MIN(next_try_at) FROM deliveries INDEXED BY deliveries_due"
            " WHERE sink = ? AND state = 'pending' AND event = 'start_job'", (sink,)).fetchone()[0]
        held, args = ("MAX(d.next_try_at, s.delivered_at + ?)", (stop_hold_s, sink)) if stop_hold_s else \
            ("d.next_try_at", (sink,))
        stop = self.db.execute(
            f"SELECT MIN({held}) FROM deliveries d INDEXED BY deliveries_due"
            " JOIN deliveries s ON s.sink = d.sink AND s.cluster = d.cluster AND s.job_id = d.job_id"
            " AND s.start_time = d.start_time AND s.event = 'start_job' AND s.state = 'delivered'"
            " WHERE d.sink = ? AND d.state = 'pending' AND d.event = 'stop_job'", args).fetchone()[0]
        return min((t for t in (start, stop) if t is not None), default=None)

    def get(self, row_id: int) -> Row | None:
        row = self.db.execute(f"SELECT {ROW_COLUMNS} FROM deliveries WHERE id = ?", (row_id,)).fetchone()
        return Row(*row) if row else None

    def mark_delivered(self, row_id: int, status: int | None = None) -> None:
        self.mark_delivered_many([row_id], status)

    def mark_delivered_many(self, row_ids: Iterable[int], status: int | None = None) -> None:
        now = time.time()
        with self._write() as db:
            db.executemany("UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, last_status = ?,"
                           " last_error = '', delivered_at = ?, updated_at = ? WHERE id = ? AND state != 'delivered'",
                           [(status, now, now, i) for i in row_ids])

    def mark_published(self, row_ids: Iterable[int], confirm_by: float) -> None:
        """NATS: sent and flushed; delivered once read back, sent again if not by `confirm_by`."""
        now = time.time()
        with self._write() as db:
            db.executemany("UPDATE deliveries SET state = 'published', attempts = attempts + 1, next_try_at = ?,"
                           " updated_at = ? WHERE id = ? AND state != 'delivered'",
                           [(confirm_by, now, i) for i in row_ids])

    def published(self, sink: str, limit: int) -> list[Row]:
        rows = self.db.execute(f"SELECT {ROW_COLUMNS} FROM deliveries WHERE sink = ? AND state = 'published'"
                               " ORDER BY id LIMIT ?", (sink, limit)).fetchall()
        return [Row(*r) for r in rows]

    def mark_retry(self, row_id: int, next_try_at: float, status: int | None, error: str) -> None:
        """Another try at `next_try_at` (unix s); attempts is counted here, so a restart keeps its place."""
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = 'pending', attempts = attempts + 1, next_try_at = ?,"
                       " last_status = ?, last_error = ?, updated_at = ? WHERE id = ? AND state != 'delivered'",
                       (next_try_at, status, error[:ERROR_MAX_CHARS], time.time(), row_id))

    def mark_failed(self, row_id: int, status: int | None, error: str) -> None:
        """Set aside for good (shown by ccctl); the stop of a refused start is set aside with it."""
        now = time.time()
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = 'failed', attempts = attempts + 1, last_status = ?,"
                       " last_error = ?, updated_at = ? WHERE id = ? AND state != 'delivered'",
                       (status, error[:ERROR_MAX_CHARS], now, row_id))
            db.execute("UPDATE deliveries SET state = 'failed', last_error = ?, updated_at = ?"
                       " WHERE state = 'pending' AND event = 'stop_job' AND (sink, cluster, job_id, start_time) IN"
                       " (SELECT sink, cluster, job_id, start_time FROM deliveries WHERE id = ?"
                       " AND event = 'start_job' AND state = 'failed')", (START_REFUSED, now, row_id))

    def resend_delivered(self, row_id: int, reason: str) -> None:
        """cc-backend's later state says a confirmed row did not take effect: send it again."""
        with self._write() as db:
            db.execute("UPDATE deliveries SET state = 'pending', next_try_at = 0, last_error = ?, updated_at = ?"
                       " WHERE id = ? AND state = 'delivered'", (reason[:2000], time.time(), row_id))

    def resend_delivered_many(self, row_ids: Iterable[int], reason: str) -> int:
        """resend_delivered for many rows in one transaction; returns how many went back to pending."""
        now = time.time()
        with self._write() as db:
            return db.executemany("UPDATE deliveries SET state = 'pending', next_try_at = 0, last_error = ?,"
                                  " updated_at = ? WHERE id = ? AND state = 'delivered'",
                                  [(reason[:ERROR_MAX_CHARS], now, i) for i in row_ids]).rowcount

    def unstopped_starts(self, sink: str, delivered_before: float) -> list[tuple[int, str, int, int]]:
        """(row id, cluster, job_id, start_time) of the start rows delivered before `delivered_before`
        (unix s) whose run has no delivered stop: the jobs this sink told cc-backend are running."""
        return self.db.execute(
            "SELECT d.id, d.cluster, d.job_id, d.start_time FROM deliveries d WHERE d.sink = ?"
            " AND d.event = 'start_job' AND d.state = 'delivered' AND d.delivered_at < ? AND NOT EXISTS"
            " (SELECT 1 FROM deliveries s WHERE s.sink = d.sink AND s.cluster = d.cluster AND s.job_id = d.job_id"
            " AND s.start_time = d.start_time AND s.event = 'stop_job' AND s.state = 'delivered') ORDER BY d.id",
            (sink, delivered_before)).fetchall()

    def row_states(self, jobs: Iterable[tuple[str, int]]) -> dict[tuple, tuple[int, str, float | None]]:
        """(sink, cluster, job_id, start_time, event) -> (row id, state, delivered_at) for every row of
        the (cluster, job_id) jobs, read in a few SELECTs (ccctl backfill compares a window at once)."""
        by_cluster: dict[str, set[int]] = {}
        for cluster, job_id in jobs:
            by_cluster.setdefault(cluster, set()).add(job_id)
        found = {}
        for cluster, ids in by_cluster.items():
            ids = sorted(ids)
            for first in range(0, len(ids), LOOKUP_CHUNK_IDS):
                part = ids[first:first + LOOKUP_CHUNK_IDS]
                for sink, c, job_id, start, event, row_id, state, delivered_at in self.db.execute(
                        "SELECT sink, cluster, job_id, start_time, event, id, state, delivered_at FROM deliveries"
                        f" WHERE cluster = ? AND job_id IN ({','.join('?' * len(part))})", (cluster, *part)):
                    found[(sink, c, job_id, start, event)] = (row_id, state, delivered_at)
        return found

    def requeue(self, row_id: int | None = None) -> int:
        """Put a failed row (or, with None, every failed row) back to pending with a fresh backoff;
        the stop set aside because of a requeued start comes back with it. Returns how many rows."""
        now = time.time()
        with self._write() as db:
            if row_id is None:
                return db.execute("UPDATE deliveries SET state = 'pending', next_try_at = 0, attempts = 0,"
                                  " updated_at = ? WHERE state = 'failed'", (now,)).rowcount
            n = db.execute("UPDATE deliveries SET state = 'pending', next_try_at = 0, attempts = 0, updated_at = ?"
                           " WHERE id = ? AND state = 'failed'", (now, row_id)).rowcount
            if n:
                n += db.execute(
                    "UPDATE deliveries SET state = 'pending', next_try_at = 0, attempts = 0, updated_at = ?"
                    " WHERE state = 'failed' AND event = 'stop_job' AND last_error = ? AND"
                    " (sink, cluster, job_id, start_time) IN (SELECT sink, cluster, job_id, start_time"
                    " FROM deliveries WHERE id = ? AND event = 'start_job')", (now, START_REFUSED, row_id)).rowcount
            return n

    def prune_delivered(self, before: float) -> int:
        """Delete rows delivered before `before` (unix s), a few thousand per transaction.

        A start is kept while a stop of the same run is not delivered: the stop's rule looks for it.
        A start pruned while its job still runs comes back with the stop (the translator always
        writes both); cc-backend then answers "already exists", which counts as delivered."""
        total = 0
        while True:
            with self._write() as db:
                n = db.execute(
                    "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE d.state = 'delivered'"
                    " AND d.delivered_at < ? AND NOT (d.event = 'start_job' AND EXISTS (SELECT 1 FROM deliveries s"
                    " WHERE s.sink = d.sink AND s.cluster = d.cluster AND s.job_id = d.job_id"
                    " AND s.start_time = d.start_time AND s.event = 'stop_job' AND s.state != 'delivered'))"
                    " LIMIT ?)", (before, PRUNE_CHUNK_ROWS)).rowcount
            total += n
            if n < PRUNE_CHUNK_ROWS:
                return total

    # --- what ccctl shows ----------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """sink -> state -> rows, every state present (0 when none)."""
        result: dict[str, dict[str, int]] = {}
        for sink, state, n in self.db.execute("SELECT sink, state, COUNT(*) FROM deliveries GROUP BY sink, state"):
            result.setdefault(sink, dict.fromkeys(STATES, 0))[state] = n
        return result

    def oldest_pending_at(self, sink: str) -> float | None:
        """created_at of the oldest row not yet delivered nor set aside (unix s), None when none."""
        return self.db.execute("SELECT MIN(created_at) FROM deliveries WHERE sink = ? AND state IN"
                               " ('pending', 'published')", (sink,)).fetchone()[0]

    def oldest_pending_age_s(self, sink: str, now: float) -> float | None:
        oldest = self.oldest_pending_at(sink)
        return None if oldest is None else max(0.0, now - oldest)

    def rows(self, state: str | None = None, cluster: str | None = None, job_id: int | None = None,
             limit: int = 1000, sink: str | None = None) -> list[Row]:
        """Rows for ccctl jobs (e.g. state='failed' or 'pending'), oldest first."""
        clauses, args = [], []
        for column, value in (("state", state), ("cluster", cluster), ("job_id", job_id), ("sink", sink)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.db.execute(f"SELECT {ROW_COLUMNS} FROM deliveries {where} ORDER BY id LIMIT ?", (*args, limit))
        return [Row(*r) for r in rows.fetchall()]

class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
