"""The Store on PostgreSQL (``DATABASE_URL``): several replicas share it, one leads.

The SQL and the jobs are :mod:`monitor.store.sql`'s, shared with SQLite; psycopg runs them
on the store's own thread (:mod:`monitor.store.pg`). What differs: the server's errors,
the lease row share-locked by every fenced write (``FOR SHARE``: no takeover commits between
the check and the write); migrations (:mod:`monitor.store.schema`) are serialized across
replicas starting at once.
"""

from __future__ import annotations

import psycopg

from monitor.errors import StoreError
from monitor.redact import redact_database_url
from monitor.store.db import Connection, Database
from monitor.store.pg import PgConnection, PgDriver
from monitor.store.schema import migrate
from monitor.store.sql import SqlStore

HINT = (
    "check DATABASE_URL (postgresql://user:password@host:port/database) and that the "
    "server is up and reachable from this service"
)


class PostgresStore(SqlStore):
    """The :class:`~monitor.store.Store` on PostgreSQL; open it with ``open_store``."""

    _LOCK_FOR_SHARE = " FOR SHARE"
    _BY_CODE_POINT = ' COLLATE "C"'

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect, and migrate the schema (StoreError naming the server if it cannot)."""
        driver = PgDriver(url)
        try:
            db = await Database.connect(driver)
        except psycopg.Error as e:
            raise StoreError(f"{redact_database_url(url)}: cannot connect: {e}; {HINT}") from e
        store = cls(driver.label, db)

        def setup(connection: Connection) -> tuple[int, tuple[int, ...]]:
            assert isinstance(connection, PgConnection)
            return migrate(connection.connection, "postgresql", driver.label)

        return await store._set_up(setup)
