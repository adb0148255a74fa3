"""The Store in SQL: one text for SQLite and PostgreSQL, run on the store's own thread.

Durability is the point: a rollback intent is committed before its mutation is sent, because
the daemon may be killed right after. Every write is committed before the method returns. The
statements run on the store's own thread (:mod:`monitor.store.db`): writes queued together
share one transaction (and one fsync), and the event loop never waits on the database.

One SQL text serves both backends: named parameters (``:name``, turned into psycopg's by
:mod:`monitor.store.pg`), ``ON CONFLICT``, ``RETURNING`` (SQLite 3.35+), partial indexes and
``DOUBLE PRECISION`` mean the same on both. The backends differ in how they open
(:mod:`monitor.store.sqlite`, :mod:`monitor.store.postgres`), how a new row's id is read
back, and the lease row's share lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from monitor.errors import NotLeader, StoreError
from monitor.store import (
    DeploymentRecord,
    EventRecord,
    Fence,
    FreezeRecord,
    RollbackRecord,
    RollbackTrigger,
    ServiceRecords,
    StartedEvent,
    Store,
    check_transition,
    transition_columns,
)
from monitor.store.db import Connection, Database, Job, Row
from monitor.store.outbox import OutboxStore
from monitor.store.summaries import BaselineStore

R = TypeVar("R")

_UNFINISHED_SQL = "state IN ('intent', 'sent', 'deploying')"


def _json_default(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable for the store: {type(value).__name__}")


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _record(cls: Callable[..., R], row: Row, *json_columns: str) -> R:
    """A record from a row: the columns are named as the record's fields."""
    values = {key: row[key] for key in row.keys()}  # noqa: SIM118  (a Row is no Mapping)
    for key in json_columns:
        values[key] = json.loads(values[key])
    for key in ("can_rollback", "dry_run"):
        if key in values:
            values[key] = bool(values[key])  # SQLite keeps booleans as 0 and 1
    return cls(**values)


def _deployment(row: Row) -> DeploymentRecord:
    return _record(DeploymentRecord, row, "meta", "evidence")


def _rollback(row: Row) -> RollbackRecord:
    return _record(RollbackRecord, row, "evidence")


def _freeze(row: Row) -> FreezeRecord:
    return _record(FreezeRecord, row)


def _event(row: Row) -> EventRecord:
    return _record(EventRecord, row, "data")


