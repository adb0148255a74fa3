"""PostgreSQL for the store's thread: psycopg's connection speaking the jobs' SQL.

The jobs of :mod:`monitor.store.sql` call ``db.execute(sql, {"name": ...})`` with SQLite's
named parameters (``:name``) and read rows by column name or position. :class:`PgConnection`
turns each text into psycopg's (``%(name)s``) once, and gives rows back read in full, so a
job is the same function on both backends. psycopg (sync) runs on the store's own thread,
which hands the GIL back while it waits on the network, like sqlite3 does on the disk.

The connection is in autocommit mode: the database thread says BEGIN and COMMIT itself, the
same statements as on SQLite. Timeouts keep a dead server from holding the thread for ever:
a statement gives up after ``STATEMENT_TIMEOUT``, and TCP keepalives find a vanished peer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from monitor.redact import redact_database_url, scrub_database_url
from monitor.store.db import Connection

# Named parameters outside of string literals and casts (``::type``): the jobs' SQL has no
# literal with a colon in it, and no cast.
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

STATEMENT_TIMEOUT_MS = 15_000
CONNECT_TIMEOUT_S = 10


@lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``:name`` -> ``%(name)s`` (and a literal ``%`` doubled), once per text."""
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


class PgRow:
    """One row by column name or position, like ``sqlite3.Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: Mapping[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)


class PgResult:
    """A statement's outcome, read in full: nothing is left open on the server."""

    __slots__ = ("_rows", "rowcount")

    lastrowid: int | None = None  # PostgreSQL says it with RETURNING id

    def __init__(self, rows: list[PgRow], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchall(self) -> list[PgRow]:
        return self._rows

    def close(self) -> None:
        """Nothing to close: the rows were read already."""


class PgConnection:
    """psycopg's connection, speaking the jobs' SQL (see the module's docstring)."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> PgResult:
        if parameters:
            cursor = self.connection.execute(translate(sql), parameters)
        else:  # no parameters: the text goes as it is (several statements allowed)
            cursor = self.connection.execute(sql)
        try:
            if sql == "COMMIT" and cursor.statusmessage == "ROLLBACK":
                # A statement failed and its error was caught: PostgreSQL aborted the whole
                # transaction (SQLite undoes the statement alone), and says so only here.
                raise psycopg.errors.InFailedSqlTransaction(
                    "the transaction was rolled back, not committed: a statement in it failed"
                )
            rows: list[PgRow] = []
            if cursor.description is not None:
                index = {column.name: i for i, column in enumerate(cursor.description)}
                rows = [PgRow(values, index) for values in cursor.fetchall()]
            return PgResult(rows, cursor.rowcount)
        finally:
            cursor.close()

    def executemany(self, sql: str, parameters: Sequence[Mapping[str, Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(translate(sql), parameters)

    @property
    def usable(self) -> bool:
        return not (self.connection.closed or self.connection.broken)

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self.connection.close()


class PgDriver:
    """A PostgreSQL server at ``url`` (``postgresql://user:password@host:port/database``)."""

    begin = "BEGIN"

    def __init__(self, url: str, *, application_name: str = "railguard") -> None:
        self.url = url
        self.label = redact_database_url(url)
        self.application_name = application_name

    def connect(self) -> Connection:
        try:
            return self._connect()
        except psycopg.Error as e:  # its message may quote the password: scrubbed
            raise type(e)(scrub_database_url(str(e), self.url)) from None
        except UnicodeEncodeError:  # a lone surrogate: libpq takes UTF-8 only
            raise psycopg.ProgrammingError("the URL is not valid UTF-8") from None

    def _connect(self) -> Connection:
        given = conninfo_to_dict(self.url)
        # The URL's own settings win: of two -c for one setting the server takes the last,
        # so its options go after ours.
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_MS} {given.get('options') or ''}"
        settings: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": self.application_name,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        conninfo = make_conninfo(self.url, **{**settings, **given, "options": options.strip()})
        return PgConnection(psycopg.connect(conninfo, autocommit=True))

    def is_error(self, error: BaseException) -> bool:
        return isinstance(error, psycopg.Error)

    def usable(self, connection: Connection) -> bool:
        assert isinstance(connection, PgConnection)
        return connection.usable

    def close(self, connection: Connection) -> None:
        assert isinstance(connection, PgConnection)
        connection.close()
