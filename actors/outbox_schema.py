"""The outbox's schema: its migrations, in order. actors/outbox.py applies them."""

from __future__ import annotations

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
