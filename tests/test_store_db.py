"""The store's database thread: group commit, one failing write undone alone, commit failures,
cancelled callers, closing with writes queued. Real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from monitor.clock import FakeClock
from monitor.errors import StoreError
from monitor.store import open_store
from monitor.store.db import Database
from monitor.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    async with await open_store(tmp_path / "railguard.db") as s:
        yield s


def database(store: SQLiteStore) -> Database:
    return store._db


@contextlib.contextmanager
def one_batch(store: SQLiteStore) -> Iterator[None]:
    """Hold the database thread so that the writes queued meanwhile form one batch."""
    release = threading.Event()
    database(store)._thread.submit(release.wait)
    try:
        yield
    finally:
        release.set()


async def test_writes_queued_together_share_one_transaction(store: SQLiteStore) -> None:
    db = database(store)
    before = db.transactions
    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.save_rule_state(f"svc-{i}", "error-rate", {"n": i}, T0))
            for i in range(200)
        ]
        await asyncio.sleep(0)
    await asyncio.gather(*writes)
    assert db.transactions == before + 1  # grouped: one transaction for the 200
    assert db.writes >= 200
    for i in (0, 99, 199):
        assert await store.rule_states(f"svc-{i}") == {"error-rate": {"n": i}}


async def test_a_failing_write_is_undone_alone(store: SQLiteStore) -> None:
    intent = await store.begin_rollback(
        "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=False
    )
    await store.advance_rollback(intent.id, "sent", at=T0)
    before = database(store).transactions
    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.freeze("api", "before", "ana", T0)),
            asyncio.ensure_future(store.note_attempt(intent.id, T0)),  # not an intent: refused
            asyncio.ensure_future(store.mark_good("api", "never-recorded", T0, "x", {})),
            asyncio.ensure_future(store.record_event("api", "note", T0, {"i": 1})),
        ]
        await asyncio.sleep(0)  # all four queued behind the held thread
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert database(store).transactions == before + 1  # one batch
    assert isinstance(results[1], StoreError)
    assert "not an intent" in str(results[1])
    assert isinstance(results[2], StoreError)
    assert "never recorded" in str(results[2])
    assert await store.frozen("api", T0) is not None
    assert [e.data for e in await store.events("api")] == [{"i": 1}]
    record = await store.rollback(intent.id)
    assert record is not None
    assert record.attempts == 0


async def test_a_statement_the_database_refused_in_a_batch_is_not_run_again(
    store: SQLiteStore,
) -> None:
    """The batch is run again in savepoints without it: a write that waited for a lock until
    the statement timeout (PostgreSQL's lease row) would otherwise wait as long again, and
    every read and write of the store behind it."""
    runs = 0

    def waited_and_failed(db: sqlite3.Connection) -> None:
        nonlocal runs
        runs += 1
        db.execute("SELECT * FROM nowhere")  # refused by the database, as a timeout is

    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.freeze("api", "before", "ana", T0)),
            asyncio.ensure_future(store._write(waited_and_failed)),
            asyncio.ensure_future(store.record_event("api", "note", T0, {"i": 1})),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert runs == 1
    assert isinstance(results[1], StoreError)
    assert "nowhere" in str(results[1])
    assert await store.frozen("api", T0) is not None  # the others committed
    assert [e.data for e in await store.events("api")] == [{"i": 1}]


@pytest.mark.parametrize("where", ["service", "reason"])
async def test_text_that_is_not_unicode_is_a_store_error_and_the_next_write_succeeds(
    store: SQLiteStore, where: str
) -> None:
    """A lone surrogate (JSON's "\\udcff" from an API) is no UTF-8: neither backend stores
    it, and it is the store's error, said like any other, not a UnicodeEncodeError."""
    bad = "a\udcff"
    service, reason = (bad, "ok") if where == "service" else ("api", bad)
    with pytest.raises(StoreError, match="not valid Unicode"):
        await store.freeze(service, reason, "ana", T0)
    with pytest.raises(StoreError, match="not valid Unicode"):
        await store.frozen(bad, T0)  # a read too
    with one_batch(store):  # in a batch: undone alone
        writes = [
            asyncio.ensure_future(store.freeze(service, reason, "ana", T0)),
            asyncio.ensure_future(store.freeze("web", "ok", "ana", T0)),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[0], StoreError)
    assert await store.frozen("web", T0) is not None
    # Inside JSON it is escaped, so it round-trips.
    await store.record_event("api", "note", T0, {"body": bad})
    assert [e.data for e in await store.events("api")] == [{"body": bad}]


async def test_a_number_beyond_64_bits_is_a_store_error_and_the_next_write_succeeds(
    store: SQLiteStore,
) -> None:
    with pytest.raises(StoreError, match=r"too large|out of range"):
        await store.events(limit=2**64)
    with pytest.raises(StoreError):  # a write (PostgreSQL finds no such intent)
        await store.note_attempt(2**64, T0)
    await store.freeze("api", "ok", "ana", T0)
    assert await store.frozen("api", T0) is not None


@pytest.mark.sqlite_only
async def test_a_transaction_that_cannot_begin_fails_its_writes_and_the_next_succeeds(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "railguard.db"
    async with await open_store(path) as store:
        await store._read(lambda db: db.execute("PRAGMA busy_timeout=0"))
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(StoreError, match=r"railguard\.db: database is locked"):
                await store.freeze("api", "held", "ana", T0)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.frozen("api", T0) is None
        await store.freeze("api", "now", "ana", T0)
        frozen = await store.frozen("api", T0)
        assert frozen is not None
        assert frozen.reason == "now"


@pytest.mark.sqlite_only
async def test_a_failed_commit_fails_every_write_of_the_batch(store: SQLiteStore) -> None:
    # A deferred constraint is checked at COMMIT: the transaction as a whole fails there.
    await store._read(
        lambda db: db.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
        )
    )

    def violates_at_commit(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO child (p) VALUES (42)")

    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.freeze("api", "x", "ana", T0)),
            asyncio.ensure_future(store._write(violates_at_commit)),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results)
    assert "FOREIGN KEY" in str(results[0])
    assert await store.frozen("api", T0) is None  # none of the batch happened
    await store.freeze("web", "y", "ana", T0)  # and the connection is usable again
    assert await store.frozen("web", T0) is not None


async def test_a_cancelled_callers_write_is_still_committed(store: SQLiteStore) -> None:
    task = asyncio.create_task(store.freeze("api", "decided", "ana", T0))
    await asyncio.sleep(0)  # the write is queued
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.frozen("api", T0) is not None  # a read queues behind the write


async def test_close_finishes_queued_writes_then_refuses(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    store = await open_store(path)
    writes = [
        asyncio.create_task(store.record_event("api", "note", T0, {"i": i})) for i in range(20)
    ]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*writes)
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.freeze("api", "late", "ana", T0)
    with pytest.raises(StoreError, match="closed"):
        await store.frozen("api", T0)
    async with await open_store(path) as again:
        assert len(await again.events("api")) == 20


@pytest.mark.sqlite_only
async def test_a_read_error_names_the_file(store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match=r"railguard\.db: no such table"):
        await store._fetch("SELECT * FROM nowhere", {})


async def test_the_intent_and_its_event_are_one_write(store: SQLiteStore) -> None:
    def started(record: object) -> tuple[str, dict[str, object]]:
        return "rollback_started", {"rollback": getattr(record, "id", None)}

    intent = await store.begin_rollback(
        "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=False, event=started
    )
    assert [(e.kind, e.data) for e in await store.events("api")] == [
        ("rollback_started", {"rollback": intent.id})
    ]
    # A second intent is refused, and so records no event.
    with pytest.raises(StoreError, match="already in progress"):
        await store.begin_rollback(
            "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=False, event=started
        )
    assert len(await store.events("api")) == 1


async def test_an_event_that_cannot_be_made_undoes_the_intent(store: SQLiteStore) -> None:
    def broken(record: object) -> tuple[str, dict[str, object]]:
        raise ValueError("cannot render")

    with pytest.raises(ValueError, match="cannot render"):
        await store.begin_rollback(
            "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=False, event=broken
        )
    assert await store.rollbacks("api") == []
    assert await store.events("api") == []


async def test_service_records_read_in_one_go(store: SQLiteStore) -> None:
    for i in range(3):
        await store.upsert_deployment(
            "api",
            id=f"d{i}",
            status="SUCCESS",
            created_at=T0 + i,
            can_rollback=True,
            meta={},
            seen_at=T0 + i,
            live=True,
        )
    await store.upsert_deployment(
        "web",
        id="w",
        status="SUCCESS",
        created_at=T0,
        can_rollback=True,
        meta={},
        seen_at=T0,
        live=True,
    )
    await store.freeze("api", "expired", "ana", T0, until=T0 + 10)
    done = await store.begin_rollback(
        "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=True
    )
    records = await store.service_records("api", T0 + 5, deployments=2, rollbacks=5)
    assert [r.id for r in records.records] == ["d2", "d1"]
    assert records.frozen is not None
    assert records.frozen.reason == "expired"
    assert [r.id for r in records.rollbacks] == [done.id]
    later = await store.service_records("api", T0 + 10)
    assert later.frozen is None  # expired at `until`
    assert len(later.records) == 3
    assert (await store.service_records("nobody", T0)).records == ()


async def test_an_intent_sent_at_once_counts_its_first_attempt_with_it(
    store: SQLiteStore,
) -> None:
    intent = await store.begin_rollback(
        "api", "d2", "d1", "auto", "railguard", "r", "bad", {}, T0, dry_run=False, attempt=True
    )
    assert (intent.state, intent.attempts, intent.attempted_at) == ("intent", 1, T0)
    again = await store.note_attempt(intent.id, T0 + 30)  # a resend counts on from there
    assert (again.attempts, again.attempted_at) == (2, T0 + 30)
    dry = await store.begin_rollback(
        "web", "w2", "w1", "auto", "railguard", "r", "bad", {}, T0, dry_run=True, attempt=True
    )
    assert (dry.state, dry.attempts, dry.attempted_at) == ("dry_run", 0, None)


async def test_the_intent_returned_is_the_one_stored(store: SQLiteStore) -> None:
    for dry_run, attempt in [(False, False), (True, False), (False, True)]:
        service = f"svc-{dry_run}-{attempt}"
        made = await store.begin_rollback(
            service,
            "d2",
            "d1",
            "manual",
            "ana",
            None,
            "why",
            {"samples": ({"at": T0},), "n": 1},
            T0,
            dry_run=dry_run,
            attempt=attempt,
        )
        assert made == await store.rollback(made.id)


@pytest.mark.sqlite_only
async def test_a_cursor_a_job_returns_is_closed_on_the_database_thread(
    store: SQLiteStore,
) -> None:
    """Finalized later on the loop's thread, a cursor resets a cached statement the database
    thread may be running for the next job: that write fails with SQLITE_MISUSE. Closing it
    where it ran leaves nothing to finalize elsewhere."""
    db = database(store)
    seen: list[sqlite3.Cursor] = []

    def job(connection: sqlite3.Connection) -> sqlite3.Cursor:
        cursor = connection.execute("SELECT 1")
        seen.append(cursor)
        return cursor

    assert await db.write(job) is None
    assert await db.run(job) is None
    for cursor in seen:
        with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
            cursor.fetchall()
    # Many writes returning cursors, queued together, as a busy daemon queues them.
    sql = "INSERT INTO cursors (name, value) VALUES (:name, 'x')"
    await asyncio.gather(
        *(store._write(lambda c, i=i: c.execute(sql, {"name": f"n{i}"})) for i in range(500))
    )
    assert len(await store._fetch("SELECT name FROM cursors", {})) == 500
