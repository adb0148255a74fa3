"""The leader lease on a real PostgreSQL: one leader, fenced epochs, takeovers, a leader cut off."""

from __future__ import annotations

import asyncio

import psycopg

from monitor.clock import FakeClock
from monitor.lease import LeaseTerms
from monitor.store.lease_pg import SCHEMA, Connection, PgLease, connector, server_time

TERMS = LeaseTerms(ttl=10.0, renew_every=3.0, margin=2.0)


async def connect(dsn: str) -> Connection:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def setup(dsn: str) -> None:
    connection = await connect(dsn)
    try:
        await connection.execute(SCHEMA)
    finally:
        await connection.close()


def replicas(dsn: str, clock: FakeClock, *names: str) -> list[PgLease]:
    """Replicas that read the database's clock as the test's clock (time moves on the clock)."""

    async def database_time(connection: Connection) -> float:
        return clock.time()

    return [
        PgLease(connector(dsn), name, clock=clock, terms=TERMS, database_time=database_time)
        for name in names
    ]


async def test_one_leader_and_a_takeover_with_a_new_epoch(postgres: str, clock: FakeClock) -> None:
    await setup(postgres)
    a, b, c = replicas(postgres, clock, "a", "b", "c")
    views = await asyncio.gather(a.look(), b.look(), c.look())
    leaders = [r for r, v in zip((a, b, c), views, strict=True) if v.may_act(clock.monotonic())]
    assert len(leaders) == 1  # looking at once, exactly one takes the new lease
    (leader,) = leaders
    assert leader.view.epoch == 1
    others = [r for r in (a, b, c) if r is not leader]
    # The leader renews; the others follow.
    for _ in range(3):
        await clock.advance(TERMS.renew_every)
        for replica in (leader, *others):
            await replica.look()
        assert leader.view.may_act(clock.monotonic())
        assert not any(r.view.may_act(clock.monotonic()) for r in others)
    # The leader dies (looks no more): the others take over once the lease expires, with
    # a new epoch, within ttl + one look.
    died = clock.monotonic()
    while not any(r.view.may_act(clock.monotonic()) for r in others):
        await clock.advance(TERMS.renew_every)
        await asyncio.gather(*(r.look() for r in others))
        assert clock.monotonic() - died <= TERMS.takeover_within
    (successor,) = [r for r in others if r.view.may_act(clock.monotonic())]
    assert successor.view.epoch == 2
    assert not leader.view.may_act(clock.monotonic())  # ran out by itself
    # The old leader comes back: it finds another holder and follows.
    await leader.look()
    assert leader.view.epoch is None


async def test_the_fence_checks_the_epoch_in_the_callers_transaction(
    postgres: str, clock: FakeClock
) -> None:
    await setup(postgres)
    a, b = replicas(postgres, clock, "a", "b")
    await a.look()
    connection = await connect(postgres)
    try:
        async with connection.transaction():
            assert await a.holds(connection)
            assert not await b.holds(connection)  # b holds nothing
        await clock.advance(TERMS.ttl + 1)
        await b.look()  # a's lease expired: b takes it, epoch 2
        async with connection.transaction():
            assert not await a.holds(connection)  # a deposed leader's intent is refused
            assert await b.holds(connection)
    finally:
        await connection.close()


async def test_a_leader_cut_off_from_postgres_stops_before_it_can_be_replaced(
    postgres: str, clock: FakeClock
) -> None:
    await setup(postgres)
    a, b = replicas(postgres, clock, "a", "b")
    await a.look()
    assert a.view.may_act(clock.monotonic())

    async def refused() -> Connection:
        raise OSError("connection refused")

    a.connect = refused  # PostgreSQL unreachable from a
    stopped_at = None
    for _ in range(10):
        await clock.advance(1.0)
        await a.look()
        assert a.last_error == "OSError: connection refused"
        await b.look()
        if stopped_at is None and not a.view.may_act(clock.monotonic()):
            stopped_at = clock.monotonic()
        if b.view.may_act(clock.monotonic()):
            break
    assert stopped_at is not None
    assert b.view.may_act(clock.monotonic())
    assert stopped_at < clock.monotonic()  # a had stopped before b took over


async def test_the_server_clock_is_the_default(postgres: str) -> None:
    connection = await connect(postgres)
    try:
        assert await server_time(connection) > 1.7e9
    finally:
        await connection.close()


async def test_pg_terminate_backend_is_a_failed_look(postgres: str, clock: FakeClock) -> None:
    await setup(postgres)
    (a,) = replicas(postgres, clock, "a")
    killer = await connect(postgres)
    victim_ready = asyncio.Event()

    async def connect_then_killed() -> Connection:
        connection = await connect(postgres)
        pid = connection.info.backend_pid
        await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        victim_ready.set()
        return connection

    a.connect = connect_then_killed
    try:
        view = await a.look()
    finally:
        await killer.close()
    assert victim_ready.is_set()
    assert view.epoch is None
    assert a.last_error is not None


async def test_a_look_reports_who_holds_the_lease(postgres: str, clock: FakeClock) -> None:
    await setup(postgres)
    a, b = replicas(postgres, clock, "a", "b")
    assert a.holder is None  # not looked yet
    await a.look()
    await b.look()
    assert (a.holder, b.holder) == ("a", "a")
    assert b.view.epoch is None

    async def refused() -> Connection:
        raise OSError("connection refused")

    b.connect = refused
    await b.look()
    assert b.holder == "a"  # as of the last look that answered


async def test_a_leader_whose_backend_is_killed_acts_until_its_view_runs_out(
    postgres: str, clock: FakeClock
) -> None:
    await setup(postgres)
    (a,) = replicas(postgres, clock, "a")
    await a.look()
    assert a.view.may_act(clock.monotonic())
    killer = await connect(postgres)

    async def connect_then_killed() -> Connection:
        connection = await connect(postgres)
        await killer.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
        return connection

    a.connect = connect_then_killed
    try:
        await clock.advance(TERMS.renew_every)
        view = await a.look()
        assert view.epoch == 1  # the failed renewal leaves the view as it was
        assert a.last_error is not None
        await clock.advance(TERMS.ttl - TERMS.margin - TERMS.renew_every)
        assert not a.view.may_act(clock.monotonic())  # ran out before the lease could expire
    finally:
        await killer.close()


async def test_a_release_lets_another_replica_take_over_at_its_next_look(
    postgres: str, clock: FakeClock
) -> None:
    await setup(postgres)
    a, b = replicas(postgres, clock, "a", "b")
    await a.look()
    await b.release()  # holds nothing: nothing to give up
    await b.look()
    assert b.view.epoch is None
    await a.release()
    assert a.view.epoch is None  # it stopped acting first
    await b.look()
    assert b.view.epoch == 2  # taken at once, under a new epoch

    async def refused() -> Connection:
        raise OSError("connection refused")

    b.connect = refused
    await b.release()  # cannot reach the database: the lease expires by itself
    assert b.view.epoch is None
    assert b.last_error == "OSError: connection refused"
