"""The store's hot calls on SQLite and PostgreSQL, by driver (input to issue 14's backend choice).

A decision makes 2 store calls: ``service_records`` (one read: 3 SELECTs, deployments, the
freeze, recent rollbacks, each row decoded into the store's records) and ``begin_rollback``
(one write: INSERT the intent with its first attempt counted, INSERT its ``rollback_started``
event, in one transaction); rule states are upserted on every transition (``save_rule_state``,
one write). The same calls, with the same SQL (translated minimally for PostgreSQL), run on:

- ``store``: today's path, ``monitor.store.open_store`` on a temporary file (sqlite3 on the
  store's thread, group commit, ``synchronous=FULL``), called as the daemon calls it;
- ``sqlite3``: the bench's copy of that thread (``Runner``: one connection on one thread,
  writes queued meanwhile group-committed) with raw sqlite3: the baseline for the next one;
- ``sqla-sqlite``: the same ``Runner`` with SQLAlchemy Core (``text()`` statements built once,
  so compiled-cache hits) on a sync pysqlite engine, one Connection held by the thread;
- ``asyncpg``: asyncpg from the event loop, a pool of ``--pool`` connections, a transaction
  per write (no group commit: concurrent commits share WAL flushes in the server);
- ``psycopg``: psycopg 3 (sync) on the ``Runner`` thread, group commit as for SQLite;
- ``sqla-asyncpg``: SQLAlchemy Core's async engine on asyncpg (pool of ``--pool``; reads on
  an AUTOCOMMIT view of the engine, so no BEGIN/ROLLBACK around them, as for asyncpg);
- ``sqla-psycopg``: SQLAlchemy Core sync on psycopg on the ``Runner`` thread.

On the ``Runner`` a transaction is ``BEGIN`` (SQLite: ``BEGIN IMMEDIATE``) ... ``COMMIT`` sent
as statements on an autocommit connection, as monitor/store/db.py does. PostgreSQL is the
server on 127.0.0.1:5432 (user postgres, trust auth); the bench creates a database per variant
(``railguard_bench_<pid>_<variant>``) and drops it at the end. PostgreSQL's schema is the
store's, from the same Alembic revisions as SQLite's (monitor/store/migrations/: ids ``BIGINT
GENERATED ALWAYS AS IDENTITY``, JSON TEXT); inserts return the id with ``RETURNING id``
(SQLite: lastrowid).

Load, per variant. Every decision is on a service of its own, seeded with ``--deployments``
deployments (a service's first rollback, as a release going bad usually is; the services are
all seeded up front):

- single: one caller, ``--single`` times: read, write, then the rule-state upsert; each call
  timed (wall, ``time.perf_counter``) and its CPU (``time.process_time``: every thread of this
  process, so the store's thread counts; PostgreSQL's server CPU does not);
- burst: ``--rounds`` times, ``--burst`` callers at once (as decision_latency's hold-ending
  case: a burst of decisions), each read-then-write then its rule-state upsert; per-call wall
  time, the burst's wall time (first start to last end), its CPU per decision, and the event
  loop's lateness (a heartbeat task sleeping 1 ms and noting how late it wakes).

Each rollback is then finished (abandoned), untimed, as the partial unique index wants.
Variants are all opened at once, warmed up (20 single decisions, one burst), and run in turn,
the order reversed on every other of ``--repeats`` passes; figures are pooled over the passes.
Then each driver runs the two SELECTs of the read directly, ``--statements`` times in 6
alternating blocks (no thread, no pool, no decoding): what SQLAlchemy Core adds to one
statement. The daemon's GIL switch interval (0.2 ms) is set as ``railguard run`` sets it.

    .venv/bin/pip install -e '.[dev,bench-store]'
    .venv/bin/python bench/store_backends.py [--variants store,asyncpg,...] [--repeats 3]

About 2 minutes. It prints a table and writes bench/results/store_backends.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psycopg  # noqa: E402
import sqlalchemy  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from monitor.daemon import SWITCH_INTERVAL  # noqa: E402
from monitor.store import ServiceRecords, open_store  # noqa: E402
from monitor.store.schema import configure, migrate  # noqa: E402
from monitor.store.sql import SqlStore, _deployment, _dumps, _freeze, _rollback  # noqa: E402

T0 = 1_700_000_000.0
PG = "postgresql://postgres@127.0.0.1:5432/"

# The store's statements (monitor/store/sqlite.py), in SQLite's dialect with named parameters.
SQL: dict[str, str] = {
    "deployments": "SELECT * FROM deployments WHERE service = :service "
    "ORDER BY created_at DESC, id DESC LIMIT :limit",
    "freeze": "SELECT * FROM freezes WHERE service = :service AND (until IS NULL OR until > :now)",
    "rollbacks": "SELECT * FROM rollbacks WHERE service = :service "
    "ORDER BY decided_at DESC, id DESC LIMIT :limit",
    "begin": "INSERT INTO rollbacks (service, from_deployment, to_deployment, trigger, actor, "
    "rule, reason, evidence, dry_run, state, decided_at, finished_at, attempts, attempted_at) "
    "VALUES (:service, :from_deployment, :to_deployment, :trigger, :actor, :rule, :reason, "
    ":evidence, :dry_run, :state, :decided_at, :finished_at, :attempts, :attempted_at)",
    "event": "INSERT INTO events (service, kind, at, data) VALUES (:service, :kind, :at, :data)",
    "rule": "INSERT INTO rule_states (service, rule, state, updated_at) "
    "VALUES (:service, :rule, :state, :at) ON CONFLICT (service, rule) DO UPDATE SET "
    "state = excluded.state, updated_at = excluded.updated_at",
    "finish": "UPDATE rollbacks SET state = 'abandoned', finished_at = :at WHERE id = :id",
    "seed": "INSERT INTO deployments (service, id, status, created_at, first_seen, live_at, "
    "can_rollback, meta) VALUES (:service, :id, :status, :created_at, :created_at, :live_at, "
    ":can_rollback, :meta)",
}
INSERTS = ("begin", "event")  # statements whose new id the caller needs


def positional(sql: str) -> tuple[str, list[str]]:
    """``:name`` -> ``$n`` (asyncpg); returns the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<!:):([a-z_]+)", number, sql), names


