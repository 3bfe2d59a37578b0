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

BUSY_TIMEOUT_MS = 10_000  #: a writer waits this long for another process's transaction
CACHE_KIB = 1024  #: SQLite page cache per connection; the tree's memory matters more than cache hits
PRUNE_CHUNK_ROWS = 5_000  #: rows deleted per transaction when pruning (keeps each lock short)
ERROR_MAX_CHARS = 2_000  #: last_error and quarantine error are cut to this
SINKS = ("rest", "nats")
EVENTS = ("start_job", "stop_job")
#: kv key of cc-backend's GET /api/clusters/ answer: rest_submitter keeps it, translator reads it.
BACKEND_CLUSTERS_KEY = "backend.clusters"
#: kv key of the latest node-state body (slurm_querier writes it each poll, rest_submitter sends it).
NODESTATE_KEY = "slurm.nodestate"
#: Row states: pending (to send) -> published (NATS: sent, waiting to read it back) -> delivered;
#: failed = set aside (the receiver refused it for good); an admin can requeue it.
STATES = ("pending", "published", "delivered", "failed")
#: Quarantine states: held (waits for an admin or a fix), retry (re-read at the next poll),
#: released (translated fine later, or let go by an admin; kept for ccctl trace).
QUARANTINE_STATES = ("held", "retry", "released")
JOB_SOURCES = ("poll", "hook", "reconcile", "backfill")
LOOKUP_CHUNK_IDS = 500  #: job ids per SELECT ... IN (...) (SQLite's variable limit is far above)
#: last_error of a stop set aside because its start was refused; requeueing the start revives it.
START_REFUSED = "its start_job was refused"

