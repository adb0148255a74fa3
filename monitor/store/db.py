"""The store's database thread: one SQLite connection, owned by one thread, writes group-committed.

Every statement runs on one thread that owns the connection: the event loop never waits on
SQLite, and no lock is needed, since the thread runs one job at a time.

- A **write** is a function of the connection, run inside a transaction. Writes that queue
  while the thread is busy are committed together (group commit): one ``BEGIN IMMEDIATE``, a
  savepoint around each write (one that fails is undone alone and its caller gets the error),
  one ``COMMIT``, one fsync for all. A caller's await returns once its write is committed; a
  burst of a hundred writes costs one transaction instead of a hundred round trips in a line.
  A write, once submitted, is carried out even if its caller is cancelled meanwhile: the
  caller cannot know either way, and the caller's next decision reads the store anyway.
- A **read** runs between transactions, so it sees only committed writes, and a task sees
  its own writes (it awaited them).

``sqlite3.Error`` becomes :class:`~monitor.errors.StoreError` naming the file.
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
from typing import Any, TypeVar

from monitor.errors import StoreError

R = TypeVar("R")
Job = Callable[[sqlite3.Connection], R]


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

    def __init__(self, path: Path, connection: sqlite3.Connection, thread: ThreadPoolExecutor):
        self.path = path
        self._connection = connection
        self._thread = thread
        self._mutex = threading.Lock()  # guards _queued and _scheduled across the two threads
        self._queued: list[_Write] = []
        self._scheduled = False
        self._closed = False
        self.transactions = 0  # group commits so far (one per batch of writes)
        self.writes = 0

    @classmethod
    async def connect(cls, path: Path) -> Database:
        """Open ``path`` (or ``:memory:``) on a new thread; ``sqlite3.Error``/``OSError`` pass."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="railguard-store")

        def connect() -> sqlite3.Connection:
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE ... COMMIT).
            connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            return connection

        try:
            connection = await asyncio.get_running_loop().run_in_executor(thread, connect)
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(path, connection, thread)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")

    # -- reads (and statements outside any transaction) --------------------------------------

    async def run(self, job: Job[R]) -> R:
        """Run ``job`` on the database thread outside a transaction (reads, setup)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._guarded, job)

    def _guarded(self, job: Job[R]) -> R:
        try:
            return _finished(job(self._connection))
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e

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
        return await future

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
        db = self._connection
        try:
            db.execute("BEGIN IMMEDIATE")  # takes the write lock up front (PG: plain BEGIN)
        except sqlite3.Error as e:
            return [(None, self._error(e)) for _ in batch]
        try:
            # Every SQLite call hands the GIL back and waits to get it again, up to a switch
            # interval when the loop is busy: a batch runs as few statements as it can, so
            # savepoints only when a write in it fails.
            results = [_finished(write.job(db)) for write in batch]
        except Exception as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if len(batch) == 1:
                return [(None, self._error(e))]
            return self._one_by_one(batch)
        try:
            db.execute("COMMIT")
        except sqlite3.Error as e:  # the transaction itself failed: none of it happened
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return [(None, self._error(e)) for _ in batch]
        return [(result, None) for result in results]

    def _one_by_one(self, batch: list[_Write]) -> list[tuple[Any, BaseException | None]]:
        """The batch again, after one of its writes failed: each write in a savepoint, so
        the one that fails is undone alone and the others commit."""
        db = self._connection
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for write in batch:
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
        except sqlite3.Error as e:  # the transaction itself failed: none of it happened
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return [(None, self._error(e)) for _ in batch]
        return outcomes

    def _error(self, error: Exception) -> Exception:
        """What a write's caller gets: sqlite's errors name the file, others pass as they are."""
        return StoreError(f"{self.path}: {error}") if isinstance(error, sqlite3.Error) else error

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
        self._connection.close()
