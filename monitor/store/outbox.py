"""The alert outbox and the event cursor, kept in the same SQLite store (migration 2).

Every notification for every channel is a row before anything is sent: a channel outage or a
restart delays a message, never loses it. ``(channel, message_id)`` is unique, so routing an
event twice (after a restart) queues it once. Cursors remember how far the router has read
the event log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from monitor.errors import StoreError
from monitor.store import EventRecord, Fence
from monitor.store.db import Connection, Row

R = TypeVar("R")

OutboxState = Literal["pending", "sent", "failed"]


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One notification for one channel, and how its delivery goes."""

    id: int
    channel: str
    message_id: str
    payload: Mapping[str, Any]
    state: OutboxState
    attempts: int
    created_at: float
    next_at: float
    sent_at: float | None
    last_error: str | None
    claimed_epoch: int | None = None  # the lease epoch of the last claim (None: no lease)
    claimed_at: float | None = None  # when it was last claimed to be sent


def _outbox(row: Row) -> OutboxRecord:
    values = {key: row[key] for key in row.keys()}  # noqa: SIM118  (Row is no Mapping)
    values["payload"] = json.loads(values["payload"])
    return OutboxRecord(**values)


class OutboxStore:
    """Outbox and cursor methods of the SQLite store (mixed into SQLiteStore)."""

    async def _write(self, job: Callable[[Connection], R]) -> R:
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        raise NotImplementedError

    def _fence_now(self) -> tuple[Fence, int | None] | None:
        raise NotImplementedError

    def _fenced(
        self, db: Connection, fenced: tuple[Fence, int | None] | None, what: str
    ) -> int | None:
        raise NotImplementedError

    async def enqueue(
        self, channel: str, message_id: str, payload: Mapping[str, Any], at: float
    ) -> bool:
        """Queue a message for a channel; False if that message was queued before."""
        params = {
            "channel": channel,
            "message_id": message_id,
            "payload": json.dumps(payload, sort_keys=True),
            "at": at,
        }
        sql = (
            "INSERT INTO outbox (channel, message_id, payload, state, attempts, created_at, "
            "next_at) VALUES (:channel, :message_id, :payload, 'pending', 0, :at, :at) "
            "ON CONFLICT (channel, message_id) DO NOTHING"
        )
        return await self._write(lambda db: db.execute(sql, params).rowcount == 1)

    async def outbox_head(self, channel: str) -> OutboxRecord | None:
        """The oldest pending message of a channel: messages go out in order."""
        rows = await self._fetch(
            "SELECT * FROM outbox WHERE channel = :channel AND state = 'pending' "
            "ORDER BY id LIMIT 1",
            {"channel": channel},
        )
        return _outbox(rows[0]) if rows else None

    async def outbox_claim(self, id: int, at: float) -> OutboxRecord:
        """Claim a pending message right before it is sent, under the fence (see Store)."""

        fenced = self._fence_now()

        def claim(db: Connection) -> OutboxRecord:
            epoch = self._fenced(db, fenced, f"outbox message #{id}")
            rows = db.execute(
                "UPDATE outbox SET claimed_epoch = :epoch, claimed_at = :at "
                "WHERE id = :id AND state = 'pending' RETURNING *",
                {"id": id, "epoch": epoch, "at": at},
            ).fetchall()
            if not rows:
                raise StoreError(f"outbox message #{id} is not pending: it cannot be claimed")
            return _outbox(rows[0])

        return await self._write(claim)

    async def outbox_done(
        self, id: int, state: OutboxState, at: float, error: str | None = None
    ) -> None:
        """A message was delivered (sent) or given up (failed)."""
        params = {"id": id, "state": state, "sent_at": at if state == "sent" else None}
        sql = (
            "UPDATE outbox SET state = :state, attempts = attempts + 1, sent_at = :sent_at, "
            "last_error = COALESCE(:error, last_error) WHERE id = :id"
        )
        await self._write(lambda db: db.execute(sql, {**params, "error": error}))

    async def outbox_retry(self, id: int, next_at: float, error: str) -> None:
        """A delivery attempt failed; try again at ``next_at``."""
        params = {"id": id, "next_at": next_at, "error": error}
        sql = (
            "UPDATE outbox SET attempts = attempts + 1, next_at = :next_at, "
            "last_error = :error WHERE id = :id"
        )
        await self._write(lambda db: db.execute(sql, params))

    async def outbox(
        self, channel: str | None = None, state: OutboxState | None = None, limit: int = 200
    ) -> list[OutboxRecord]:
        """Messages newest first, optionally of one channel and state."""
        where = ["1 = 1"]
        if channel is not None:
            where.append("channel = :channel")
        if state is not None:
            where.append("state = :state")
        rows = await self._fetch(
            f"SELECT * FROM outbox WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :limit",
            {"channel": channel, "state": state, "limit": limit},
        )
        return [_outbox(row) for row in rows]

    async def outbox_pending(self) -> dict[str, int]:
        """Pending messages per channel."""
        rows = await self._fetch(
            "SELECT channel, COUNT(*) AS n FROM outbox WHERE state = 'pending' GROUP BY channel",
            {},
        )
        return {str(row["channel"]): int(row["n"]) for row in rows}

    async def events_after(self, last_id: int, limit: int = 500) -> list[EventRecord]:
        """Events with an id above ``last_id``, oldest first (the router's tail)."""
        rows = await self._fetch(
            "SELECT * FROM events WHERE id > :last ORDER BY id LIMIT :limit",
            {"last": last_id, "limit": limit},
        )
        return [
            EventRecord(
                id=row["id"],
                service=row["service"],
                kind=row["kind"],
                at=row["at"],
                data=json.loads(row["data"]),
            )
            for row in rows
        ]

    async def cursor(self, name: str) -> str | None:
        """A saved position (how far a reader got)."""
        rows = await self._fetch("SELECT value FROM cursors WHERE name = :name", {"name": name})
        return str(rows[0]["value"]) if rows else None

    async def set_cursor(self, name: str, value: str) -> None:
        """Save a position."""
        params = {"name": name, "value": value}
        sql = (
            "INSERT INTO cursors (name, value) VALUES (:name, :value) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        )
        await self._write(lambda db: db.execute(sql, params))
