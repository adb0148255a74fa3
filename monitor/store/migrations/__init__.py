"""The store's schema as Alembic revisions (``versions/``), one definition for SQLite and
PostgreSQL alike.

Imported only when a database needs upgrading (:func:`monitor.store.schema.migrate` reads the
version with plain SQL first): SQLAlchemy and Alembic serve migrations only, and the store's
own statements go to the driver directly.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

ERRORS = (SQLAlchemyError,)  # what a failed revision raises out of upgrade()

# Alembic's ``context`` and ``op`` are module globals: one upgrade at a time in a process.
_ONE_AT_A_TIME = threading.Lock()


def upgrade(
    connection: Any, url: str, begin: str, scripts: Path, adopt: int | None
) -> tuple[int, ...]:
    """Bring the database on ``connection`` to the newest revision; returns those applied.

    ``connection`` is the store's DB-API connection, in autocommit mode and out of any
    transaction, and is left so. ``url`` names the dialect (``sqlite://``); ``begin`` is the
    statement that opens each revision's transaction. ``adopt``: the version the old runner's
    ``schema_migrations`` records, for a database it made (Alembic takes it over from there).
    """
    config = Config()
    config.set_main_option("script_location", str(scripts))
    applied: list[int] = []

    def note(*, step: MigrationInfo, **_: Any) -> None:
        applied.append(int(step.up_revision_id or 0))

    def begin_transaction(sa_connection: Connection) -> None:
        # Autocommit drivers begin nothing by themselves: without this, each statement of a
        # revision would commit alone (and SQLite's DDL is transactional only when asked).
        sa_connection.exec_driver_sql(begin)

    lent = _Lent(connection) if isinstance(connection, sqlite3.Connection) else connection
    engine = create_engine(url, creator=lambda: lent, poolclass=StaticPool)
    event.listen(engine, "begin", begin_transaction)
    with engine.connect() as sa_connection:
        if adopt is not None:
            with sa_connection.begin():  # one transaction: adopted, or left to the old runner
                if adopt:
                    context = MigrationContext.configure(sa_connection)
                    context.stamp(ScriptDirectory.from_config(config), f"{adopt:04d}")
                sa_connection.exec_driver_sql("DROP TABLE schema_migrations")
        config.attributes.update(connection=sa_connection, on_version_apply=note)
        with _ONE_AT_A_TIME:
            command.upgrade(config, "head")
    # No engine.dispose(): it would close the store's connection. (SQLAlchemy's psycopg dialect
    # leaves a notice handler on it, which logs to the "sqlalchemy" logger at INFO.)
    return tuple(applied)


class _Lent:
    """The store's SQLite connection as lent to SQLAlchemy, less create_function: its pysqlite
    dialect would add regexp() and floor() (an int-returning floor, in place of SQLite's own)
    for the connection's life, and Python 3.11's sqlite3 cannot take a function back."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Not lent (see the class)."""


def describe(scripts: Path, version: int) -> str:
    """What revision ``version`` does: the first line of its docstring."""
    script = ScriptDirectory(str(scripts)).get_revision(f"{version:04d}")
    return script.doc if script is not None else "unknown"


def reason(error: Exception) -> str:
    """The driver's words for a failure, without SQLAlchemy's statement dump."""
    return str(error.orig) if isinstance(error, DBAPIError) else str(error)
