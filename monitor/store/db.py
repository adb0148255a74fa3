"""The store's database thread: one connection, owned by one thread, writes group-committed.

Every statement runs on one thread that owns the connection: the event loop never waits on
the database, and no lock is needed, since the thread runs one job at a time. The connection
is SQLite's own, or PostgreSQL's through :mod:`monitor.store.pg` (the same jobs, the same SQL
text); a :class:`Driver` says how to open it and what its errors are.

- A **write** is a function of the connection, run inside a transaction. Writes that queue
  while the thread is busy are committed together (group commit): one ``BEGIN IMMEDIATE``, a
  savepoint around each write (one that fails is undone alone and its caller gets the error),
  one ``COMMIT``, one fsync for all. A caller's await returns once its write is committed; a
  burst of a hundred writes costs one transaction instead of a hundred round trips in a line.
  A write, once submitted, is carried out even if its caller is cancelled meanwhile: the
  caller cannot know either way, and the caller's next decision reads the store anyway.
- A **read** runs between transactions, so it sees only committed writes, and a task sees
  its own writes (it awaited them).

A driver's error becomes :class:`~monitor.errors.StoreError` naming the file or the server;
a connection that broke (PostgreSQL restarted, the network dropped it) is opened again for
the next job. A commit whose answer was lost is an error to its callers, though it may have
been applied: they decide again from what the store then holds, never from the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from monitor.errors import StoreError

R = TypeVar("R")


class Row(Protocol):
    """A row by column name or position (``sqlite3.Row``, and :class:`monitor.store.pg.PgRow`)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """What a job reads back from a statement."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    def fetchall(self) -> list[Any]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """What a job may call: named parameters (``:name``) on both backends."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


Job = Callable[[Any], R]  # a function of the Connection, run on the database thread


class Driver(Protocol):
    """How a backend's connection is opened and what its errors are."""

    label: str  # what error messages name: the file, or the server with no password
    begin: str  # the statement that opens a write transaction

    def connect(self) -> Connection:
        """A new connection, outside any transaction; the driver's errors pass."""
        ...

    def is_error(self, error: BaseException) -> bool:
        """Whether ``error`` is the driver's (it becomes a StoreError)."""
        ...

    def usable(self, connection: Connection) -> bool:
        """False once the connection broke: the next job opens another."""
        ...

    def close(self, connection: Connection) -> None:
        """Close, ignoring errors."""
        ...


class SQLiteDriver:
    """A SQLite file: one connection for the store's life."""

    begin = "BEGIN IMMEDIATE"  # takes the write lock up front

    def __init__(self, path: Path) -> None:
        self.path = path
        self.label = str(path)

    def connect(self) -> Connection:
        # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
        connection = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        return connection

    def is_error(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.Error)

    def usable(self, connection: Connection) -> bool:
        return True

    def close(self, connection: Connection) -> None:
        assert isinstance(connection, sqlite3.Connection)
        with contextlib.suppress(sqlite3.Error):
            connection.close()


