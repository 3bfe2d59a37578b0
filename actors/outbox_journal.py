"""What the store keeps beside the deliveries: the jobs seen (for ccctl trace), the quarantine of
jobs the translator cannot read, and small durable facts (kv). Its SQL runs on the Outbox's
connection and transactions: Outbox inherits JobJournal, so every caller keeps one object."""

from __future__ import annotations

import sqlite3
import time
from typing import Iterable

import msgspec

ERROR_MAX_CHARS = 2_000  #: last_error and quarantine error are cut to this
#: Quarantine states: held (waits for an admin or a fix), retry (re-read at the next poll),
#: released (translated fine later, or let go by an admin; kept for ccctl trace).
QUARANTINE_STATES = ("held", "retry", "released")
JOB_SOURCES = ("poll", "hook", "reconcile", "backfill")


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


class JobJournal:
    """The journal half of Outbox (self.db and self._write() are the Outbox's)."""

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
