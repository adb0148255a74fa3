"""The Store on one SQLite file: WAL, ``synchronous=FULL``, versioned schema, group commit.

The default backend (a Railway volume at /data): one replica, no server to run. The SQL and
the jobs are :mod:`monitor.store.sql`'s, shared with PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from monitor.errors import StoreError
from monitor.store.db import Database, SQLiteDriver
from monitor.store.schema import HINT, configure, migrate
from monitor.store.sql import SqlStore


class SQLiteStore(SqlStore):
    """The :class:`~monitor.store.Store` on a SQLite file; open it with ``open_store``."""

    def __init__(self, path: Path, db: Database) -> None:
        super().__init__(str(path), db)
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        """Open, configure and migrate the database at ``path`` (StoreError if it cannot)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await Database.connect(SQLiteDriver(path))
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{path}: cannot open the state database: {e}; {HINT}") from e
        store = cls(path, db)

        def setup(connection: sqlite3.Connection) -> tuple[int, tuple[int, ...]]:
            configure(connection, path)
            return migrate(connection, "sqlite", str(path))

        return await store._set_up(setup)