def pyformat(sql: str) -> str:
    """``:name`` -> ``%(name)s`` (psycopg)."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql)


# -- what a call sends ---------------------------------------------------------------------


def begin_params(service: str, now: float) -> dict[str, Any]:
    return {
        "service": service,
        "from_deployment": "d0009",
        "to_deployment": "d0008",
        "trigger": "auto",
        "actor": "railguard",
        "rule": "error-rate",
        "reason": "error rate 12% > 5% for 2m",
        "evidence": _dumps({"value": 0.12, "samples": [{"at": now, "v": 0.12}] * 5}),
        "dry_run": False,
        "state": "intent",
        "decided_at": now,
        "finished_at": None,
        "attempts": 1,
        "attempted_at": now,
    }


def event_params(service: str, now: float, id: int) -> dict[str, Any]:
    data = {"rollback": id, "rule": "error-rate", "from": "d0009", "to": "d0008", "dry_run": False}
    return {"service": service, "kind": "rollback_started", "at": now, "data": _dumps(data)}


def rule_params(service: str, now: float) -> dict[str, Any]:
    state = {"status": "firing", "since": now - 120, "breaches": 8, "last_value": 0.12}
    return {"service": service, "rule": "error-rate", "state": _dumps(state), "at": now}


def seed_rows(services: Sequence[str], count: int) -> list[dict[str, Any]]:
    meta = _dumps({"image": "ghcr.io/acme/api:sha", "commit": "0123456789abcdef", "branch": "main"})
    return [
        {
            "service": service,
            "id": f"d{i:04d}",
            "status": "SUCCESS" if i == count - 1 else "REMOVED",
            "created_at": T0 + 3600 * i,
            "live_at": T0 + 3600 * i + 60,
            "can_rollback": True,
            "meta": meta,
        }
        for service in services
        for i in range(count)
    ]


def decode(rows: tuple[list[Any], list[Any], list[Any]]) -> ServiceRecords:
    """The store's records from any driver's rows (each has ``keys()`` and ``[]``)."""
    records, freezes, recent = rows
    return ServiceRecords(
        records=tuple(_deployment(row) for row in records),
        frozen=_freeze(freezes[0]) if freezes else None,
        rollbacks=tuple(_rollback(row) for row in recent),
    )


class Variant(Protocol):
    """One way of running the store's hot calls."""

    async def open(self, services: Sequence[str], deployments: int) -> None: ...
    async def read(self, service: str, now: float) -> ServiceRecords: ...
    async def begin(self, service: str, now: float) -> int: ...
    async def rule(self, service: str, now: float) -> None: ...
    async def finish(self, ids: Sequence[int], now: float) -> None: ...
    async def close(self) -> None: ...


# -- today's store ----------------------------------------------------------------------------


