"""The schema as the hand-written runner made it (railguard before Alembic), for tests.

The DDL of migrations 1..5 exactly as released, and that runner's ``schema_migrations``: the
databases in the field were made by it, and Alembic's revisions must reproduce them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

V1 = """
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

V2 = """
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    next_at DOUBLE PRECISION NOT NULL,
    sent_at DOUBLE PRECISION,
    last_error TEXT,
    UNIQUE (channel, message_id)
);
CREATE INDEX outbox_queue ON outbox (channel, state, id);

CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

V3 = """
ALTER TABLE rollbacks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollbacks ADD COLUMN attempted_at DOUBLE PRECISION;
"""

V4 = """
CREATE TABLE release_summaries (
    service TEXT NOT NULL,
    release TEXT NOT NULL,
    signal TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, release, signal)
);
"""

V5 = """
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
    (1, "deployments, rollbacks, rule state, freezes, events", V1),
    (2, "alert outbox and event cursors", V2),
    (3, "rollback attempts (a mutation resent only when Railway provably did not apply it)", V3),
    (4, "release summaries (the baselines later releases are judged against)", V4),
    (5, "the leader lease, and the epoch intents and outbox claims were written under", V5),
]


def build(path: Path, version: int, at: float = 1_700_000_000.0) -> None:
    """A SQLite database at ``version`` as the old runner left it (versions 1..version)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for number, description, sql in MIGRATIONS[:version]:
            db.executescript(f"BEGIN IMMEDIATE;\n{sql}")
            db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (number, description, at))
            db.execute("COMMIT")
    finally:
        db.close()
