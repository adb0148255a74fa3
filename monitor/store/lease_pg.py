"""The leader lease in PostgreSQL: one row per lease, claimed under a row lock.

A replica's look is one transaction: the row is created if missing, locked (``FOR UPDATE``,
so replicas looking at once take turns and two cannot both take an expired lease), judged by
:func:`monitor.lease.claim` against the database's own clock, and rewritten. The replica's
:class:`~monitor.lease.Leadership` then says whether it may act, by its own monotonic clock
from when the look began; a look that fails leaves the view to run out by itself, so a
leader cut off from PostgreSQL stops acting before its lease can be taken.

The ``leases`` table comes with the store's migrations (version 5); :data:`SCHEMA` creates it
for a lease used on its own (a database without railguard's store).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from monitor.clock import Clock
from monitor.errors import StoreError
from monitor.lease import Leadership, LeaseRow, LeaseTerms, claim

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)
"""

Connection = psycopg.AsyncConnection[Any]
Connect = Callable[[], Awaitable[Connection]]
DatabaseTime = Callable[[Connection], Awaitable[float]]

# What a look can meet from the server or the driver (a killed backend surfaces as any of
# them, by timing): a failed look, never an exception out of the loop that looks.
DATABASE_ERRORS = (OSError, TimeoutError, psycopg.Error)

CONNECT_TIMEOUT = 5  # seconds: a look must answer well within a renewal


def connector(dsn: str, *, timeout: int = CONNECT_TIMEOUT) -> Connect:
    """A new connection per look, in autocommit (each look is its own transaction block)."""

    async def connect() -> Connection:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=timeout)

    return connect


async def server_time(connection: Connection) -> float:
    """The database's clock (Unix seconds): one clock for every replica, whatever theirs say."""
    cursor = await connection.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
    row = await cursor.fetchone()
    assert row is not None
    return float(row[0])


class PgLease:
    """One replica's hold on one lease (:class:`~monitor.lease.Lease`)."""

    def __init__(
        self,
        connect: Connect,
        me: str,
        *,
        clock: Clock,
        terms: LeaseTerms | None = None,
        name: str = "leader",
        database_time: DatabaseTime = server_time,
    ) -> None:
        self.connect = connect
        self.me = me
        self.clock = clock
        self.terms = terms or LeaseTerms()
        self.name = name
        self.database_time = database_time
        self.view = Leadership()
        self.holder: str | None = None  # who held the lease at the last look that answered
        self.last_error: str | None = None
        self._table = False  # the table is known to exist (the store's migration, or ours)

    async def look(self) -> Leadership:
        """Claim, renew or follow, once; the replica's view afterwards."""
        started = self.clock.monotonic()
        try:
            # Bounded: a network that drops packets must not hold the lease loop for ever.
            async with asyncio.timeout(self.terms.ttl):
                row, written = await self._claim()
        except DATABASE_ERRORS as e:
            self.last_error = f"{type(e).__name__}: {e}".strip()
            self.view = self.view.failed()
            return self.view
        self.last_error = None
        self.holder = (written or row).holder
        self.view = self.view.after(written, self.me, started, self.terms)
        return self.view

    async def _claim(self) -> tuple[LeaseRow, LeaseRow | None]:
        """The row as read, and what this replica wrote (None: it follows)."""
        connection = await self.connect()
        try:
            if not self._table:
                await connection.execute(SCHEMA)
                self._table = True
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO leases (name, holder, epoch, expires_at) "
                    "VALUES (%s, NULL, 0, 0) ON CONFLICT (name) DO NOTHING",
                    (self.name,),
                )
                cursor = await connection.execute(
                    "SELECT holder, epoch, expires_at FROM leases WHERE name = %s FOR UPDATE",
                    (self.name,),
                )
                found = await cursor.fetchone()
                if found is None:  # pragma: no cover - inserted just above, in this transaction
                    raise StoreError(f"lease {self.name!r} vanished")
                now = await self.database_time(connection)
                held = LeaseRow(found[0], int(found[1]), float(found[2]))
                written = claim(held, self.me, now, self.terms, self.view.epoch)
                if written is not None:
                    await connection.execute(
                        "UPDATE leases SET holder = %s, epoch = %s, expires_at = %s "
                        "WHERE name = %s",
                        (written.holder, written.epoch, written.expires_at, self.name),
                    )
                return held, written
        finally:
            with contextlib.suppress(*DATABASE_ERRORS):  # broken already: nothing to say
                await connection.close()

    async def release(self) -> None:
        """Give the lease up if this replica holds it with the epoch it acted under: it
        expires now, and a standby takes it at its next look (a new epoch, as ever)."""
        epoch, self.view = self.view.epoch, Leadership()
        if epoch is None:
            return
        try:
            async with asyncio.timeout(self.terms.renew_every):
                connection = await self.connect()
                try:
                    await connection.execute(
                        "UPDATE leases SET expires_at = 0 "
                        "WHERE name = %s AND holder = %s AND epoch = %s",
                        (self.name, self.me, epoch),
                    )
                finally:
                    with contextlib.suppress(*DATABASE_ERRORS):
                        await connection.close()
        except DATABASE_ERRORS as e:  # it expires by itself
            self.last_error = f"{type(e).__name__}: {e}".strip()

    async def holds(self, connection: Connection) -> bool:
        """Inside the caller's transaction: whether this replica still holds the lease with
        the epoch it acts under (the fence every intent and outbox claim is checked against).
        The row is share-locked, so no takeover commits between the check and the caller's
        commit."""
        if self.view.epoch is None:
            return False
        cursor = await connection.execute(
            "SELECT 1 FROM leases WHERE name = %s AND holder = %s AND epoch = %s FOR SHARE",
            (self.name, self.me, self.view.epoch),
        )
        return await cursor.fetchone() is not None