class StoreVariant:
    """``monitor.store`` as the daemon calls it."""

    def __init__(self, workdir: Path, database_url: str | None = None) -> None:
        self.path = workdir / "store.db"
        self.database_url = database_url  # the PostgreSQL backend (store-pg)
        self.store: SqlStore | None = None

    async def open(self, services: Sequence[str], deployments: int) -> None:
        self.store = await open_store(self.path, database_url=self.database_url)
        store, rows = self.store, seed_rows(services, deployments)
        for start in range(0, len(rows), 500):  # group-committed, 500 a transaction
            await asyncio.gather(
                *(
                    store.upsert_deployment(
                        row["service"],
                        id=row["id"],
                        status=row["status"],
                        created_at=row["created_at"],
                        can_rollback=True,
                        meta=json.loads(row["meta"]),
                        seen_at=row["created_at"],
                        live=True,
                        live_at=row["live_at"],
                    )
                    for row in rows[start : start + 500]
                )
            )

    async def read(self, service: str, now: float) -> ServiceRecords:
        assert self.store is not None
        return await self.store.service_records(service, now)

    async def begin(self, service: str, now: float) -> int:
        assert self.store is not None
        p = begin_params(service, now)
        record = await self.store.begin_rollback(
            service,
            p["from_deployment"],
            p["to_deployment"],
            "auto",
            p["actor"],
            p["rule"],
            p["reason"],
            json.loads(p["evidence"]),
            now,
            False,
            event=lambda r: (
                "rollback_started",
                json.loads(event_params(service, now, r.id)["data"]),
            ),
            attempt=True,
        )
        return record.id

    async def rule(self, service: str, now: float) -> None:
        assert self.store is not None
        p = rule_params(service, now)
        await self.store.save_rule_state(service, p["rule"], json.loads(p["state"]), now)

    async def finish(self, ids: Sequence[int], now: float) -> None:
        assert self.store is not None
        store = self.store
        await asyncio.gather(*(store.advance_rollback(i, "abandoned", at=now) for i in ids))

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


# -- one connection on one thread, group commit (monitor/store/db.py, without savepoints) -----