def _rows(db: Connection, sql: str, params: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = db.execute(sql, params).fetchall()
    return rows


def _insert_id(db: Connection, sql: str, params: Mapping[str, Any]) -> int | None:
    """Insert one row; its new id, or None if the insert did nothing (``ON CONFLICT DO
    NOTHING``). SQLite's lastrowid is free; PostgreSQL returns it."""
    if isinstance(db, sqlite3.Connection):
        cursor = db.execute(sql, params)
        return int(cursor.lastrowid or 0) if cursor.rowcount == 1 else None
    rows = db.execute(sql + " RETURNING id", params).fetchall()
    return int(rows[0][0]) if rows else None


def _insert_event(
    db: Connection, service: str | None, kind: str, at: float, data: Mapping[str, Any]
) -> int:
    params = {"service": service, "kind": kind, "at": at, "data": _dumps(data)}
    sql = "INSERT INTO events (service, kind, at, data) VALUES (:service, :kind, :at, :data)"
    new_id = _insert_id(db, sql, params)
    assert new_id is not None  # no conflict is possible
    return new_id


class SqlStore(OutboxStore, BaselineStore):
    """The :class:`~monitor.store.Store` on a SQL database (SQLite or PostgreSQL: the
    backends open it; see :func:`monitor.store.open_store`)."""

    def __init__(self, label: str, db: Database) -> None:
        self.label = label
        self._db = db
        self.schema_version = 0
        self.migrated: tuple[int, ...] = ()  # the versions this open applied
        self.fence: Fence | None = None

    async def _set_up(self, setup: Job[tuple[int, tuple[int, ...]]]) -> Self:
        """Run a backend's ``setup`` (configure, migrate) on the store's thread; the store
        is closed again if it fails."""
        try:
            self.schema_version, self.migrated = await self._db.run(setup)
        except BaseException:
            await self._db.close()
            raise
        return self

    @property
    def busy(self) -> bool:
        """Whether a read or write is in flight (tests wait for it to settle)."""
        return self._db.jobs > 0

    async def close(self) -> None:
        """Finish queued writes and close the connection (idempotent)."""
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _write(self, job: Job[R]) -> R:
        """One write, committed (with whatever else was queued) before this returns."""
        return await self._db.write(job)

    async def _read(self, job: Job[R]) -> R:
        """Statements outside a transaction: they see committed writes only."""
        return await self._db.run(job)

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        return await self._db.run(lambda db: _rows(db, sql, params))

    # Share-locks the lease row where the dialect can (PG: " FOR SHARE"); SQLite's
    # BEGIN IMMEDIATE holds the database's write lock for the whole transaction anyway.
    _LOCK_FOR_SHARE = ""
    # Text ordered by code point on both backends, as SQLite's BINARY does (PG: ' COLLATE
    # "C"'): a server's collation (en_US on most) puts "api_v1" before "API" and "Web".
    _BY_CODE_POINT = ""

    def _fence_now(self) -> tuple[Fence, int | None] | None:
        """On the loop's thread, as a fenced write is asked for: the fence and the epoch this
        replica acts under now (its view reads the loop's clock, which the store's thread
        has not), or None without a fence."""
        fence = self.fence
        return None if fence is None else (fence, fence.epoch())

    def _fenced(
        self, db: Connection, fenced: tuple[Fence, int | None] | None, what: str
    ) -> int | None:
        """Inside the write: the epoch it is written under, or NotLeader (see Fence)."""
        if fenced is None:
            return None
        fence, epoch = fenced
        held = epoch is not None and _rows(
            db,
            "SELECT 1 FROM leases WHERE name = :name AND holder = :holder AND epoch = :epoch"
            + self._LOCK_FOR_SHARE,
            {"name": fence.name, "holder": fence.holder, "epoch": epoch},
        )
        if not held:
            raise NotLeader(
                f"{what}: refused, {fence.holder} does not hold lease {fence.name!r}"
                + (f" with epoch {epoch}" if epoch is not None else "")
                + " (another replica leads)"
            )
        return epoch

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

        def upsert(db: Connection) -> DeploymentRecord:
            rows = _rows(
                db,
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
            return _deployment(rows[0])

        return await self._write(upsert)

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
        params = {
            **key,
            "verdict": verdict,
            "unless": unless,
            "at": at,
            "reason": reason,
            "evidence": _dumps(evidence),
        }

        def mark(db: Connection) -> DeploymentRecord:
            db.execute(
                "UPDATE deployments SET verdict = :verdict, verdict_at = :at, "
                "verdict_reason = :reason, evidence = :evidence "
                "WHERE service = :service AND id = :id AND verdict NOT IN (:verdict, :unless)",
                params,
            )
            rows = _rows(db, "SELECT * FROM deployments WHERE service = :service AND id = :id", key)
            if not rows:
                raise StoreError(
                    f"cannot mark deployment {id} of {service} {verdict}: it was never recorded "
                    "(upsert_deployment first)"
                )
            return _deployment(rows[0])

        return await self._write(mark)

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

        def read(db: Connection) -> DeploymentRecord | None:
            rows = _rows(
                db,
                "SELECT * FROM deployments WHERE service = :service AND id = :id",
                {"service": service, "id": id},
            )
            return _deployment(rows[0]) if rows else None

        return await self._read(read)

    async def deployments(self, service: str, limit: int = 50) -> list[DeploymentRecord]:
        """A service's deployments, newest created first."""

        def read(db: Connection) -> list[DeploymentRecord]:
            rows = _rows(
                db,
                "SELECT * FROM deployments WHERE service = :service "
                f"ORDER BY created_at DESC, id{self._BY_CODE_POINT} DESC LIMIT :limit",
                {"service": service, "limit": limit},
            )
            return [_deployment(row) for row in rows]

        return await self._read(read)

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
        event: StartedEvent | None = None,
        attempt: bool = False,
    ) -> RollbackRecord:
        """Write the intent (or the dry run); StoreError if one is already in progress.

        ``event``: an event recorded in the same transaction, made from the new record.
        ``attempt``: count the first mutation attempt with it (the caller sends it at once).
        """
        if trigger not in ("auto", "manual"):
            raise ValueError(f"unknown rollback trigger {trigger!r} (auto or manual)")
        stored_evidence = _dumps(evidence)
        params = {
            "service": service,
            "from_deployment": from_deployment,
            "to_deployment": to_deployment,
            "trigger": trigger,
            "actor": actor,
            "rule": rule,
            "reason": reason,
            "evidence": stored_evidence,
            "dry_run": dry_run,
            "state": "dry_run" if dry_run else "intent",
            "decided_at": decided_at,
            "finished_at": decided_at if dry_run else None,
            "attempts": 1 if attempt and not dry_run else 0,
            "attempted_at": decided_at if attempt and not dry_run else None,
        }

        fenced = self._fence_now()

        def begin(db: Connection) -> RollbackRecord:
            epoch = self._fenced(db, fenced, f"a rollback of {service}")
            # ON CONFLICT on the partial unique index, not a failed INSERT caught: PostgreSQL
            # would abort the whole batch's transaction, and a savepoint costs two round trips.
            # No RETURNING *: each SQLite call hands the GIL back, so the record is built from
            # what was inserted (the columns not named keep their NULL defaults).
            new_id = _insert_id(
                db,
                f"""
                INSERT INTO rollbacks (service, from_deployment, to_deployment, trigger,
                    actor, rule, reason, evidence, dry_run, state, decided_at, finished_at,
                    attempts, attempted_at, epoch)
                VALUES (:service, :from_deployment, :to_deployment, :trigger,
                    :actor, :rule, :reason, :evidence, :dry_run, :state, :decided_at,
                    :finished_at, :attempts, :attempted_at, :epoch)
                ON CONFLICT (service) WHERE {_UNFINISHED_SQL} DO NOTHING
                """,
                {**params, "epoch": epoch},
            )
            if new_id is None:
                running = _rows(
                    db,
                    f"SELECT id FROM rollbacks WHERE service = :service AND {_UNFINISHED_SQL}",
                    {"service": service},
                )
                which = f" (#{running[0]['id']})" if running else ""
                raise StoreError(f"a rollback of {service} is already in progress{which}")
            counted = attempt and not dry_run
            record = RollbackRecord(
                id=new_id,
                service=service,
                from_deployment=from_deployment,
                to_deployment=to_deployment,
                trigger=trigger,
                actor=actor,
                rule=rule,
                reason=reason,
                evidence=json.loads(stored_evidence),  # as a read would give it back
                dry_run=dry_run,
                state="dry_run" if dry_run else "intent",
                new_deployment=None,
                decided_at=decided_at,
                sent_at=None,
                deploying_at=None,
                live_at=None,
                recovered_at=None,
                finished_at=decided_at if dry_run else None,
                error=None,
                attempts=1 if counted else 0,
                attempted_at=decided_at if counted else None,
                epoch=epoch,
            )
            if event is not None:
                kind, data = event(record)
                _insert_event(db, service, kind, decided_at, data)
            return record

        return await self._write(begin)

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

        def advance(db: Connection) -> RollbackRecord:
            rows = _rows(db, "SELECT * FROM rollbacks WHERE id = :id", {"id": id})
            if not rows:
                raise StoreError(f"no rollback #{id}")
            current = _rollback(rows[0])
            target = check_transition(
                current, state, new_deployment=new_deployment, live_at=live_at
            )
            columns = transition_columns(current, target, at, live_at)
            # Column names come from transition_columns' fixed set, never from the caller.
            assignments = "".join(f", {name} = :{name}" for name in columns)
            rows = _rows(
                db,
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
            return _rollback(rows[0])

        return await self._write(advance)

    async def note_attempt(self, id: int, at: float) -> RollbackRecord:
        """Count one more mutation for an intent, before it is sent (the write-ahead)."""

        fenced = self._fence_now()

        def note(db: Connection) -> RollbackRecord:
            self._fenced(db, fenced, f"mutation for rollback #{id}")
            rows = _rows(
                db,
                "UPDATE rollbacks SET attempts = attempts + 1, attempted_at = :at "
                "WHERE id = :id AND state = 'intent' RETURNING *",
                {"id": id, "at": at},
            )
            if not rows:
                raise StoreError(f"rollback #{id} is not an intent: no mutation may be sent for it")
            return _rollback(rows[0])

        return await self._write(note)

    async def rollback(self, id: int) -> RollbackRecord | None:
        """One rollback, or None."""

        def read(db: Connection) -> RollbackRecord | None:
            rows = _rows(db, "SELECT * FROM rollbacks WHERE id = :id", {"id": id})
            return _rollback(rows[0]) if rows else None

        return await self._read(read)

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
        sql = (
            f"SELECT * FROM rollbacks WHERE {' AND '.join(where)} "
            "ORDER BY decided_at DESC, id DESC LIMIT :limit"
        )
        params = {"service": service, "since": since, "limit": limit}
        return await self._read(lambda db: [_rollback(row) for row in _rows(db, sql, params)])

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

    async def service_records(
        self, service: str, now: float, *, deployments: int = 200, rollbacks: int = 20
    ) -> ServiceRecords:
        """A service's newest deployments and rollbacks and its freeze at ``now``, in one read."""
        key = {"service": service, "now": now}

        def read(db: Connection) -> ServiceRecords:
            records = _rows(
                db,
                "SELECT * FROM deployments WHERE service = :service "
                f"ORDER BY created_at DESC, id{self._BY_CODE_POINT} DESC LIMIT :limit",
                {**key, "limit": deployments},
            )
            freezes = _rows(
                db,
                "SELECT * FROM freezes WHERE service = :service "
                "AND (until IS NULL OR until > :now)",
                key,
            )
            recent = _rows(
                db,
                "SELECT * FROM rollbacks WHERE service = :service "
                "ORDER BY decided_at DESC, id DESC LIMIT :limit",
                {**key, "limit": rollbacks},
            )
            return ServiceRecords(
                records=tuple(_deployment(row) for row in records),
                frozen=_freeze(freezes[0]) if freezes else None,
                rollbacks=tuple(_rollback(row) for row in recent),
            )

        return await self._read(read)

    # -- rule pending state

    async def save_rule_state(
        self, service: str, rule: str, state: Mapping[str, Any], at: float
    ) -> None:
        """Keep one rule's state (``RuleState.to_dict()``) for one service."""
        params = {"service": service, "rule": rule, "state": _dumps(state), "at": at}

        def save(db: Connection) -> None:
            db.execute(
                "INSERT INTO rule_states (service, rule, state, updated_at) "
                "VALUES (:service, :rule, :state, :at) "
                "ON CONFLICT (service, rule) DO UPDATE SET "
                "state = excluded.state, updated_at = excluded.updated_at",
                params,
            )

        await self._write(save)

    async def rule_states(self, service: str) -> dict[str, dict[str, Any]]:
        """Every saved rule state of a service, by rule name."""
        rows = await self._fetch(
            "SELECT rule, state FROM rule_states WHERE service = :service "
            f"ORDER BY rule{self._BY_CODE_POINT}",
            {"service": service},
        )
        return {row["rule"]: json.loads(row["state"]) for row in rows}

    async def delete_rule_state(self, service: str, rule: str) -> None:
        """Forget one rule's state (a rule removed from the config)."""
        params = {"service": service, "rule": rule}
        await self._write(
            lambda db: db.execute(
                "DELETE FROM rule_states WHERE service = :service AND rule = :rule", params
            )
        )

    # -- freezes

    async def freeze(
        self, service: str, reason: str, actor: str, at: float, until: float | None = None
    ) -> FreezeRecord:
        """Hold automatic rollback of ``service`` back; replaces an existing freeze."""
        params = {"service": service, "reason": reason, "actor": actor, "at": at, "until": until}
        sql = (
            "INSERT INTO freezes (service, reason, actor, at, until) "
            "VALUES (:service, :reason, :actor, :at, :until) "
            "ON CONFLICT (service) DO UPDATE SET reason = excluded.reason, "
            "actor = excluded.actor, at = excluded.at, until = excluded.until "
            "RETURNING *"
        )
        return await self._write(lambda db: _freeze(_rows(db, sql, params)[0]))

    async def unfreeze(self, service: str) -> FreezeRecord | None:
        """Lift the freeze; returns what was removed (None if there was none)."""

        def lift(db: Connection) -> FreezeRecord | None:
            rows = _rows(
                db, "DELETE FROM freezes WHERE service = :service RETURNING *", {"service": service}
            )
            return _freeze(rows[0]) if rows else None

        return await self._write(lift)

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
            "SELECT * FROM freezes WHERE until IS NULL OR until > :now "
            f"ORDER BY service{self._BY_CODE_POINT}",
            {"now": now},
        )
        return [_freeze(row) for row in rows]

    # -- events

    async def record_event(
        self, service: str | None, kind: str, at: float, data: Mapping[str, Any]
    ) -> int:
        """Append to the decision trail; returns the event's id."""
        return await self._write(lambda db: _insert_event(db, service, kind, at, data))

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
        sql = (
            f"SELECT * FROM events WHERE {' AND '.join(where)} "
            "ORDER BY at DESC, id DESC LIMIT :limit"
        )
        return await self._read(lambda db: [_event(row) for row in _rows(db, sql, params)])


if TYPE_CHECKING:
    _conforms: type[Store] = SqlStore  # mypy proves SQLiteStore implements Store