#: Schema migrations, in order; migration N (1-based) brings the file to schema_version N.
#: Never edit a released entry: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: the four tables
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            sink TEXT NOT NULL,
            cluster TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            start_time INTEGER NOT NULL,
            event TEXT NOT NULL,
            body BLOB NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try_at REAL NOT NULL DEFAULT 0,
            last_status INTEGER,
            last_error TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            delivered_at REAL,
            UNIQUE (sink, cluster, job_id, start_time, event)
        )""",
        # due(): range scan on next_try_at, already in (next_try_at, id) order thanks to the rowid
        "CREATE INDEX deliveries_due ON deliveries (sink, state, next_try_at)",
        "CREATE INDEX deliveries_job ON deliveries (cluster, job_id)",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            cluster TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            json_path TEXT NOT NULL,
            error TEXT NOT NULL,
            raw BLOB NOT NULL,
            release TEXT NOT NULL DEFAULT '',
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            state TEXT NOT NULL DEFAULT 'held',
            UNIQUE (cluster, job_id)
        )""",
        """CREATE TABLE jobs_seen (
            cluster TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            first_seen_at REAL NOT NULL,
            last_seen_at REAL NOT NULL,
            last_source TEXT NOT NULL,
            times_seen INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (cluster, job_id)
        )""",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, updated_at REAL NOT NULL)",
    ),
    (  # 2: start times and Slurm state for ccctl trace; prune by delivery time
        "ALTER TABLE quarantine ADD COLUMN start_time INTEGER",
        "ALTER TABLE jobs_seen ADD COLUMN start_time INTEGER",
        "ALTER TABLE jobs_seen ADD COLUMN last_slurm_state TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX deliveries_delivered ON deliveries (delivered_at) WHERE state = 'delivered'",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


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


class QuarantineEntry(msgspec.Struct, frozen=True):
    id: int
    cluster: str
    job_id: int
    json_path: str
    error: str
    raw: bytes
    release: str  #: the Slurm release the record came from
    first_at: float
    last_at: float
    count: int
    state: str  #: held | retry | released
    start_time: int | None = None


QUARANTINE_COLUMNS = ", ".join(QuarantineEntry.__struct_fields__)


class SeenJob(msgspec.Struct, frozen=True):
    """What ccctl trace shows about the last time a job went through the translator."""

    cluster: str
    job_id: int
    start_time: int | None
    first_seen_at: float
    last_seen_at: float
    last_source: str  #: poll | hook | reconcile | backfill
    last_slurm_state: str
    times_seen: int


SEEN_COLUMNS = ", ".join(SeenJob.__struct_fields__)


class Outbox:
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
        `stop_hold_s`), None if never."""
        stop_due, args = ("MAX(d.next_try_at, s.delivered_at + ?)", (stop_hold_s, sink)) if stop_hold_s else \
            ("d.next_try_at", (sink,))
        row = self.db.execute(
            f"SELECT MIN(CASE WHEN d.event = 'start_job' THEN d.next_try_at ELSE {stop_due} END)"
            " FROM deliveries d INDEXED BY deliveries_due LEFT JOIN deliveries s ON s.sink = d.sink"
            " AND s.cluster = d.cluster AND s.job_id = d.job_id AND s.start_time = d.start_time"
            " AND s.event = 'start_job' AND s.state = 'delivered'"
            " WHERE d.sink = ? AND d.state = 'pending' AND (d.event = 'start_job' OR s.id IS NOT NULL)",
            args).fetchone()
        return row[0]

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

    # --- jobs seen, for ccctl trace ------------------------------------------------------------

    def note_seen(self, seen: Iterable[tuple], now: float | None = None) -> None:
        """Upsert jobs_seen in one transaction. Each entry is (cluster, job_id, source) or
        (cluster, job_id, source, start_time, slurm_state); source is one of JOB_SOURCES."""
        seen = list(seen)
        if seen:
            with self._write() as db:
                self._upsert_seen(db, seen, time.time() if now is None else now)

    @staticmethod
    def _upsert_seen(db: sqlite3.Connection, seen: list[tuple], now: float) -> None:
        db.executemany(
            "INSERT INTO jobs_seen (cluster, job_id, first_seen_at, last_seen_at, last_source, start_time,"
            " last_slurm_state) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cluster, job_id) DO UPDATE SET"
            " last_seen_at = excluded.last_seen_at, last_source = excluded.last_source,"
            " times_seen = times_seen + 1, start_time = COALESCE(excluded.start_time, start_time),"
            " last_slurm_state = CASE WHEN excluded.last_slurm_state != '' THEN excluded.last_slurm_state"
            " ELSE last_slurm_state END",
            [(s[0], s[1], now, now, s[2], s[3] if len(s) > 3 else None, (s[4] if len(s) > 4 else "") or "")
             for s in seen])

    def seen(self, cluster: str | None, job_id: int) -> list[SeenJob]:
        sql, args = f"SELECT {SEEN_COLUMNS} FROM jobs_seen WHERE job_id = ?", (job_id,)
        if cluster:
            sql, args = sql + " AND cluster = ?", (job_id, cluster)
        return [SeenJob(*r) for r in self.db.execute(sql + " ORDER BY cluster", args).fetchall()]

    # --- quarantine ----------------------------------------------------------------------------

    def quarantine_add(self, cluster: str, job_id: int, json_path: str, error: str, raw: bytes, release: str,
                       start_time: int | None = None) -> bool:
        """Record a job we cannot translate; True when this is news (first time, or a new reason)."""
        now = time.time()
        error = error[:ERROR_MAX_CHARS]
        with self._write() as db:
            old = db.execute("SELECT json_path, error, state FROM quarantine WHERE cluster = ? AND job_id = ?",
                             (cluster, job_id)).fetchone()
            db.execute(
                "INSERT INTO quarantine (cluster, job_id, json_path, error, raw, release, first_at, last_at, start_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (cluster, job_id) DO UPDATE SET"
                " json_path = excluded.json_path, error = excluded.error, raw = excluded.raw,"
                " release = excluded.release, last_at = excluded.last_at, count = count + 1, state = 'held',"
                " start_time = COALESCE(excluded.start_time, start_time)",
                (cluster, job_id, json_path, error, raw, release, now, now, start_time))
        return old is None or old[2] != "held" or (old[0], old[1]) != (json_path, error)

    def quarantined(self, state: str | None = "held") -> list[QuarantineEntry]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self.db.execute(f"SELECT {QUARANTINE_COLUMNS} FROM quarantine {where} ORDER BY id", args)
        return [QuarantineEntry(*r) for r in rows.fetchall()]

    def quarantine_entry(self, job_id: int, cluster: str | None = None) -> QuarantineEntry | None:
        sql, args = f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE job_id = ?", (job_id,)
        if cluster:
            sql, args = sql + " AND cluster = ?", (job_id, cluster)
        row = self.db.execute(sql + " ORDER BY last_at DESC LIMIT 1", args).fetchone()
        return QuarantineEntry(*row) if row else None

    def quarantine_retry(self, job_id: int, cluster: str | None = None) -> int:
        """Mark a held job for another try; the querier re-reads it at its next poll."""
        return self._quarantine_set(job_id, cluster, "retry", "state = 'held'")

    def quarantine_release(self, job_id: int, cluster: str | None = None) -> int:
        """Let a job go (an admin gave up on it); the entry stays for ccctl trace."""
        return self._quarantine_set(job_id, cluster, "released", "state != 'released'")

    def _quarantine_set(self, job_id: int, cluster: str | None, state: str, condition: str) -> int:
        sql, args = f"UPDATE quarantine SET state = ?, last_at = ? WHERE job_id = ? AND {condition}", \
            (state, time.time(), job_id)
        if cluster:
            sql, args = sql + " AND cluster = ?", (*args, cluster)
        with self._write() as db:
            return db.execute(sql, args).rowcount

    def quarantine_take_retries(self) -> list[tuple[str, int]]:
        """The jobs an admin (or an upgrade) asked to retry; they go back to held until translated."""
        with self._write() as db:
            jobs = db.execute("SELECT cluster, job_id FROM quarantine WHERE state = 'retry'").fetchall()
            db.execute("UPDATE quarantine SET state = 'held' WHERE state = 'retry'")
        return [(cluster, job_id) for cluster, job_id in jobs]

    def quarantine_retry_all(self) -> int:
        with self._write() as db:
            return db.execute("UPDATE quarantine SET state = 'retry' WHERE state = 'held'").rowcount

    # --- small durable facts --------------------------------------------------------------------

    def kv_get(self, key: str) -> bytes | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def kv_get_with_time(self, key: str) -> tuple[bytes, float] | None:
        row = self.db.execute("SELECT value, updated_at FROM kv WHERE key = ?", (key,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def kv_set(self, key: str, value: bytes) -> None:
        with self._write() as db:
            db.execute("INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE"
                       " SET value = excluded.value, updated_at = excluded.updated_at", (key, value, time.time()))

    def kv_delete(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM kv WHERE key = ?", (key,))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