class Conn(Protocol):
    """A sync connection on the runner's thread."""

    def rows(self, key: str, params: Mapping[str, Any]) -> list[Any]: ...
    def insert(self, key: str, params: Mapping[str, Any]) -> int: ...
    def execute(self, key: str, params: Mapping[str, Any]) -> None: ...
    def begin(self) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Write:
    job: Callable[[Conn], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not future.done():
        future.set_result(result) if error is None else future.set_exception(error)


class Runner:
    """Jobs on one thread owning one connection; writes queued meanwhile share a transaction."""

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-store")
        self._connect = connect
        self._conn: Conn | None = None
        self._mutex = threading.Lock()
        self._queued: list[_Write] = []
        self._scheduled = False
        self.transactions = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._thread, self._connect)

    async def run(self, job: Callable[[Conn], Any]) -> Any:
        assert self._conn is not None
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._thread, job, conn)

    async def write(self, job: Callable[[Conn], Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._mutex:
            self._queued.append(_Write(job, future, loop))
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._thread.submit(self._commit_queued)
        return await future

    def _commit_queued(self) -> None:
        with self._mutex:
            batch, self._queued = self._queued, []
            self._scheduled = False
        assert self._conn is not None
        conn = self._conn
        try:
            conn.begin()
            results = [write.job(conn) for write in batch]
            conn.commit()
            outcomes: list[tuple[Any, BaseException | None]] = [(r, None) for r in results]
        except Exception as e:
            with contextlib.suppress(Exception):
                conn.rollback()
            outcomes = [(None, e) for _ in batch]
        self.transactions += 1
        for write, (result, error) in zip(batch, outcomes, strict=True):
            write.loop.call_soon_threadsafe(_settle, write.future, result, error)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(lambda conn: conn.close())
        self._thread.shutdown(wait=True)


class RunnerVariant:
    """The hot calls as jobs on a ``Runner``, whatever the connection."""

    def __init__(self, connect: Callable[[], Conn]) -> None:
        self.runner = Runner(connect)

    async def open(self, services: Sequence[str], deployments: int) -> None:
        await self.runner.start()
        rows = seed_rows(services, deployments)

        def seed(conn: Conn) -> None:
            for row in rows:
                conn.execute("seed", row)

        await self.runner.write(seed)

    async def read(self, service: str, now: float) -> ServiceRecords:
        def read(conn: Conn) -> ServiceRecords:
            return decode(
                (
                    conn.rows("deployments", {"service": service, "limit": 200}),
                    conn.rows("freeze", {"service": service, "now": now}),
                    conn.rows("rollbacks", {"service": service, "limit": 20}),
                )
            )

        result: ServiceRecords = await self.runner.run(read)
        return result

    async def begin(self, service: str, now: float) -> int:
        params = begin_params(service, now)

        def begin(conn: Conn) -> int:
            id = conn.insert("begin", params)
            conn.insert("event", event_params(service, now, id))
            return id

        result: int = await self.runner.write(begin)
        return result

    async def rule(self, service: str, now: float) -> None:
        params = rule_params(service, now)
        await self.runner.write(lambda conn: conn.execute("rule", params))

    async def finish(self, ids: Sequence[int], now: float) -> None:
        await asyncio.gather(
            *(
                self.runner.write(lambda conn, i=i: conn.execute("finish", {"id": i, "at": now}))
                for i in ids
            )
        )

    async def close(self) -> None:
        await self.runner.close()


class Sqlite3Conn:
    """Raw sqlite3, configured and migrated as the store is."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        configure(self.db, path)
        migrate(self.db, "sqlite", str(path))

    def rows(self, key: str, params: Mapping[str, Any]) -> list[Any]:
        return self.db.execute(SQL[key], params).fetchall()

    def insert(self, key: str, params: Mapping[str, Any]) -> int:
        return int(self.db.execute(SQL[key], params).lastrowid or 0)

    def execute(self, key: str, params: Mapping[str, Any]) -> None:
        self.db.execute(SQL[key], params).close()

    def begin(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


class SqlaConn:
    """SQLAlchemy Core on a sync engine: one Connection, AUTOCOMMIT, BEGIN/COMMIT sent by us."""

    def __init__(self, url: str, begin: str, returning: bool) -> None:
        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.StaticPool)
        self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.sql = {
            key: sqlalchemy.text(sql + (" RETURNING id" if returning and key in INSERTS else ""))
            for key, sql in SQL.items()
        }
        self._begin, self._returning = begin, returning

    def rows(self, key: str, params: Mapping[str, Any]) -> list[Any]:
        return [row._mapping for row in self.conn.execute(self.sql[key], params)]

    def insert(self, key: str, params: Mapping[str, Any]) -> int:
        result = self.conn.execute(self.sql[key], params)
        return int(result.scalar_one() if self._returning else result.lastrowid)

    def execute(self, key: str, params: Mapping[str, Any]) -> None:
        self.conn.execute(self.sql[key], params)

    def begin(self) -> None:
        self.conn.exec_driver_sql(self._begin)

    def commit(self) -> None:
        self.conn.exec_driver_sql("COMMIT")

    def rollback(self) -> None:
        self.conn.exec_driver_sql("ROLLBACK")

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


def sqla_sqlite(path: Path) -> SqlaConn:
    Sqlite3Conn(path).close()  # the schema, configured and migrated as the store's
    conn = SqlaConn(f"sqlite:///{path}", "BEGIN IMMEDIATE", returning=False)
    raw = conn.conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    raw.isolation_level = None  # transactions are ours, as in db.py
    raw.execute("PRAGMA synchronous=FULL")  # WAL is kept in the file; this is per connection
    raw.execute("PRAGMA busy_timeout=5000")
    return conn


class PsycopgConn:
    """psycopg 3, sync, autocommit, BEGIN/COMMIT sent by us."""

    def __init__(self, dsn: str) -> None:
        self.db = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
        self.sql = {
            key: pyformat(sql) + (" RETURNING id" if key in INSERTS else "")
            for key, sql in SQL.items()
        }

    def rows(self, key: str, params: Mapping[str, Any]) -> list[Any]:
        return self.db.execute(self.sql[key], params, prepare=True).fetchall()

    def insert(self, key: str, params: Mapping[str, Any]) -> int:
        row = self.db.execute(self.sql[key], params, prepare=True).fetchone()
        assert row is not None
        return int(row["id"])

    def execute(self, key: str, params: Mapping[str, Any]) -> None:
        self.db.execute(self.sql[key], params, prepare=True)

    def begin(self) -> None:
        self.db.execute("BEGIN")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    def rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def close(self) -> None:
        self.db.close()


# -- from the event loop -----------------------------------------------------------------------


class AsyncpgVariant:
    """asyncpg from the event loop: a pool, a transaction per write, prepared statements."""

    def __init__(self, dsn: str, pool: int) -> None:
        self.dsn, self.size = dsn, pool
        self.sql = {key: positional(sql) for key, sql in SQL.items()}
        self.pool: asyncpg.Pool | None = None

    def _args(self, key: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        sql, names = self.sql[key]
        return sql + (" RETURNING id" if key in INSERTS else ""), [params[n] for n in names]

    async def open(self, services: Sequence[str], deployments: int) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=self.size, max_size=self.size)
        sql, names = self.sql["seed"]
        rows = [[row[n] for n in names] for row in seed_rows(services, deployments)]
        async with self.pool.acquire() as conn:
            await conn.executemany(sql, rows)

    async def read(self, service: str, now: float) -> ServiceRecords:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            return decode(
                (
                    await conn.fetch(*self._q("deployments", {"service": service, "limit": 200})),
                    await conn.fetch(*self._q("freeze", {"service": service, "now": now})),
                    await conn.fetch(*self._q("rollbacks", {"service": service, "limit": 20})),
                )
            )

    def _q(self, key: str, params: Mapping[str, Any]) -> list[Any]:
        sql, args = self._args(key, params)
        return [sql, *args]

    async def begin(self, service: str, now: float) -> int:
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            id = int(await conn.fetchval(*self._q("begin", begin_params(service, now))))
            await conn.fetchval(*self._q("event", event_params(service, now, id)))
            return id

    async def rule(self, service: str, now: float) -> None:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            await conn.execute(*self._q("rule", rule_params(service, now)))

    async def finish(self, ids: Sequence[int], now: float) -> None:
        assert self.pool is not None
        sql, _ = self.sql["finish"]
        async with self.pool.acquire() as conn:
            await conn.executemany(sql, [(now, i) for i in ids])

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


class SqlaAsyncVariant:
    """SQLAlchemy Core's async engine on asyncpg: reads on AUTOCOMMIT, writes in engine.begin()."""

    def __init__(self, dsn: str, pool: int) -> None:
        url = dsn.replace("postgresql://", "postgresql+asyncpg://")
        self.engine = create_async_engine(url, pool_size=pool, max_overflow=0)
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sql = {
            key: sqlalchemy.text(sql + (" RETURNING id" if key in INSERTS else ""))
            for key, sql in SQL.items()
        }

    async def open(self, services: Sequence[str], deployments: int) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self.sql["seed"], seed_rows(services, deployments))

    async def read(self, service: str, now: float) -> ServiceRecords:
        async with self.reader.connect() as conn:
            key = {"service": service, "now": now}
            a = await conn.execute(self.sql["deployments"], {**key, "limit": 200})
            b = await conn.execute(self.sql["freeze"], key)
            c = await conn.execute(self.sql["rollbacks"], {**key, "limit": 20})
            return decode(
                ([r._mapping for r in a], [r._mapping for r in b], [r._mapping for r in c])
            )

    async def begin(self, service: str, now: float) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(self.sql["begin"], begin_params(service, now))
            id = int(result.scalar_one())
            await conn.execute(self.sql["event"], event_params(service, now, id))
            return id

    async def rule(self, service: str, now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self.sql["rule"], rule_params(service, now))

    async def finish(self, ids: Sequence[int], now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(self.sql["finish"], [{"id": i, "at": now} for i in ids])

    async def close(self) -> None:
        await self.engine.dispose()


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """One variant's samples, pooled over passes (seconds)."""

    single: dict[str, list[float]] = field(default_factory=dict)  # call -> wall
    single_cpu: dict[str, list[float]] = field(default_factory=dict)  # call -> CPU
    burst: dict[str, list[float]] = field(default_factory=dict)  # call (and decision) -> wall
    burst_wall: list[float] = field(default_factory=list)
    burst_cpu: list[float] = field(default_factory=list)  # CPU per decision, per burst
    lateness: list[float] = field(default_factory=list)  # heartbeat lateness during bursts


CALLS = ("read", "begin", "rule")


async def timed(figures: dict[str, list[float]], call: str, work: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await work
    figures.setdefault(call, []).append(time.perf_counter() - start)
    return result


class Services:
    """Fresh service names, seeded up front: every decision is a service's first rollback."""

    def __init__(self, count: int) -> None:
        self.names = [f"svc-{i:05d}" for i in range(count)]
        self.next = 0

    def take(self, n: int) -> list[str]:
        taken = self.names[self.next : self.next + n]
        assert len(taken) == n, "more decisions than seeded services"
        self.next += n
        return taken


async def run_single(variant: Variant, services: Services, n: int, out: Figures) -> None:
    for service in services.take(n):
        now = time.time()
        for call in CALLS:
            make: Callable[[str, float], Awaitable[Any]] = getattr(variant, call)
            cpu, start = time.process_time(), time.perf_counter()
            result = await make(service, now)
            out.single.setdefault(call, []).append(time.perf_counter() - start)
            out.single_cpu.setdefault(call, []).append(time.process_time() - cpu)
            if call == "begin":
                await variant.finish([result], now)


async def heartbeat(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - start - 0.001)


async def run_burst(
    variant: Variant, pool: Services, callers: int, rounds: int, out: Figures
) -> None:
    for _ in range(rounds):
        services = pool.take(callers)
        now = time.time()
        stop = asyncio.Event()
        beat = asyncio.create_task(heartbeat(stop, out.lateness))
        await asyncio.sleep(0.005)

        async def decide(service: str, now: float) -> int:
            start = time.perf_counter()
            await timed(out.burst, "read", variant.read(service, now))
            id: int = await timed(out.burst, "begin", variant.begin(service, now))
            out.burst.setdefault("decision", []).append(time.perf_counter() - start)
            await timed(out.burst, "rule", variant.rule(service, now))
            return id

        cpu, start = time.process_time(), time.perf_counter()
        ids = await asyncio.gather(*(decide(s, now) for s in services))
        out.burst_wall.append(time.perf_counter() - start)
        out.burst_cpu.append((time.process_time() - cpu) / len(services))
        stop.set()
        await beat
        await variant.finish(ids, now)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": quantile(values, 0.90),
        "p99": quantile(values, 0.99),
        "max": max(values),
    }


# -- running -----------------------------------------------------------------------------------


def variants(workdir: Path, dsn: str, pool: int) -> dict[str, Callable[[], Variant]]:
    """Every variant by name (each PostgreSQL one on a database of its own)."""

    def pg(suffix: str) -> str:
        return f"{dsn}_{suffix}"

    return {
        "store": lambda: StoreVariant(workdir),
        "store-pg": lambda: StoreVariant(workdir, pg("store_pg")),
        "sqlite3": lambda: RunnerVariant(lambda: Sqlite3Conn(workdir / "sqlite3.db")),
        "sqla-sqlite": lambda: RunnerVariant(lambda: sqla_sqlite(workdir / "sqla.db")),
        "asyncpg": lambda: AsyncpgVariant(pg("asyncpg"), pool),
        "psycopg": lambda: RunnerVariant(lambda: PsycopgConn(pg("psycopg"))),
        "sqla-asyncpg": lambda: SqlaAsyncVariant(pg("sqla_asyncpg"), pool),
        "sqla-psycopg": lambda: RunnerVariant(
            lambda: SqlaConn(
                pg("sqla_psycopg").replace("postgresql://", "postgresql+psycopg://"),
                "BEGIN",
                returning=True,
            )
        ),
    }


PG_VARIANTS = {"asyncpg": "asyncpg", "psycopg": "psycopg", "sqla-asyncpg": "sqla_asyncpg",
               "sqla-psycopg": "sqla_psycopg", "store-pg": "store_pg"}  # fmt: skip


def create_pg(database: str, names: Sequence[str]) -> str:
    """A database per PostgreSQL variant, ``<database>_<suffix>``, with the schema."""
    for name in names:
        with psycopg.connect(PG + "postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}_{PG_VARIANTS[name]}")
        if name == "store-pg":
            continue  # the store migrates its database itself
        with psycopg.connect(f"{PG}{database}_{PG_VARIANTS[name]}", autocommit=True) as db:
            migrate(db, "postgresql", f"{database}_{PG_VARIANTS[name]}")
    return PG + database


def drop_pg(database: str) -> None:
    with psycopg.connect(PG + "postgres", autocommit=True) as admin:
        for suffix in PG_VARIANTS.values():
            admin.execute(f"DROP DATABASE IF EXISTS {database}_{suffix} WITH (FORCE)")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sys.setswitchinterval(SWITCH_INTERVAL)
    names = args.variants
    warmup_single, warmup_rounds = 20, 1
    needed = warmup_single + warmup_rounds * args.burst
    needed += args.repeats * (args.single + args.rounds * args.burst)
    database = f"railguard_bench_{os.getpid()}"
    pg_names = [n for n in names if n in PG_VARIANTS]
    dsn = create_pg(database, pg_names) if pg_names else PG + "postgres"
    figures = {name: Figures() for name in names}
    services: dict[str, Services] = {}
    opened: dict[str, Variant] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="store_backends.") as tmp:
            registry = variants(Path(tmp), dsn, args.pool)
            for name in names:
                opened[name] = registry[name]()
                services[name] = Services(needed)
                await opened[name].open(services[name].names, args.deployments)
                # Warm up: caches, prepared statements, pools.
                await run_single(opened[name], services[name], warmup_single, Figures())
                await run_burst(opened[name], services[name], args.burst, warmup_rounds, Figures())
            for rep in range(args.repeats):
                order = names if rep % 2 == 0 else names[::-1]
                for name in order:
                    print(f"pass {rep + 1}/{args.repeats}: {name}", file=sys.stderr)
                    await run_single(opened[name], services[name], args.single, figures[name])
                    await run_burst(
                        opened[name], services[name], args.burst, args.rounds, figures[name]
                    )
            for variant in opened.values():
                await variant.close()
            opened.clear()
            per_statement = await statement_costs(Path(tmp), dsn, names, args.statements)
    finally:
        for variant in opened.values():
            with contextlib.suppress(Exception):
                await variant.close()
        if pg_names:
            drop_pg(database)
    results = {name: report_of(f) for name, f in figures.items()}
    info = machine()
    info["decode_us"] = decode_cost(args.deployments) * 1e6
    print_report(results, per_statement, args, info)
    return {
        "machine": info,
        "args": vars(args),
        "results": results,
        "per_statement": per_statement,
    }


def decode_cost(deployments: int, n: int = 500) -> float:
    """CPU seconds to decode one service_records answer (the part no driver changes)."""
    with tempfile.TemporaryDirectory(prefix="store_backends.") as tmp:
        conn = Sqlite3Conn(Path(tmp) / "decode.db")
        for row in seed_rows(["svc"], deployments):
            conn.execute("seed", row)
        rows = (
            conn.rows("deployments", {"service": "svc", "limit": 200}),
            conn.rows("freeze", {"service": "svc", "now": T0}),
            conn.rows("rollbacks", {"service": "svc", "limit": 20}),
        )
        conn.close()
    start = time.process_time()
    for _ in range(n):
        decode(rows)
    return (time.process_time() - start) / n


STATEMENTS = ("freeze", "deployments")  # 0 rows (the fixed cost), 10 rows


async def statement_costs(workdir: Path, dsn: str, names: Sequence[str], n: int) -> dict[str, Any]:
    """CPU and wall per statement, each driver called directly in a loop (no thread, no pool):
    what SQLAlchemy Core adds to one statement, without the decision's other work."""
    params = {"service": "svc-00001", "now": time.time(), "limit": 200}
    sync: dict[str, Callable[[], Conn]] = {
        "sqlite3": lambda: Sqlite3Conn(workdir / "sqlite3.db"),
        "sqla-sqlite": lambda: sqla_sqlite(workdir / "sqla.db"),
        "psycopg": lambda: PsycopgConn(f"{dsn}_psycopg"),
        "sqla-psycopg": lambda: SqlaConn(
            f"{dsn}_sqla_psycopg".replace("postgresql://", "postgresql+psycopg://"),
            "BEGIN",
            returning=True,
        ),
    }
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {}
    conns: dict[str, Any] = {}
    try:
        for name in names:
            if name in sync:
                conns[name] = sync[name]()
            elif name == "asyncpg":
                conns[name] = await asyncpg.connect(f"{dsn}_asyncpg")
            elif name == "sqla-asyncpg":
                engine = create_async_engine(
                    f"{dsn}_sqla_asyncpg".replace("postgresql://", "postgresql+asyncpg://")
                ).execution_options(isolation_level="AUTOCOMMIT")
                conns[name] = await engine.connect()
        for block in range(6):  # blocks alternate in order, so drift is shared
            for name in conns if block % 2 == 0 else list(conns)[::-1]:
                for key in STATEMENTS:
                    cpu, wall = time.process_time(), time.perf_counter()
                    conn = conns[name]
                    if name == "asyncpg":
                        sql, args = positional(SQL[key])
                        values = [params[a] for a in args]
                        for _ in range(n):
                            await conn.fetch(sql, *values)
                    elif name == "sqla-asyncpg":
                        statement = sqlalchemy.text(SQL[key])
                        for _ in range(n):
                            [row._mapping for row in await conn.execute(statement, params)]
                    else:
                        for _ in range(n):
                            conn.rows(key, params)
                    cost = ((time.process_time() - cpu) / n, (time.perf_counter() - wall) / n)
                    samples.setdefault(name, {}).setdefault(key, []).append(cost)
    finally:
        for name, conn in conns.items():
            if name == "asyncpg":
                await conn.close()
            elif name == "sqla-asyncpg":
                await conn.close()
                await conn.engine.dispose()
            else:
                conn.close()
    return {
        name: {
            key: {
                "cpu": statistics.median(c for c, _ in values),
                "wall": statistics.median(w for _, w in values),
            }
            for key, values in per.items()
        }
        for name, per in samples.items()
    }


def report_of(f: Figures) -> dict[str, Any]:
    return {
        "single": {call: summary(v) for call, v in f.single.items()},
        "single_cpu": {call: summary(v) for call, v in f.single_cpu.items()},
        "burst": {call: summary(v) for call, v in f.burst.items()},
        "burst_wall": summary(f.burst_wall),
        "burst_cpu_per_decision": summary(f.burst_cpu),
        "loop_lateness": summary(f.lateness),
    }


def machine() -> dict[str, Any]:
    def pg_setting(name: str) -> str:
        with psycopg.connect(PG + "postgres") as db:
            row = db.execute(f"SHOW {name}").fetchone()
            return str(row[0]) if row else "?"

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "asyncpg": asyncpg.__version__,
        "psycopg": psycopg.__version__,
        "postgres": pg_setting("server_version"),
        "pg_synchronous_commit": pg_setting("synchronous_commit"),
        "pg_fsync": pg_setting("fsync"),
        "commit": commit,
        "loadavg": os.getloadavg(),
    }


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def print_report(
    results: Mapping[str, Any],
    per_statement: Mapping[str, Any],
    args: argparse.Namespace,
    info: Mapping[str, Any],
) -> None:
    print(
        f"\n{args.single} single calls and {args.rounds} bursts of {args.burst} per pass, "
        f"{args.repeats} passes; load average {info['loadavg'][0]:.2f}; decoding one "
        f"service_records answer ({args.deployments} deployments, no rollback) takes "
        f"{info['decode_us']:,.0f} µs CPU in every variant"
    )
    print("\nsingle caller, wall µs median / p90 / p99; CPU µs median (all threads)")
    print(
        "| variant | service_records | begin_rollback | save_rule_state "
        "| CPU read | CPU begin | CPU rule |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        walls = [" / ".join(us(r["single"][c][k]) for k in ("median", "p90", "p99")) for c in CALLS]
        cpus = [us(r["single_cpu"][c]["median"]) for c in CALLS]
        print(f"| {name} | {' | '.join(walls)} | {' | '.join(cpus)} |")
    print(f"\nburst of {args.burst}, wall ms median / p99; burst wall median; CPU µs per decision")
    print("| variant | service_records | begin_rollback | decision (both) | save_rule_state "
          "| burst wall | CPU/decision | loop late p99 / max |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        b = r["burst"]
        cells = [
            f"{ms(b[c]['median'])} / {ms(b[c]['p99'])}"
            for c in ("read", "begin", "decision", "rule")
        ]
        late = r["loop_lateness"]
        print(
            f"| {name} | {' | '.join(cells)} | {ms(r['burst_wall']['median'])} "
            f"| {us(r['burst_cpu_per_decision']['median'])} "
            f"| {ms(late['p99'])} / {ms(late['max'])} |"
        )
    pairs = [("sqlite3", "sqla-sqlite"), ("asyncpg", "sqla-asyncpg"), ("psycopg", "sqla-psycopg")]
    print("\nSQLAlchemy Core over the raw driver, single caller, CPU µs median of read+begin "
          "(5 statements): raw, SQLAlchemy, per statement, ratio")  # fmt: skip
    for raw, sqla in pairs:
        if raw in results and sqla in results:
            a = sum(results[raw]["single_cpu"][c]["median"] for c in ("read", "begin"))
            b = sum(results[sqla]["single_cpu"][c]["median"] for c in ("read", "begin"))
            print(
                f"- {sqla} vs {raw}: {us(a)} -> {us(b)}, "
                f"+{us((b - a) / 5)} per statement, {b / a:.2f}x"
            )
    print(
        f"\none statement, the driver called directly ({args.statements} x 6 blocks), "
        "client CPU µs (wall µs), median of blocks; SQLAlchemy's extra: µs and ratio"
    )
    print("| driver | SELECT, 0 rows | SELECT, 10 rows | SQLAlchemy extra, 0 rows | 10 rows |")
    print("|---|---|---|---|---|")
    raw_of = {sqla: raw for raw, sqla in pairs}
    for name, per in per_statement.items():
        cells = [f"{per[k]['cpu'] * 1e6:,.1f} ({per[k]['wall'] * 1e6:,.1f})" for k in STATEMENTS]
        extra = ["", ""]
        raw = raw_of.get(name)
        if raw in per_statement:
            base = per_statement[raw]
            extra = [
                f"+{(per[k]['cpu'] - base[k]['cpu']) * 1e6:,.1f} "
                f"({per[k]['cpu'] / base[k]['cpu']:.2f}x)"
                for k in STATEMENTS
            ]
        print(f"| {name} | {' | '.join(cells)} | {' | '.join(extra)} |")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", type=lambda s: s.split(","), default=list(variants(Path(), "", 1))
    )
    parser.add_argument("--single", type=int, default=200, help="single-caller decisions per pass")
    parser.add_argument("--burst", type=int, default=50, help="callers in a burst")
    parser.add_argument("--rounds", type=int, default=20, help="bursts per pass")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the variants")
    parser.add_argument(
        "--statements", type=int, default=500, help="statements per block, per-statement costs"
    )
    parser.add_argument("--deployments", type=int, default=10, help="deployments per service")
    parser.add_argument("--pool", type=int, default=10, help="pool size of the async variants")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "store_backends.json"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    unknown = set(arguments.variants) - set(variants(Path(), "", 1))
    if unknown:
        sys.exit(f"unknown variants: {', '.join(sorted(unknown))}")
    outcome = asyncio.run(main(arguments))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(outcome, indent=2, default=str))
    print(f"\nwrote {arguments.output}")
