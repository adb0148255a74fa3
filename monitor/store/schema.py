"""The store's schema: versioned migrations, applied in order on open, each in its own transaction.

A new schema change is one more entry in ``MIGRATIONS``; a released entry is never edited,
since databases in the field have already applied it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from monitor.errors import StoreError
from monitor.store.outbox import V2 as OUTBOX_V2
from monitor.store.summaries import V4 as BASELINES_V4

# Times are DOUBLE PRECISION, not REAL: PostgreSQL's REAL is 4 bytes and would round Unix
# seconds to minutes. JSON is TEXT (PG: JSONB). INTEGER PRIMARY KEY is SQLite's rowid
# (PG: BIGINT GENERATED ALWAYS AS IDENTITY). No foreign keys to deployments: a manual
# rollback may name a release railguard has not recorded yet, and losing its audit entry to
# a constraint would be worse than the dangling id.
_V1 = """
CREATE TABLE deployments (
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    live_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    can_rollback BOOLEAN NOT NULL,
    meta TEXT NOT NULL,
    verdict TEXT NOT NULL DEFAULT 'unverified' CHECK (verdict IN ('unverified', 'good', 'bad')),
    verdict_at DOUBLE PRECISION,
    verdict_reason TEXT NOT NULL DEFAULT '',
    evidence TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (service, id)
);
CREATE INDEX deployments_newest ON deployments (service, created_at);

CREATE TABLE rollbacks (
    id INTEGER PRIMARY KEY,
    service TEXT NOT NULL,
    from_deployment TEXT NOT NULL,
    to_deployment TEXT NOT NULL,
    trigger TEXT NOT NULL CHECK (trigger IN ('auto', 'manual')),
    actor TEXT NOT NULL,
    rule TEXT,
    reason TEXT NOT NULL,
    evidence TEXT NOT NULL,
    dry_run BOOLEAN NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('intent', 'sent', 'deploying', 'succeeded', 'failed', 'abandoned', 'dry_run')),
    new_deployment TEXT,
    decided_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION,
    deploying_at DOUBLE PRECISION,
    live_at DOUBLE PRECISION,
    recovered_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    error TEXT
);
-- At most one unfinished rollback per service, whichever task or replica begins it.
CREATE UNIQUE INDEX rollbacks_one_unfinished ON rollbacks (service)
    WHERE state IN ('intent', 'sent', 'deploying');
CREATE INDEX rollbacks_by_service ON rollbacks (service, decided_at);

CREATE TABLE rule_states (
    service TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, rule)
);

CREATE TABLE freezes (
    service TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    until DOUBLE PRECISION
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    service TEXT,
    kind TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_time ON events (at);
CREATE INDEX events_by_service ON events (service, at);
"""

# (version, description, sql), in order. A new schema change is one more line here; a
# released entry is never edited, since databases in the field have already applied it.
_V3 = """
ALTER TABLE rollbacks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollbacks ADD COLUMN attempted_at DOUBLE PRECISION;
"""

# The leader lease (high availability on PostgreSQL; unused on SQLite), and the epoch each
# intent and each outbox claim was written under.
_V5 = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
ALTER TABLE rollbacks ADD COLUMN epoch BIGINT;
ALTER TABLE outbox ADD COLUMN claimed_epoch BIGINT;
ALTER TABLE outbox ADD COLUMN claimed_at DOUBLE PRECISION;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "deployments, rollbacks, rule state, freezes, events", _V1),
    (2, "alert outbox and event cursors", OUTBOX_V2),
    (3, "rollback attempts (a mutation resent only when Railway provably did not apply it)", _V3),
    (4, "release summaries (the baselines later releases are judged against)", BASELINES_V4),
    (5, "the leader lease, and the epoch intents and outbox claims were written under", _V5),
]

HINT = (
    "set RAILGUARD_STATE to a writable file, or mount a volume at /data (on Railway, a "
    "volume is owned by root: set RAILWAY_RUN_UID=0 on the service)"
)


def configure(db: sqlite3.Connection, path: Path) -> None:
    """WAL, full fsync, foreign keys; StoreError if ``path`` is no usable database."""
    try:
        # PG: none of these; durability and constraints are the server's defaults.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")  # the CLI may read it meanwhile
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"{path}: not a usable railguard database ({e}); move the file aside to "
            f"start afresh, or {HINT}"
        ) from e


def migrate(db: sqlite3.Connection, path: Path, now: float) -> tuple[int, tuple[int, ...]]:
    """Apply the missing migrations; returns (schema version, the versions applied now)."""
    newest = MIGRATIONS[-1][0]
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        rows = db.execute("SELECT version FROM schema_migrations").fetchall()
    except sqlite3.Error as e:
        raise StoreError(f"{path}: cannot read the schema version: {e}; {HINT}") from e
    applied = {int(row[0]) for row in rows}
    current = max(applied, default=0)
    if current > newest:
        raise StoreError(
            f"{path}: the database has schema version {current}, but this railguard "
            f"knows versions up to {newest}: it was written by a newer railguard. Upgrade "
            "railguard, or set RAILGUARD_STATE to another file"
        )
    done: list[int] = []
    for version, description, sql in MIGRATIONS:
        if version in applied:
            continue
        try:
            # executescript commits an open transaction first, so BEGIN goes inside it.
            db.executescript(f"BEGIN IMMEDIATE;\n{sql}")
            db.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) "
                "VALUES (:version, :description, :at)",
                {"version": version, "description": description, "at": now},
            )
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise StoreError(
                f"{path}: migration {version} ({description}) failed: {e}; the "
                f"database was left at version {max(applied | set(done), default=0)}"
            ) from e
        done.append(version)
    return max(applied | set(done)), tuple(done)
