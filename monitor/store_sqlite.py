"""The Store on one SQLite file: one connection, WAL, ``synchronous=FULL``, versioned schema.

Durability is the point: a rollback intent is on disk before its mutation is sent, because the
daemon may be killed right after. Every write is one transaction, committed before the method
returns. The daemon's tasks share the connection; an asyncio lock keeps one task's
transaction from interleaving with another's statements.

The SQL stays portable to PostgreSQL where that is cheap: named parameters, ``ON CONFLICT``,
``RETURNING`` (SQLite 3.35+), partial indexes and ``DOUBLE PRECISION`` all map 1:1. The
exceptions are marked ``PG:`` where they occur.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiosqlite

from monitor.clock import Clock
from monitor.errors import StoreError
from monitor.store import (
    DeploymentRecord,
    EventRecord,
    FreezeRecord,
    RollbackRecord,
    RollbackTrigger,
    Store,
    check_transition,
    transition_columns,
)
from monitor.store_outbox import V2 as OUTBOX_V2
from monitor.store_outbox import OutboxStore

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

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "deployments, rollbacks, rule state, freezes, events", _V1),
    (2, "alert outbox and event cursors", OUTBOX_V2),
    (3, "rollback attempts (a mutation resent only when Railway provably did not apply it)", _V3),
]

R = TypeVar("R")

_UNFINISHED_SQL = "state IN ('intent', 'sent', 'deploying')"
_HINT = (
    "set RAILGUARD_STATE to a writable file, or mount a volume at /data (on Railway, a "
    "volume is owned by root: set RAILWAY_RUN_UID=0 on the service)"
)


async def _finished(statement: Awaitable[R]) -> R:
    """Await a statement that runs on aiosqlite's thread; if the awaiting task is cancelled,
    let the statement finish first, so the connection's transaction state is known."""
    task = asyncio.ensure_future(statement)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable for the store: {type(value).__name__}")


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _record(cls: Callable[..., R], row: sqlite3.Row, *json_columns: str) -> R:
    """A record from a row: the columns are named as the record's fields."""
    values = {key: row[key] for key in row.keys()}  # noqa: SIM118  (Row is no Mapping)
    for key in json_columns:
        values[key] = json.loads(values[key])
    for key in ("can_rollback", "dry_run"):
        if key in values:
            values[key] = bool(values[key])  # SQLite keeps booleans as 0 and 1
    return cls(**values)


def _deployment(row: sqlite3.Row) -> DeploymentRecord:
    return _record(DeploymentRecord, row, "meta", "evidence")


def _rollback(row: sqlite3.Row) -> RollbackRecord:
    return _record(RollbackRecord, row, "evidence")


def _freeze(row: sqlite3.Row) -> FreezeRecord:
    return _record(FreezeRecord, row)


def _event(row: sqlite3.Row) -> EventRecord:
    return _record(EventRecord, row, "data")