@dataclass(slots=True)
class _Write:
    job: Job[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _finished(result: R) -> R:
    """What a job returned, with a cursor closed here on the database thread (and None in its
    place): a cursor finalized later, on the loop's thread, resets a cached statement this
    thread may be running for the next job, and that statement fails with SQLITE_MISUSE
    ("bad parameter or other API misuse"). ``lambda db: db.execute(...)`` returns one."""
    if isinstance(result, sqlite3.Cursor):
        result.close()
        return None  # type: ignore[return-value]
    return result


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write happened all the same
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class Database:
    """One SQLite connection on its own thread; see the module's docstring."""

    def __init__(self, driver: Driver, connection: Connection, thread: ThreadPoolExecutor):
        self.driver = driver
        self.label = driver.label
        self._connection: Connection | None = connection
        self._thread = thread
        self._mutex = threading.Lock()  # guards _queued and _scheduled across the two threads
        self._queued: list[_Write] = []
        self._scheduled = False
        self._closed = False
        self.transactions = 0  # group commits so far (one per batch of writes)
        self.writes = 0
        self.jobs = 0  # reads and writes submitted and not yet answered

    @classmethod
    async def connect(cls, driver: Driver) -> Database:
        """Open the driver's connection on a new thread; the driver's errors and ``OSError``
        pass."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="railguard-store")
        try:
            connection = await asyncio.get_running_loop().run_in_executor(thread, driver.connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(driver, connection, thread)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.label}: the store is closed")

    def _db(self) -> Connection:
        """On the database thread: the connection, opened again if it broke."""
        connection = self._connection
        if connection is not None and self.driver.usable(connection):
            return connection
        if connection is not None:
            self.driver.close(connection)
            self._connection = None
        try:
            self._connection = self.driver.connect()
        except Exception as e:
            raise self._error(e) from e
        return self._connection

    # -- reads (and statements outside any transaction) --------------------------------------

    async def run(self, job: Job[R]) -> R:
        """Run ``job`` on the database thread outside a transaction (reads, setup)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        self.jobs += 1
        try:
            return await loop.run_in_executor(self._thread, self._guarded, job)
        finally:
            self.jobs -= 1

    def _guarded(self, job: Job[R]) -> R:
        try:
            return _finished(job(self._db()))
        except Exception as e:
            error = self._error(e)
            if error is e:
                raise
            raise error from e

    # -- writes ------------------------------------------------------------------------------

    async def write(self, job: Job[R]) -> R:
        """Run ``job`` inside a transaction, committed with whatever else is queued."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        with self._mutex:
            self._queued.append(_Write(job, future, loop))
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            self._thread.submit(self._commit_queued)
        self.jobs += 1
        try:
            return await future
        finally:
            self.jobs -= 1

    def _commit_queued(self) -> None:
        """On the database thread: every write queued so far, in one transaction."""
        with self._mutex:
            batch, self._queued = self._queued, []
            self._scheduled = False
        if not batch:
            return
        outcomes = self._transaction(batch)
        self.transactions += 1
        self.writes += len(batch)
        for write, (result, error) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                write.loop.call_soon_threadsafe(_settle, write.future, result, error)

    def _transaction(self, batch: list[_Write]) -> list[tuple[Any, BaseException | None]]:
        try:
            db = self._db()
            db.execute(self.driver.begin)
        except Exception as e:
            return [(None, self._error(e)) for _ in batch]
        results: list[Any] = []
        try:
            # Every SQLite call hands the GIL back and waits to get it again, up to a switch
            # interval when the loop is busy: a batch runs as few statements as it can, so
            # savepoints only when a write in it fails.
            for write in batch:
                results.append(_finished(write.job(db)))
        except Exception as e:
            self._roll_back(db)
            if len(batch) == 1 or not self.driver.usable(db):
                return [(None, self._error(e)) for _ in batch]
            # A statement the database refused (a lock waited for until the statement
            # timeout, a value it cannot store) is not run again: it would fail as slowly,
            # the whole store waiting behind it. A job's own refusal may name what the undone
            # batch held (an intent's id): that job runs again.
            failed = len(results) if self.driver.is_error(e) else None
            return self._one_by_one(batch, failed, self._error(e))
        try:
            db.execute("COMMIT")
        except Exception as e:  # the transaction failed (or its answer was lost)
            self._roll_back(db)
            return [(None, self._error(e)) for _ in batch]
        return [(result, None) for result in results]

    def _roll_back(self, db: Connection) -> None:
        try:
            db.execute("ROLLBACK")
        except Exception as e:  # a broken connection: opened again for the next job
            if not self.driver.is_error(e):
                raise

    def _one_by_one(
        self, batch: list[_Write], failed: int | None, error: Exception
    ) -> list[tuple[Any, BaseException | None]]:
        """The batch again, after one of its writes failed: each write in a savepoint, so the
        one that fails is undone alone and the others commit; the write ``failed`` (if any)
        is not run again, its caller gets ``error``."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        db = self._db()
        try:
            db.execute(self.driver.begin)
            for i, write in enumerate(batch):
                if i == failed:
                    outcomes.append((None, error))
                    continue
                db.execute("SAVEPOINT write")
                try:
                    result = _finished(write.job(db))
                except Exception as e:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append((None, self._error(e)))
                else:
                    db.execute("RELEASE write")
                    outcomes.append((result, None))
            db.execute("COMMIT")
        except Exception as e:  # the transaction itself failed: none of it happened
            if not self.driver.is_error(e):
                raise
            self._roll_back(db)
            return [(None, self._error(e)) for _ in batch]
        return outcomes

    def _error(self, error: Exception) -> Exception:
        """What a caller gets: the driver's errors name the file or server, others pass."""
        if isinstance(error, UnicodeEncodeError):  # a lone surrogate (JSON's "\udcff" from
            # an API) neither backend can store: the value's fault, not the program's
            return StoreError(f"{self.label}: text that is not valid Unicode: {error}")
        if isinstance(error, OverflowError):  # sqlite3's for an int beyond 64 bits (PG's
            # "bigint out of range" is the driver's error already)
            return StoreError(f"{self.label}: a number too large to store: {error}")
        if isinstance(error, StoreError) or not self.driver.is_error(error):
            return error
        return StoreError(f"{self.label}: {error}")

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish the queued writes, then close the connection and the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._finish)
        finally:
            self._thread.shutdown(wait=False)

    def _finish(self) -> None:
        self._commit_queued()
        if self._connection is not None:
            self.driver.close(self._connection)
            self._connection = None
