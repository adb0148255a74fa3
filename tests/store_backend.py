"""The whole suite on PostgreSQL: ``pytest --store=postgres`` (or RAILGUARD_TEST_STORE=postgres).

Every store a test opens, directly or through a daemon (in this process or a child: via
``DATABASE_URL``), is then a PostgreSQL one: a schema of its own in a database of this
worker's, so a test that opens the same file twice (a restart) finds what it left there, and
two files are two stores. Tests about SQLite itself are marked ``sqlite_only`` and skipped.

A test that never opens a store runs the same on both backends, so running it twice proves
nothing: every SQLite run notes, per test, whether it opened one (in this process, or a
daemon in a child, whose SQLite file appears under the test's tmp_path) in ``.pytest_cache``,
and a PostgreSQL run leaves out the tests last seen opening none (a test never seen runs;
``--store-all`` runs every one).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.postgres import FAST_COMMITS

SERVER = os.environ.get("RAILGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=("sqlite", "postgres"),
        default=os.environ.get("RAILGUARD_TEST_STORE", "sqlite"),
        help="the store backend every test runs on (default: sqlite)",
    )
    parser.addoption(
        "--store-all",
        action="store_true",
        help="with --store=postgres: every test, not only those the SQLite pass saw open a store",
    )


def _record(config: pytest.Config) -> Path:
    return config.rootpath / ".pytest_cache" / "railguard-store-tests"


def _seen(record: Path) -> dict[str, bool]:
    """Whether each test was last seen opening a store."""
    seen: dict[str, bool] = {}
    if record.is_file():
        for line in record.read_text().splitlines():
            opened, _, nodeid = line.partition(" ")
            seen[nodeid] = opened == "1"
    return seen


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.getoption("--store") == "sqlite" and not hasattr(config, "workerinput"):
        record = _record(config)  # appended to by every run: kept to its latest lines
        record.parent.mkdir(parents=True, exist_ok=True)
        if record.is_file() and record.stat().st_size > 2_000_000:
            record.write_text("".join(f"{int(o)} {n}\n" for n, o in _seen(record).items()))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about the SQLite file itself")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--store") != "postgres":
        return
    skip = pytest.mark.skip(reason="about the SQLite file itself (--store=postgres)")
    for item in items:
        if "sqlite_only" in item.keywords:
            item.add_marker(skip)
    if config.getoption("--store-all"):
        return
    seen = _seen(_record(config))
    keep = [item for item in items if seen.get(item.nodeid, True)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if not seen.get(i.nodeid, True)])
        if not hasattr(config, "workerinput"):
            print(
                f"--store=postgres: {len(items) - len(keep)} tests left out, last seen on "
                "SQLite opening no store (--store-all runs them too)",
                file=sys.stderr,
            )
        items[:] = keep


class Schemas:
    """This worker's database on the server, and a schema in it per store a test opens."""

    def __init__(self, server: str) -> None:
        import psycopg

        self.server = server
        self.database = f"railguard_suite_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{self.database}"')
            admin.execute(f'ALTER DATABASE "{self.database}" {FAST_COMMITS}')
        self.base = server.rsplit("/", 1)[0] + "/" + self.database
        self._numbers = itertools.count(1)
        self.by_path: dict[str, str] = {}

    def url(self, path: Path | str) -> str:
        """The URL of the store at ``path`` (a new schema the first time it is asked for)."""
        import psycopg

        key = str(path)
        if key == ":memory:" or key not in self.by_path:
            schema = f"s{next(self._numbers)}"
            with psycopg.connect(self.base, autocommit=True) as db:
                db.execute(f'CREATE SCHEMA "{schema}"')
            url = f"{self.base}?options={quote(f'-c search_path={schema}')}"
            if key == ":memory:":
                return url
            self.by_path[key] = url
        return self.by_path[key]

    def forget(self) -> None:
        self.by_path.clear()

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _schemas(request: pytest.FixtureRequest) -> Iterator[Schemas | None]:
    if request.config.getoption("--store") != "postgres":
        yield None
        return
    try:
        schemas = Schemas(SERVER)
    except Exception as e:  # psycopg.OperationalError: no server there
        reason = f"--store=postgres needs PostgreSQL at {SERVER} ({e})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run starts it")
        pytest.skip(reason)
    try:
        yield schemas
    finally:
        schemas.drop()


@pytest.fixture(autouse=True)
def _store_backend(
    _schemas: Schemas | None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    if _schemas is None:
        yield from _noting_stores(monkeypatch, tmp_path, request)
        return
    from monitor.store.postgres import PostgresStore
    from monitor.store.sqlite import SQLiteStore

    schemas = _schemas

    async def open_on_postgres(cls: type[SQLiteStore], path: Path) -> PostgresStore:
        return await PostgresStore.open(schemas.url(path))

    monkeypatch.setattr(SQLiteStore, "open", classmethod(open_on_postgres))
    # A daemon in a child process keeps its state at RAILGUARD_STATE (conftest): the same store.
    monkeypatch.setenv("DATABASE_URL", schemas.url(tmp_path / "railguard-state.db"))
    try:
        yield
    finally:
        schemas.forget()


def _noting_stores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[None]:
    """The SQLite pass: note the test if it opened a store (see the module's docstring)."""
    from monitor.store.sqlite import SQLiteStore

    opened = False
    original = SQLiteStore.open.__func__  # type: ignore[attr-defined]

    async def noting(cls: type[SQLiteStore], path: Path) -> SQLiteStore:
        nonlocal opened
        opened = True
        return await original(cls, path)  # type: ignore[no-any-return]

    monkeypatch.setattr(SQLiteStore, "open", classmethod(noting))
    yield
    opened = opened or any(tmp_path.rglob("*.db"))
    with contextlib.suppress(OSError), _record(request.config).open("a") as record:
        record.write(f"{int(opened)} {request.node.nodeid}\n")
