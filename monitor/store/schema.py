"""The store's schema: Alembic revisions (monitor/store/migrations/), applied in order on open.

One schema definition and one migration path for SQLite and PostgreSQL. A new schema change is
one more revision file; a released revision is never edited, since databases in the field
have already applied it. Opening an up-to-date database reads its version with plain SQL and
imports neither Alembic nor SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from monitor.errors import StoreError

if TYPE_CHECKING:
    import psycopg

SCRIPTS = Path(__file__).with_name("migrations")  # Alembic's script directory
_REVISION_FILE = re.compile(r"r(\d{4})_\w+\.py")

HINT = (
    "set RAILGUARD_STATE to a writable file, or mount a volume at /data (on Railway, a "
    "volume is owned by root: set RAILWAY_RUN_UID=0 on the service)"
)

Dialect = Literal["sqlite", "postgresql"]

_VERSION_TABLES = "('alembic_version', 'schema_migrations')"

# Held by the replica that migrates PostgreSQL, for the whole upgrade: replicas starting at
# once take turns, and the later ones find the work done. "railguar" in ASCII.
LOCK_KEY = 0x7261696C67756172


@dataclass(frozen=True, slots=True)
class _Backend:
    """What migrating differs in between the two databases."""

    driver: str  # the DB-API module, whose Error a failed read raises
    url: str  # SQLAlchemy's dialect, for Alembic
    begin: str  # opens a revision's transaction on an autocommit connection
    tables: str  # which of the version tables exist
    elsewhere: str  # how to point railguard at another database
    hint: str  # what to check when the database cannot be read
    tuples: Callable[[], Any]  # the driver's row factory for plain tuples (SQLAlchemy's need)
    lock: str | None = None
    unlock: str | None = None


_BACKENDS: dict[str, _Backend] = {
    "sqlite": _Backend(
        driver="sqlite3",
        url="sqlite://",
        begin="BEGIN IMMEDIATE",
        tables=f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN {_VERSION_TABLES}",
        elsewhere="set RAILGUARD_STATE to another file",
        hint=HINT,
        tuples=lambda: None,
    ),
    "postgresql": _Backend(
        driver="psycopg",
        url="postgresql+psycopg://",
        begin="BEGIN",
        tables="SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = current_schema() AND table_name IN {_VERSION_TABLES}",
        elsewhere="set DATABASE_URL to another database",
        hint="check DATABASE_URL, and that its user may create tables",
        tuples=lambda: importlib.import_module("psycopg.rows").tuple_row,
        lock=f"SELECT pg_advisory_lock({LOCK_KEY})",
        unlock=f"SELECT pg_advisory_unlock({LOCK_KEY})",
    ),
}


def configure(db: sqlite3.Connection, path: Path) -> None:
    """WAL, full fsync, foreign keys; StoreError if ``path`` is no usable database."""
    try:
        # PG: none of these; durability and constraints are the server's defaults.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")  # the CLI may read it meanwhile
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as e:
        raise StoreError(
            f"{path}: not a usable railguard database ({e}); move the file aside to "
            f"start afresh, or {HINT}"
        ) from e


def newest() -> int:
    """The newest schema version this railguard knows: the highest revision file's number."""
    names = (path.name for path in (SCRIPTS / "versions").iterdir())
    return max(int(match[1]) for name in names if (match := _REVISION_FILE.fullmatch(name)))


def migrate(
    connection: sqlite3.Connection | psycopg.Connection[Any], dialect: Dialect, label: str
) -> tuple[int, tuple[int, ...]]:
    """Upgrade the schema to the newest version; returns (schema version, versions applied now).

    ``connection`` is the store's, in autocommit mode (sqlite3: ``isolation_level=None``) and
    out of any transaction, and is left so. ``label`` (a path, or a URL without its password)
    names the database in a StoreError: for a database from a newer railguard, one that
    cannot be read, or a revision that failed (the database is left at the last complete one).
    """
    backend = _BACKENDS[dialect]
    with _tuples(connection, backend):
        return _migrate(connection, backend, label)


def _migrate(connection: Any, backend: _Backend, label: str) -> tuple[int, tuple[int, ...]]:
    known = newest()
    if _recorded(connection, backend, label, known) == (known, False):
        return known, ()
    from monitor.store import migrations  # Alembic and SQLAlchemy, only when there is work

    with _locked(connection, backend, label):
        # Again, under the lock: another replica may have done it meanwhile.
        current, legacy = _recorded(connection, backend, label, known)
        if (current, legacy) == (known, False):
            return known, ()
        try:
            applied = migrations.upgrade(
                connection, backend.url, backend.begin, SCRIPTS, current if legacy else None
            )
        except migrations.ERRORS as e:
            with contextlib.suppress(StoreError):
                current, _ = _recorded(connection, backend, label, known)
            failed = current + 1
            step = (
                f"migration {failed} ({migrations.describe(SCRIPTS, failed)})"
                if failed <= known
                else "taking over the old runner's record"
            )
            raise StoreError(
                f"{label}: {step} failed: {migrations.reason(e)}; the database was left at "
                f"version {current}"
            ) from e
    return known, applied


def _recorded(connection: Any, backend: _Backend, label: str, known: int) -> tuple[int, bool]:
    """The schema version the database records, and whether the old runner recorded it
    (``schema_migrations``, before Alembic); StoreError for a version this railguard lacks."""
    error: type[Exception] = importlib.import_module(backend.driver).Error
    try:
        tables = {row[0] for row in connection.execute(backend.tables).fetchall()}
        legacy = "alembic_version" not in tables and "schema_migrations" in tables
        if legacy:
            rows = connection.execute("SELECT max(version) FROM schema_migrations").fetchall()
        elif "alembic_version" in tables:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        else:
            rows = []
    except error as e:
        raise StoreError(f"{label}: cannot read the schema version: {e}; {backend.hint}") from e
    values = [str(row[0]) for row in rows if row[0] is not None]
    if not values:
        return 0, legacy
    if len(values) > 1 or not values[0].isdigit():
        raise StoreError(
            f"{label}: the database's schema is at Alembic revision {', '.join(values)}, "
            f"which is none of railguard's; {backend.elsewhere}"
        )
    current = int(values[0])
    if current > known:
        raise StoreError(
            f"{label}: the database has schema version {current}, but this railguard "
            f"knows versions up to {known}: it was written by a newer railguard. Upgrade "
            f"railguard, or {backend.elsewhere}"
        )
    return current, legacy


@contextlib.contextmanager
def _tuples(connection: Any, backend: _Backend) -> Iterator[None]:
    """Rows as plain tuples meanwhile, whatever row factory the store gave its connection."""
    kept = connection.row_factory
    connection.row_factory = backend.tuples()
    try:
        yield
    finally:
        connection.row_factory = kept


@contextlib.contextmanager
def _locked(connection: Any, backend: _Backend, label: str) -> Iterator[None]:
    """The backend's migration lock held around the block (none on SQLite: one replica)."""
    if backend.lock is None or backend.unlock is None:
        yield
        return
    error: type[Exception] = importlib.import_module(backend.driver).Error
    try:
        connection.execute(backend.lock).fetchall()
    except error as e:
        raise StoreError(f"{label}: cannot lock the schema to migrate it: {e}") from e
    try:
        yield
    finally:
        # A connection that broke meanwhile took its session's lock with it.
        with contextlib.suppress(error):
            connection.execute(backend.unlock).fetchall()