class SQLiteStore(OutboxStore):
    """The :class:`~monitor.store.Store` on a SQLite file; open it with ``open_store``."""

    def __init__(self, path: Path, db: aiosqlite.Connection) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = db
        self._lock = asyncio.Lock()
        self.schema_version = 0
        self.migrated: tuple[int, ...] = ()  # the versions this open applied

    # -- opening, migrating, closing

    @classmethod
    async def open(cls, path: Path, *, clock: Clock) -> SQLiteStore:
        """Open, configure and migrate the database at ``path`` (StoreError if it cannot)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{path}: cannot open the state database: {e}; {_HINT}") from e
        db.row_factory = sqlite3.Row
        store = cls(path, db)
        try:
            await store._configure()
            await store._migrate(clock.time())
        except BaseException:
            await db.close()
            raise
        return store

    async def _configure(self) -> None:
        db = self._connection()
        try:
            # PG: none of these; durability and constraints are the server's defaults.
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")  # the CLI may read it meanwhile
            await db.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"{self.path}: not a usable railguard database ({e}); move the file aside to "
                f"start afresh, or {_HINT}"
            ) from e

    async def _migrate(self, now: float) -> None:
        db = self._connection()
        newest = MIGRATIONS[-1][0]
        try:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            rows = await db.execute_fetchall("SELECT version FROM schema_migrations")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot read the schema version: {e}; {_HINT}") from e
        applied = {int(row[0]) for row in rows}
        current = max(applied, default=0)
        if current > newest:
            raise StoreError(
                f"{self.path}: the database has schema version {current}, but this railguard "
                f"knows versions up to {newest}: it was written by a newer railguard. Upgrade "
                "railguard, or set RAILGUARD_STATE to another file"
            )
        done: list[int] = []
        for version, description, sql in MIGRATIONS:
            if version in applied:
                continue
            try:
                # executescript commits an open transaction first, so BEGIN goes inside it.
                await db.executescript(f"BEGIN IMMEDIATE;\n{sql}")
                await db.execute(
                    "INSERT INTO schema_migrations (version, description, applied_at) "
                    "VALUES (:version, :description, :at)",
                    {"version": version, "description": description, "at": now},
                )
                await db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                raise StoreError(
                    f"{self.path}: migration {version} ({description}) failed: {e}; the "
                    f"database was left at version {max(applied | set(done), default=0)}"
                ) from e
            done.append(version)
        self.schema_version = max(applied | set(done))
        self.migrated = tuple(done)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreError(f"{self.path}: the store is closed")
        return self._db

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, committed on exit; sqlite errors become StoreError."""
        async with self._lock:
            db = self._connection()
            try:
                # IMMEDIATE takes the write lock up front (PG: plain BEGIN).
                try:
                    await _finished(db.execute("BEGIN IMMEDIATE"))
                except asyncio.CancelledError:
                    # Cancelled while the BEGIN ran in aiosqlite's thread: it began anyway.
                    with contextlib.suppress(sqlite3.Error):
                        await _finished(db.execute("ROLLBACK"))
                    raise
                try:
                    yield db
                    await _finished(db.execute("COMMIT"))
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await _finished(db.execute("ROLLBACK"))
                    raise
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        # Under the lock: on a shared connection a read would see another task's
        # uncommitted writes.
        async with self._lock:
            db = self._connection()
            try:
                return list(await db.execute_fetchall(sql, params))
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    # -- deployments

    async def upsert_deployment(
        self,
        service: str,
        *,
        id: str,
        status: str,
        created_at: float,
        can_rollback: bool,
        meta: Mapping[str, Any],
        seen_at: float,
        live: bool,
        live_at: float | None = None,
    ) -> DeploymentRecord:
        """Record a deployment as polled; keeps first_seen, the first live_at and the verdict.

        ``live_at`` is when it went live by Railway's clock (default ``seen_at``).

        ``ended_at`` is set the first time it is seen not serving after having served, and
        cleared if it serves again.
        """
        params = {
            "service": service,
            "id": id,
            "status": status,
            "created_at": created_at,
            "can_rollback": can_rollback,
            "meta": _dumps(meta),
            "seen_at": seen_at,
            "live_at": (seen_at if live_at is None else live_at) if live else None,
        }
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                """
                INSERT INTO deployments
                    (service, id, status, created_at, first_seen, live_at, can_rollback, meta)
                VALUES
                    (:service, :id, :status, :created_at, :seen_at, :live_at, :can_rollback, :meta)
                ON CONFLICT (service, id) DO UPDATE SET
                    status = excluded.status,
                    can_rollback = excluded.can_rollback,
                    meta = excluded.meta,
                    live_at = COALESCE(deployments.live_at, excluded.live_at),
                    ended_at = CASE
                        WHEN excluded.live_at IS NOT NULL THEN NULL
                        WHEN deployments.live_at IS NOT NULL
                            THEN COALESCE(deployments.ended_at, :seen_at)
                        ELSE deployments.ended_at
                    END
                RETURNING *
                """,
                params,
            )
        return _deployment(next(iter(rows)))

    async def _verdict(
        self,
        service: str,
        id: str,
        verdict: str,
        unless: str,
        at: float,
        reason: str,
        evidence: Mapping[str, Any],
    ) -> DeploymentRecord:
        key = {"service": service, "id": id}
        async with self._transaction() as db:
            await db.execute(
                "UPDATE deployments SET verdict = :verdict, verdict_at = :at, "
                "verdict_reason = :reason, evidence = :evidence "
                "WHERE service = :service AND id = :id AND verdict NOT IN (:verdict, :unless)",
                {
                    **key,
                    "verdict": verdict,
                    "unless": unless,
                    "at": at,
                    "reason": reason,
                    "evidence": _dumps(evidence),
                },
            )
            rows = list(
                await db.execute_fetchall(
                    "SELECT * FROM deployments WHERE service = :service AND id = :id", key
                )
            )
        if not rows:
            raise StoreError(
                f"cannot mark deployment {id} of {service} {verdict}: it was never recorded "
                "(upsert_deployment first)"
            )
        return _deployment(rows[0])

    async def mark_good(
        self, service: str, id: str, at: float, reason: str, evidence: Mapping[str, Any]
    ) -> DeploymentRecord:
        """Mark a deployment known-good unless it is bad; a second call changes nothing."""
        return await self._verdict(service, id, "good", "bad", at, reason, evidence)

    async def mark_bad(
        self, service: str, id: str, at: float, reason: str, evidence: Mapping[str, Any]
    ) -> DeploymentRecord:
        """Mark a deployment bad for ever (it wins over good); a second call changes nothing."""
        return await self._verdict(service, id, "bad", "bad", at, reason, evidence)

    async def deployment(self, service: str, id: str) -> DeploymentRecord | None:
        """One deployment, or None if it was never recorded."""
        rows = await self._fetch(
            "SELECT * FROM deployments WHERE service = :service AND id = :id",
            {"service": service, "id": id},
        )
        return _deployment(rows[0]) if rows else None

    async def deployments(self, service: str, limit: int = 50) -> list[DeploymentRecord]:
        """A service's deployments, newest created first."""
        rows = await self._fetch(
            "SELECT * FROM deployments WHERE service = :service "
            "ORDER BY created_at DESC, id DESC LIMIT :limit",
            {"service": service, "limit": limit},
        )
        return [_deployment(row) for row in rows]

    # -- rollbacks

    async def begin_rollback(
        self,
        service: str,
        from_deployment: str,
        to_deployment: str,
        trigger: RollbackTrigger,
        actor: str,
        rule: str | None,
        reason: str,
        evidence: Mapping[str, Any],
        decided_at: float,
        dry_run: bool,
    ) -> RollbackRecord:
        """Write the intent (or the dry run); StoreError if one is already in progress."""
        if trigger not in ("auto", "manual"):
            raise ValueError(f"unknown rollback trigger {trigger!r} (auto or manual)")
        params = {
            "service": service,
            "from_deployment": from_deployment,
            "to_deployment": to_deployment,
            "trigger": trigger,
            "actor": actor,
            "rule": rule,
            "reason": reason,
            "evidence": _dumps(evidence),
            "dry_run": dry_run,
            "state": "dry_run" if dry_run else "intent",
            "decided_at": decided_at,
            "finished_at": decided_at if dry_run else None,
        }
        async with self._transaction() as db:
            try:
                rows = await db.execute_fetchall(
                    """
                    INSERT INTO rollbacks (service, from_deployment, to_deployment, trigger,
                        actor, rule, reason, evidence, dry_run, state, decided_at, finished_at)
                    VALUES (:service, :from_deployment, :to_deployment, :trigger,
                        :actor, :rule, :reason, :evidence, :dry_run, :state, :decided_at,
                        :finished_at)
                    RETURNING *
                    """,
                    params,
                )
            except sqlite3.IntegrityError:
                # The failed statement is undone; the transaction is still usable to ask why.
                running = list(
                    await db.execute_fetchall(
                        f"SELECT id FROM rollbacks WHERE service = :service AND {_UNFINISHED_SQL}",
                        {"service": service},
                    )
                )
                if not running:
                    raise
                raise StoreError(
                    f"a rollback of {service} is already in progress (#{running[0]['id']})"
                ) from None
        return _rollback(next(iter(rows)))

    async def advance_rollback(
        self,
        id: int,
        state: str,
        *,
        at: float,
        new_deployment: str | None = None,
        error: str | None = None,
        live_at: float | None = None,
    ) -> RollbackRecord:
        """Move a rollback forward; StoreError for an unknown id or a refused transition.

        ``new_deployment`` is required for deploying and succeeded unless already known;
        ``live_at`` (deploying or succeeded) is when the replacement reached SUCCESS.
        """
        async with self._transaction() as db:
            rows = await db.execute_fetchall("SELECT * FROM rollbacks WHERE id = :id", {"id": id})
            if not rows:
                raise StoreError(f"no rollback #{id}")
            current = _rollback(next(iter(rows)))
            target = check_transition(
                current, state, new_deployment=new_deployment, live_at=live_at
            )
            columns = transition_columns(current, target, at, live_at)
            # Column names come from transition_columns' fixed set, never from the caller.
            assignments = "".join(f", {name} = :{name}" for name in columns)
            rows = await db.execute_fetchall(
                f"""
                UPDATE rollbacks SET state = :state{assignments},
                    new_deployment = COALESCE(:new_deployment, new_deployment),
                    error = COALESCE(:error, error)
                WHERE id = :id
                RETURNING *
                """,
                {
                    "id": id,
                    "state": target,
                    "new_deployment": new_deployment,
                    "error": error,
                    **columns,
                },
            )
        return _rollback(next(iter(rows)))

    async def note_attempt(self, id: int, at: float) -> RollbackRecord:
        """Count one more mutation for an intent, before it is sent (the write-ahead)."""
        async with self._transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "UPDATE rollbacks SET attempts = attempts + 1, attempted_at = :at "
                    "WHERE id = :id AND state = 'intent' RETURNING *",
                    {"id": id, "at": at},
                )
            )
        if not rows:
            raise StoreError(f"rollback #{id} is not an intent: no mutation may be sent for it")
        return _rollback(rows[0])

    async def rollback(self, id: int) -> RollbackRecord | None:
        """One rollback, or None."""
        rows = await self._fetch("SELECT * FROM rollbacks WHERE id = :id", {"id": id})
        return _rollback(rows[0]) if rows else None

    async def rollbacks(
        self,
        service: str | None = None,
        *,
        unfinished: bool = False,
        since: float | None = None,
        limit: int = 100,
    ) -> list[RollbackRecord]:
        """Rollbacks newest decided first, optionally one service's, unfinished, or recent."""
        where = ["1 = 1"]
        if service is not None:
            where.append("service = :service")
        if unfinished:
            where.append(_UNFINISHED_SQL)
        if since is not None:
            where.append("decided_at >= :since")
        rows = await self._fetch(
            f"SELECT * FROM rollbacks WHERE {' AND '.join(where)} "
            "ORDER BY decided_at DESC, id DESC LIMIT :limit",
            {"service": service, "since": since, "limit": limit},
        )
        return [_rollback(row) for row in rows]

    async def rollbacks_since(
        self, service: str, since: float, trigger: RollbackTrigger = "auto"
    ) -> int:
        """How many real rollbacks (not dry runs, not abandoned) were decided since ``since``.

        A failed one counts: the mutation may have reached Railway before it failed.
        """
        rows = await self._fetch(
            "SELECT COUNT(*) FROM rollbacks WHERE service = :service AND trigger = :trigger "
            "AND decided_at >= :since AND state NOT IN ('dry_run', 'abandoned')",
            {"service": service, "trigger": trigger, "since": since},
        )
        return int(rows[0][0])

    # -- rule pending state

    async def save_rule_state(
        self, service: str, rule: str, state: Mapping[str, Any], at: float
    ) -> None:
        """Keep one rule's state (``RuleState.to_dict()``) for one service."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO rule_states (service, rule, state, updated_at) "
                "VALUES (:service, :rule, :state, :at) "
                "ON CONFLICT (service, rule) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at",
                {"service": service, "rule": rule, "state": _dumps(state), "at": at},
            )

    async def rule_states(self, service: str) -> dict[str, dict[str, Any]]:
        """Every saved rule state of a service, by rule name."""
        rows = await self._fetch(
            "SELECT rule, state FROM rule_states WHERE service = :service ORDER BY rule",
            {"service": service},
        )
        return {row["rule"]: json.loads(row["state"]) for row in rows}

    async def delete_rule_state(self, service: str, rule: str) -> None:
        """Forget one rule's state (a rule removed from the config)."""
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM rule_states WHERE service = :service AND rule = :rule",
                {"service": service, "rule": rule},
            )

    # -- freezes

    async def freeze(
        self, service: str, reason: str, actor: str, at: float, until: float | None = None
    ) -> FreezeRecord:
        """Hold automatic rollback of ``service`` back; replaces an existing freeze."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "INSERT INTO freezes (service, reason, actor, at, until) "
                "VALUES (:service, :reason, :actor, :at, :until) "
                "ON CONFLICT (service) DO UPDATE SET reason = excluded.reason, "
                "actor = excluded.actor, at = excluded.at, until = excluded.until "
                "RETURNING *",
                {"service": service, "reason": reason, "actor": actor, "at": at, "until": until},
            )
        return _freeze(next(iter(rows)))

    async def unfreeze(self, service: str) -> FreezeRecord | None:
        """Lift the freeze; returns what was removed (None if there was none)."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "DELETE FROM freezes WHERE service = :service RETURNING *", {"service": service}
            )
        return next((_freeze(row) for row in rows), None)

    async def frozen(self, service: str, now: float) -> FreezeRecord | None:
        """The freeze in force at ``now``; an expired one counts as none."""
        rows = await self._fetch(
            "SELECT * FROM freezes WHERE service = :service AND (until IS NULL OR until > :now)",
            {"service": service, "now": now},
        )
        return _freeze(rows[0]) if rows else None

    async def freezes(self, now: float) -> list[FreezeRecord]:
        """Every freeze in force at ``now``, by service."""
        rows = await self._fetch(
            "SELECT * FROM freezes WHERE until IS NULL OR until > :now ORDER BY service",
            {"now": now},
        )
        return [_freeze(row) for row in rows]

    # -- events

    async def record_event(
        self, service: str | None, kind: str, at: float, data: Mapping[str, Any]
    ) -> int:
        """Append to the decision trail; returns the event's id."""
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "INSERT INTO events (service, kind, at, data) "
                "VALUES (:service, :kind, :at, :data) RETURNING id",
                {"service": service, "kind": kind, "at": at, "data": _dumps(data)},
            )
        return int(next(iter(rows))[0])

    async def events(
        self,
        service: str | None = None,
        since: float | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 200,
    ) -> list[EventRecord]:
        """Events newest first, filtered by service, time and kinds (an empty ``kinds``: none)."""
        where = ["1 = 1"]
        params: dict[str, Any] = {"service": service, "since": since, "limit": limit}
        if service is not None:
            where.append("service = :service")
        if since is not None:
            where.append("at >= :since")
        if kinds is not None:
            kinds = [kinds] if isinstance(kinds, str) else list(kinds)
            if not kinds:
                return []
            names = [f"kind{i}" for i in range(len(kinds))]
            where.append(f"kind IN ({', '.join(':' + n for n in names)})")
            params.update(zip(names, kinds, strict=True))
        rows = await self._fetch(
            f"SELECT * FROM events WHERE {' AND '.join(where)} "
            "ORDER BY at DESC, id DESC LIMIT :limit",
            params,
        )
        return [_event(row) for row in rows]


if TYPE_CHECKING:
    _conforms: type[Store] = SQLiteStore  # mypy proves SQLiteStore implements Store
