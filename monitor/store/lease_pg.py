"""The leader lease in PostgreSQL: one row per lease, claimed under a row lock.

A replica's look is one transaction: the row is created if missing, locked (``FOR UPDATE``,
so replicas looking at once take turns and two cannot both take an expired lease), judged by
:func:`monitor.lease.claim` against the database's own clock, and rewritten. The replica's
:class:`~monitor.lease.Leadership` then says whether it may act, by its own monotonic clock
from when the look began; a look that fails leaves the view to run out by itself, so a
leader cut off from PostgreSQL stops acting before its lease can be taken.

Not wired into the daemon yet (issue 14): the store on PostgreSQL comes first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

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

# What a look can meet from the server or the driver (a killed backend surfaces as any of
# them, by timing): a failed look, never an exception out of the loop that looks.
DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

DatabaseTime = Callable[[asyncpg.Connection], Awaitable[float]]


async def server_time(connection: asyncpg.Connection) -> float:
    """The database's clock (Unix seconds): one clock for every replica, whatever theirs say."""
    value = await connection.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
    return float(value)


class PgLease:
    """One replica's hold on one lease."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
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
        self.last_error: str | None = None

    async def look(self) -> Leadership:
        """Claim, renew or follow, once; the replica's view afterwards."""
        started = self.clock.monotonic()
        try:
            written = await self._claim()
        except DATABASE_ERRORS as e:
            self.last_error = f"{type(e).__name__}: {e}"
            self.view = self.view.failed()
            return self.view
        self.last_error = None
        self.view = self.view.after(written, self.me, started, self.terms)
        return self.view

    async def _claim(self) -> LeaseRow | None:
        connection = await self.connect()
        try:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO leases (name, holder, epoch, expires_at) "
                    "VALUES ($1, NULL, 0, 0) ON CONFLICT (name) DO NOTHING",
                    self.name,
                )
                row = await connection.fetchrow(
                    "SELECT holder, epoch, expires_at FROM leases WHERE name = $1 FOR UPDATE",
                    self.name,
                )
                if row is None:  # pragma: no cover - inserted just above, in this transaction
                    raise StoreError(f"lease {self.name!r} vanished")
                now = await self.database_time(connection)
                held = LeaseRow(row["holder"], int(row["epoch"]), float(row["expires_at"]))
                written = claim(held, self.me, now, self.terms)
                if written is not None:
                    await connection.execute(
                        "UPDATE leases SET holder = $2, epoch = $3, expires_at = $4 "
                        "WHERE name = $1",
                        self.name,
                        written.holder,
                        written.epoch,
                        written.expires_at,
                    )
                return written
        finally:
            try:
                await connection.close(timeout=5)
            except DATABASE_ERRORS:
                connection.terminate()  # broken already: drop it without a goodbye

    async def holds(self, connection: asyncpg.Connection) -> bool:
        """Inside the caller's transaction: whether this replica still holds the lease with
        the epoch it acts under (the fence every intent and outbox claim is checked against).
        The row is share-locked, so no takeover commits between the check and the caller's
        commit."""
        if self.view.epoch is None:
            return False
        value = await connection.fetchval(
            "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3 FOR SHARE",
            self.name,
            self.me,
            self.view.epoch,
        )
        return bool(value == 1)
