"""The schema's Alembic revisions: fresh databases on SQLite and PostgreSQL, databases the
hand-written runner made (adopted, upgraded, rows kept), the same shape either way, refusals,
a failed revision, and replicas migrating PostgreSQL at once."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.script import ScriptDirectory
from psycopg.rows import dict_row

from monitor.clock import FakeClock
from monitor.errors import StoreError
from monitor.store import open_store
from monitor.store import schema as store_schema
from monitor.store.schema import LOCK_KEY, SCRIPTS, migrate, newest
from tests import legacy_schema

NEWEST = newest()
T0 = 1_700_000_000.0
SKIPPED = ("alembic_version", "schema_migrations")  # the version's records, not the schema


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection as the store holds one: autocommit (transactions are sent as statements)."""
    with closing(sqlite3.connect(tmp_path / "railguard.db", isolation_level=None)) as db:
        yield db


@pytest.fixture
def pg(postgres: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to a fresh PostgreSQL database, as the store holds one: autocommit."""
    with psycopg.connect(postgres, autocommit=True) as db:
        yield db


@pytest.mark.parametrize("rows", [sqlite3.Row, None])
def test_the_sqlite_connection_keeps_its_row_factory(
    sqlite_db: sqlite3.Connection, rows: Any
) -> None:
    sqlite_db.row_factory = rows
    migrate(sqlite_db, "sqlite", "state.db")
    assert sqlite_db.row_factory is rows


async def test_the_postgres_connection_keeps_its_row_factory(postgres: str) -> None:
    # Dict rows (as a store may want them) would break SQLAlchemy, which reads tuples.
    with psycopg.connect(postgres, autocommit=True, row_factory=dict_row) as db:
        assert migrate(db, "postgresql", "pg") == (NEWEST, tuple(range(1, NEWEST + 1)))
        assert db.row_factory is dict_row
        assert migrate(db, "postgresql", "pg") == (NEWEST, ())


def alembic_version(db: Any) -> list[str]:
    return [row[0] for row in db.execute("SELECT version_num FROM alembic_version").fetchall()]


# -- the revisions --------------------------------------------------------------------------


def test_revisions_are_numbered_in_one_line() -> None:
    scripts = ScriptDirectory(str(SCRIPTS))
    chain = list(reversed(list(scripts.walk_revisions())))
    assert [s.revision for s in chain] == [f"{n:04d}" for n in range(1, NEWEST + 1)]
    assert [s.down_revision for s in chain] == [None, *(s.revision for s in chain[:-1])]
    for script in chain:
        assert Path(script.path).name.startswith(f"r{script.revision}_")
        assert script.doc  # the description a failure names
    assert scripts.get_current_head() == f"{NEWEST:04d}"


# -- SQLite ---------------------------------------------------------------------------------


def test_a_fresh_sqlite_database_reaches_the_newest_version(sqlite_db: sqlite3.Connection) -> None:
    assert migrate(sqlite_db, "sqlite", "state.db") == (NEWEST, tuple(range(1, NEWEST + 1)))
    assert alembic_version(sqlite_db) == [f"{NEWEST:04d}"]
    # The store's connection comes back as it was lent: out of any transaction, autocommit,
    # without SQLAlchemy's functions.
    assert not sqlite_db.in_transaction
    assert sqlite_db.isolation_level is None
    with pytest.raises(sqlite3.OperationalError, match="no such function"):
        sqlite_db.execute("SELECT regexp('a', 'a')")
    sqlite_db.execute("INSERT INTO cursors (name, value) VALUES ('x', '1')")
    assert not sqlite_db.in_transaction  # committed by itself
    assert migrate(sqlite_db, "sqlite", "state.db") == (NEWEST, ())


def test_ids_are_sqlite_rowids(sqlite_db: sqlite3.Connection) -> None:
    migrate(sqlite_db, "sqlite", "state.db")
    for table in ("rollbacks", "events", "outbox"):
        columns = sqlite_db.execute(f"PRAGMA table_info({table})").fetchall()
        assert columns[0][1:3] == ("id", "INTEGER")
        assert columns[0][5] == 1  # the primary key
    sqlite_db.execute("INSERT INTO events (kind, at, data) VALUES ('k', 1.5, '{}')")
    assert sqlite_db.execute("SELECT id, rowid FROM events").fetchall() == [(1, 1)]


def _checks(sql: str) -> list[str]:
    """The CHECK constraints of a CREATE TABLE, whitespace normalized."""
    found = []
    for match in re.finditer(r"CHECK\s*\(", sql):
        depth, end = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            end += 1
        found.append(" ".join(sql[match.end() : end - 1].split()).replace("( ", "("))
    return sorted(found)


def shape(path: Path) -> dict[str, Any]:
    """What makes two SQLite schemas the same: columns (type, NOT NULL, default, key),
    indexes (unique, origin, columns, partial WHERE) and CHECK constraints, by table."""
    with closing(sqlite3.connect(path)) as db:
        tables = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        result: dict[str, Any] = {}
        for table, sql in tables:
            if table in SKIPPED:
                continue
            indexes = []
            for _, name, unique, origin, partial in db.execute(f"PRAGMA index_list({table})"):
                columns = [row[2] for row in db.execute(f"PRAGMA index_info({name})")]
                (index_sql,) = db.execute(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (name,)
                ).fetchone()
                where = " ".join(index_sql.split(" WHERE ", 1)[1].split()) if partial else None
                indexes.append((name, unique, origin, columns, where))
            result[table] = {
                "columns": db.execute(f"PRAGMA table_info({table})").fetchall(),
                "indexes": sorted(indexes),
                "checks": _checks(sql),
            }
        return result


def test_alembic_makes_the_schema_the_old_runner_made(tmp_path: Path) -> None:
    legacy, fresh = tmp_path / "legacy.db", tmp_path / "fresh.db"
    legacy_schema.build(legacy, NEWEST)
    with closing(sqlite3.connect(fresh, isolation_level=None)) as db:
        migrate(db, "sqlite", str(fresh))
    made = shape(fresh)
    assert made == shape(legacy)
    assert made["rollbacks"]["indexes"][0] == (
        "rollbacks_by_service",
        0,
        "c",
        ["service", "decided_at"],
        None,
    )
    assert (
        "rollbacks_one_unfinished",
        1,
        "c",
        ["service"],
        "state IN ('intent', 'sent', 'deploying')",
    ) in made["rollbacks"]["indexes"]
    assert made["deployments"]["checks"] == ["verdict IN ('unverified', 'good', 'bad')"]


# Rows each old version had room for, written as the old runner's store wrote them.
ROWS: dict[int, list[str]] = {
    1: [
        "INSERT INTO deployments (service, id, status, created_at, first_seen, can_rollback, "
        "meta) VALUES ('api', 'd1', 'SUCCESS', 1.5, 2.5, 1, '{}')",
        "INSERT INTO rollbacks (service, from_deployment, to_deployment, trigger, actor, "
        "reason, evidence, dry_run, state, decided_at) VALUES ('api', 'd2', 'd1', 'auto', "
        "'railguard', 'bad', '{}', 0, 'intent', 3.5)",
        "INSERT INTO events (service, kind, at, data) VALUES ('api', 'went_live', 4.5, '{}')",
    ],
    2: [
        "INSERT INTO outbox (channel, message_id, payload, state, attempts, created_at, "
        "next_at) VALUES ('slack', 'm1', '{}', 'pending', 0, 5.5, 5.5)",
    ],
    3: ["UPDATE rollbacks SET attempts = 1, attempted_at = 6.5"],
    4: [
        "INSERT INTO release_summaries (service, release, signal, data, updated_at) "
        "VALUES ('api', 'd1', 'errors', '{}', 7.5)",
    ],
}


@pytest.mark.sqlite_only  # the SQLite file the old runner made
@pytest.mark.parametrize("version", range(NEWEST + 1))
async def test_a_database_the_old_runner_made_is_adopted_and_upgraded(
    tmp_path: Path, clock: FakeClock, version: int
) -> None:
    path = tmp_path / "railguard.db"
    legacy_schema.build(path, version)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for number in range(1, version + 1):
            for sql in ROWS.get(number, []):
                db.execute(sql)
    async with await open_store(path) as store:
        assert store.schema_version == NEWEST
        assert store.migrated == tuple(range(version + 1, NEWEST + 1))
        if version >= 1:
            (deployment,) = await store.deployments("api")
            assert (deployment.id, deployment.created_at) == ("d1", 1.5)
            (rollback,) = await store.rollbacks("api")
            assert (rollback.state, rollback.attempts) == ("intent", int(version >= 3))
            assert [e.kind for e in await store.events()] == ["went_live"]
        if version >= 4:
            assert await store.summaries("api") == {"d1": {"errors": {}}}
    with closing(sqlite3.connect(path)) as db:
        assert alembic_version(db) == [f"{NEWEST:04d}"]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "schema_migrations" not in tables  # Alembic's record is the only one now
    fresh = tmp_path / "fresh.db"
    await (await open_store(fresh)).close()
    assert shape(path) == shape(fresh)


@pytest.mark.sqlite_only  # the SQLite file the old runner made
async def test_a_newer_old_runner_version_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    legacy_schema.build(path, NEWEST)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 'from the future', 0)")
    with pytest.raises(StoreError) as e:
        await open_store(path)
    assert str(e.value) == (
        f"{path}: the database has schema version 99, but this railguard knows versions up to "
        f"{NEWEST}: it was written by a newer railguard. Upgrade railguard, or set "
        "RAILGUARD_STATE to another file"
    )


def test_a_revision_of_someone_else_is_refused(sqlite_db: sqlite3.Connection) -> None:
    sqlite_db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
    sqlite_db.execute("INSERT INTO alembic_version VALUES ('ae1027a6acf')")
    with pytest.raises(StoreError, match="revision ae1027a6acf, which is none of railguard's"):
        migrate(sqlite_db, "sqlite", "state.db")


def test_an_up_to_date_store_opens_without_alembic(tmp_path: Path) -> None:
    path = tmp_path / "railguard.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        migrate(db, "sqlite", str(path))
    program = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from monitor.store import open_store\n"
        "async def main():\n"
        "    store = await open_store(Path(sys.argv[1]))\n"
        "    print(store.schema_version, store.migrated)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'sqlalchemy')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.splitlines() == [f"{NEWEST} ()", "[]"]


# -- a new revision, and one that fails -----------------------------------------------------


def _with_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *bodies: str) -> None:
    """The shipped revisions and ``bodies`` after them (upgrade() bodies), as the scripts."""
    scripts = tmp_path / "migrations"
    shutil.copytree(SCRIPTS, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    for number, body in enumerate(bodies, NEWEST + 1):
        (scripts / "versions" / f"r{number:04d}_future.py").write_text(
            f'"""future {number}"""\n\n'
            "from alembic import op\n\n"
            f"revision = '{number:04d}'\n"
            f"down_revision = '{number - 1:04d}'\n\n\n"
            f"def upgrade() -> None:\n{body}\n"
        )
    monkeypatch.setattr(store_schema, "SCRIPTS", scripts)


def test_a_new_revision_is_one_more_file(
    sqlite_db: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(sqlite_db, "sqlite", "state.db")
    _with_revisions(
        tmp_path, monkeypatch, "    op.execute('CREATE TABLE future (id INTEGER PRIMARY KEY)')"
    )
    assert migrate(sqlite_db, "sqlite", "state.db") == (NEWEST + 1, (NEWEST + 1,))
    assert alembic_version(sqlite_db) == [f"{NEWEST + 1:04d}"]


GOOD = "    op.execute('CREATE TABLE future_good (id INTEGER PRIMARY KEY)')"
BROKEN = (
    "    op.execute('CREATE TABLE future_broken (id INTEGER PRIMARY KEY)')\n"
    "    op.execute('SELECT nonsense FROM nowhere')"
)


def test_a_failed_revision_leaves_the_last_complete_one(
    sqlite_db: sqlite3.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_revisions(tmp_path, monkeypatch, GOOD, BROKEN)
    with pytest.raises(StoreError) as e:
        migrate(sqlite_db, "sqlite", "state.db")
    assert str(e.value) == (
        f"state.db: migration {NEWEST + 2} (future {NEWEST + 2}) failed: no such table: "
        f"nowhere; the database was left at version {NEWEST + 1}"
    )
    assert alembic_version(sqlite_db) == [f"{NEWEST + 1:04d}"]
    tables = {row[0] for row in sqlite_db.execute("SELECT name FROM sqlite_master")}
    assert "future_good" in tables
    assert "future_broken" not in tables  # its revision's transaction was rolled back
    assert not sqlite_db.in_transaction


@pytest.mark.sqlite_only  # the SQLite file the old runner made
async def test_a_failed_revision_through_the_store(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "railguard.db"
    legacy_schema.build(path, 3)
    _with_revisions(tmp_path, monkeypatch, BROKEN)
    with pytest.raises(StoreError, match=rf"migration {NEWEST + 1} \(future") as e:
        await open_store(path)
    assert f"{path}: " in str(e.value)
    assert f"left at version {NEWEST}" in str(e.value)


def test_a_locked_database_is_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "railguard.db"
    legacy_schema.build(path, NEWEST)
    with (
        closing(sqlite3.connect(path, isolation_level=None)) as other,
        closing(sqlite3.connect(path, isolation_level=None, timeout=0)) as db,
    ):
        other.execute("BEGIN IMMEDIATE")  # another process writing, longer than busy_timeout
        with pytest.raises(StoreError) as e:
            migrate(db, "sqlite", "state.db")
        assert str(e.value) == (
            "state.db: taking over the old runner's record failed: database is locked; the "
            f"database was left at version {NEWEST}"
        )
        other.execute("ROLLBACK")
        assert migrate(db, "sqlite", "state.db") == (NEWEST, ())
        assert alembic_version(db) == [f"{NEWEST:04d}"]


# -- PostgreSQL -----------------------------------------------------------------------------

# SQLite's declared type -> PostgreSQL's, for every column but the ids.
PG_TYPES = {
    "TEXT": "text",
    "DOUBLE PRECISION": "double precision",
    "BOOLEAN": "boolean",
    "INTEGER": "integer",
    "BIGINT": "bigint",
}


async def test_a_fresh_postgres_database_has_the_same_schema(
    pg: psycopg.Connection[Any], tmp_path: Path
) -> None:
    assert migrate(pg, "postgresql", "pg") == (NEWEST, tuple(range(1, NEWEST + 1)))
    assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert pg.autocommit
    assert alembic_version(pg) == [f"{NEWEST:04d}"]
    assert migrate(pg, "postgresql", "pg") == (NEWEST, ())

    sqlite_path = tmp_path / "railguard.db"
    with closing(sqlite3.connect(sqlite_path, isolation_level=None)) as db:
        migrate(db, "sqlite", str(sqlite_path))
    expected: dict[tuple[str, str], tuple[str, str, str | None]] = {}
    for table, described in shape(sqlite_path).items():
        for _, column, kind, notnull, _default, key in described["columns"]:
            if (column, kind, key) == ("id", "INTEGER", 1):
                expected[table, column] = ("bigint", "NO", "ALWAYS")
            else:
                nullable = "NO" if notnull or key else "YES"
                expected[table, column] = (PG_TYPES[kind], nullable, None)
    rows = pg.execute(
        "SELECT table_name, column_name, data_type, is_nullable, identity_generation "
        "FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name <> 'alembic_version'"
    ).fetchall()
    assert {(t, c): (k, n, i) for t, c, k, n, i in rows} == expected

    defaults = pg.execute(
        "SELECT table_name, column_name, column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND column_default IS NOT NULL"
    ).fetchall()
    assert sorted(defaults) == [
        ("deployments", "evidence", "'{}'::text"),
        ("deployments", "verdict", "'unverified'::text"),
        ("deployments", "verdict_reason", "''::text"),
        ("rollbacks", "attempts", "0"),
    ]
    (unfinished,) = pg.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'rollbacks_one_unfinished'"
    ).fetchone() or ("",)
    assert "CREATE UNIQUE INDEX" in unfinished
    assert "WHERE (state = ANY (ARRAY['intent'::text, 'sent'::text, 'deploying'::text]))" in (
        unfinished
    )
    sqlite_indexes = {
        index[0]
        for described in shape(sqlite_path).values()
        for index in described["indexes"]
        if index[2] == "c"
    }
    pg_indexes = {
        row[0]
        for row in pg.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace "
            "AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = i.indexrelid)"
        ).fetchall()
    }
    assert pg_indexes == sqlite_indexes
    checks = pg.execute(
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'c' AND connamespace = current_schema()::regnamespace ORDER BY 1, 2"
    ).fetchall()
    assert checks == [
        (
            "deployments",
            "CHECK ((verdict = ANY (ARRAY['unverified'::text, 'good'::text, 'bad'::text])))",
        ),
        (
            "rollbacks",
            "CHECK ((state = ANY (ARRAY['intent'::text, 'sent'::text, 'deploying'::text, "
            "'succeeded'::text, 'failed'::text, 'abandoned'::text, 'dry_run'::text])))",
        ),
        ("rollbacks", "CHECK ((trigger = ANY (ARRAY['auto'::text, 'manual'::text])))"),
    ]


async def test_postgres_refuses_a_newer_schema(pg: psycopg.Connection[Any]) -> None:
    migrate(pg, "postgresql", "postgresql://railguard@db/railguard")
    pg.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError) as e:
        migrate(pg, "postgresql", "postgresql://railguard@db/railguard")
    assert str(e.value) == (
        "postgresql://railguard@db/railguard: the database has schema version 99, but this "
        f"railguard knows versions up to {NEWEST}: it was written by a newer railguard. "
        "Upgrade railguard, or set DATABASE_URL to another database"
    )


async def test_postgres_a_failed_revision_leaves_the_last_complete_one(
    pg: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_revisions(tmp_path, monkeypatch, GOOD, BROKEN)
    with pytest.raises(StoreError, match=r'relation "nowhere" does not exist') as e:
        migrate(pg, "postgresql", "pg")
    assert f"pg: migration {NEWEST + 2} (future {NEWEST + 2}) failed" in str(e.value)
    assert f"left at version {NEWEST + 1}" in str(e.value)
    assert alembic_version(pg) == [f"{NEWEST + 1:04d}"]
    assert pg.execute("SELECT to_regclass('future_broken')").fetchone() == (None,)
    assert pg.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    # The migration lock went with the failure: the next replica may try.
    assert _advisory_locks(pg, granted=True) == 0


async def test_replicas_starting_at_once_migrate_once(postgres: str) -> None:
    holder = psycopg.connect(postgres, autocommit=True)
    replicas = [psycopg.connect(postgres, autocommit=True) for _ in range(2)]
    try:
        # Both replicas reach the lock while it is held, so they do start at once.
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(migrate, db, "postgresql", "pg") for db in replicas]
            deadline = time.monotonic() + 30
            while _advisory_locks(holder, granted=False) < 2:
                assert time.monotonic() < deadline, "the replicas never waited for the lock"
                assert not any(run.done() for run in runs), [r.result() for r in runs]
            holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            results = sorted(run.result(timeout=60) for run in runs)
        assert results == [(NEWEST, ()), (NEWEST, tuple(range(1, NEWEST + 1)))]
        assert alembic_version(holder) == [f"{NEWEST:04d}"]
    finally:
        for db in (holder, *replicas):
            db.close()


def _advisory_locks(db: psycopg.Connection[Any], *, granted: bool) -> int:
    """Advisory locks held (or waited for) in this database (others are other tests')."""
    row = db.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = %s "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (granted,),
    ).fetchone()
    return int(row[0]) if row else 0
