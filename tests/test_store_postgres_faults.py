"""The store on PostgreSQL under faults: a commit whose answer is lost, a connection killed in
the middle of a batch, the lease row locked past the statement timeout, two replicas racing
for one rollback. A real server, reached through a TCP proxy the test can cut
(tests/pg_proxy.py)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.clock import FakeClock
from monitor.errors import NotLeader, StoreError
from monitor.store import Fence, RollbackRecord, open_store
from monitor.store import pg as pg_module
from monitor.store.db import Connection
from monitor.store.sql import SqlStore
from tests.pg_proxy import Proxy

T0 = 1_700_000_000.0


@pytest.fixture
async def proxied(postgres: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A proxy to the test's database, and the URL that goes through it."""
    proxy = await Proxy.to(postgres)
    try:
        yield proxy, proxy.url(postgres)
    finally:
        await proxy.close()


@pytest.fixture
async def store(proxied: tuple[Proxy, str], clock: FakeClock) -> AsyncIterator[SqlStore]:
    async with await open_store(Path("unused"), database_url=proxied[1]) as s:
        yield s


@contextlib.contextmanager
def one_batch(store: SqlStore) -> Iterator[None]:
    """Hold the database thread so that the writes queued meanwhile form one batch."""
    release = threading.Event()
    store._db._thread.submit(release.wait)
    try:
        yield
    finally:
        release.set()


async def begin(store: SqlStore, service: str = "api") -> RollbackRecord:
    return await store.begin_rollback(
        service, "d2", "d1", "auto", "railguard", "error-rate", "why", {}, T0, False, attempt=True
    )


async def test_a_commit_whose_answer_was_lost_is_an_error_and_the_intent_is_found_once(
    store: SqlStore, proxied: tuple[Proxy, str]
) -> None:
    """The intent committed, its caller was told it failed: the caller decides again from
    what the store holds, and finds the intent to drive, never room for a second one."""
    proxy, _ = proxied
    proxy.lose_answer_to = b"COMMIT"
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        await begin(store)
    assert proxy.answers_lost == 1
    unfinished = await store.rollbacks(unfinished=True)  # a new connection
    assert [(r.service, r.state, r.attempts) for r in unfinished] == [("api", "intent", 1)]
    with pytest.raises(StoreError, match=rf"already in progress \(#{unfinished[0].id}\)"):
        await begin(store)
    assert len(await store.rollbacks()) == 1


async def test_a_connection_killed_inside_a_batch_fails_the_batch_and_the_next_write_succeeds(
    store: SqlStore,
) -> None:
    def killed(db: Connection) -> None:  # the server goes away between BEGIN and COMMIT
        db.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.freeze("api", "x", "ana", T0)),
            asyncio.ensure_future(store._write(killed)),
            asyncio.ensure_future(store.record_event("api", "note", T0, {})),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    assert await store.frozen("api", T0) is None  # none of the batch happened
    assert await store.events("api") == []
    await store.freeze("api", "again", "ana", T0)
    assert await store.frozen("api", T0) is not None


async def test_a_batch_postgresql_aborted_is_never_reported_committed(store: SqlStore) -> None:
    """A job that catches a failed statement's error (fine on SQLite, which undoes that
    statement alone) leaves PostgreSQL's transaction aborted; its COMMIT then rolls back."""

    def swallows(db: Connection) -> None:
        with contextlib.suppress(psycopg.Error):
            db.execute("SELECT 1 / 0")

    with one_batch(store):
        writes = [
            asyncio.ensure_future(store.freeze("api", "x", "ana", T0)),
            asyncio.ensure_future(store._write(swallows)),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    assert "rolled back, not committed" in str(results[0])
    assert await store.frozen("api", T0) is None
    await store.freeze("api", "again", "ana", T0)  # the connection is fine
    assert await store.frozen("api", T0) is not None


async def test_the_lease_row_locked_past_the_statement_timeout_fails_the_fenced_write_alone(
    postgres: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It waits for the lock once, not again when the rest of its batch is run again."""
    monkeypatch.setattr(pg_module, "STATEMENT_TIMEOUT_MS", 300)
    store = await open_store(Path("x"), database_url=postgres)
    try:
        with psycopg.connect(postgres, autocommit=True) as db:
            db.execute("INSERT INTO leases VALUES ('leader', 'a', 1, 0)")
        store.fence = Fence(holder="a", epoch=lambda: 1)
        with psycopg.connect(postgres, autocommit=True) as taker:
            taker.execute("BEGIN")
            taker.execute("SELECT * FROM leases WHERE name = 'leader' FOR UPDATE")
            with one_batch(store):
                writes = [
                    asyncio.ensure_future(store.freeze("api", "x", "ana", T0)),
                    asyncio.ensure_future(begin(store)),
                    asyncio.ensure_future(store.record_event("api", "note", T0, {})),
                ]
                await asyncio.sleep(0)
            results = await asyncio.gather(*writes, return_exceptions=True)
            taker.execute("ROLLBACK")
        assert isinstance(results[1], StoreError)
        assert "statement timeout" in str(results[1])
        assert not isinstance(results[0], BaseException)
        assert not isinstance(results[2], BaseException)
        assert await store.rollbacks() == []
        assert (await begin(store)).epoch == 1  # the lock gone, the fence holds again
    finally:
        await store.close()


async def test_two_replicas_racing_for_one_rollback_write_one_intent(
    postgres: str, clock: FakeClock
) -> None:
    first = await open_store(Path("a"), database_url=postgres)
    second = await open_store(Path("b"), database_url=postgres)
    try:
        services = [f"svc-{i}" for i in range(20)]
        results = await asyncio.gather(
            *(begin(replica, s) for s in services for replica in (first, second)),
            return_exceptions=True,
        )
        for service, (a, b) in zip(
            services, zip(results[::2], results[1::2], strict=True), strict=True
        ):
            won = [r for r in (a, b) if isinstance(r, RollbackRecord)]
            lost = [r for r in (a, b) if not isinstance(r, RollbackRecord)]
            assert len(won) == 1, (service, a, b)
            assert isinstance(lost[0], StoreError)
            assert f"a rollback of {service} is already in progress (#{won[0].id})" in str(lost[0])
        assert len(await first.rollbacks(unfinished=True)) == len(services)
    finally:
        await first.close()
        await second.close()


async def test_a_deposed_replica_cut_off_mid_fenced_write_writes_nothing(
    store: SqlStore, postgres: str, proxied: tuple[Proxy, str]
) -> None:
    """The answer to a fenced intent is lost and the lease is taken meanwhile: the intent
    either committed under the old epoch (found, once) or not at all; a retry is refused."""
    proxy, _ = proxied
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute("INSERT INTO leases VALUES ('leader', 'a', 1, 0)")
    store.fence = Fence(holder="a", epoch=lambda: 1)
    proxy.lose_answer_to, proxy.answer = b"FOR SHARE", b"SELECT 1\x00"  # after the check
    with pytest.raises(StoreError):
        await begin(store)
    assert proxy.answers_lost == 1
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute("UPDATE leases SET holder = 'b', epoch = 2")
    with pytest.raises(NotLeader):
        await begin(store)
    assert await store.rollbacks() == []
