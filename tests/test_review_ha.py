"""Adversarial review of high availability (issue 14): each test is a finding."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.channels.base import ChannelConfig
from monitor.alerts.model import Severity
from monitor.alerts.outbox import Outbox
from monitor.alerts.router import CURSOR, GAP_WAIT, Router
from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.errors import ConfigError, NotLeader
from monitor.events import EventKind, FreezeEvent
from monitor.leadership import Leader, replica_id
from monitor.model import Phase
from monitor.planning import build_plan
from monitor.store import open_store
from monitor.store.outbox import OutboxRecord
from monitor.store.sql import SqlStore
from monitor.telemetry import Metrics
from tests.alerts.test_outbox import HookChannel, Receiver, note, receiver
from tests.alerts.test_router import Recorder, World, _new_process, world
from tests.helpers import until
from tests.stage import Stage
from tests.test_leadership import TERMS, Replicas, Watched, baked, replicas, stage

__all__ = ["receiver", "replicas", "stage", "world"]  # the fixtures

ROUTER_CONFIG = """
[[services]]
name = "web"
tier = "production"
health_url = "http://127.0.0.1:9/health"
[tiers.production]
rules = ["health-failing"]
"""

# -- DATABASE_URL: what libpq refuses only when it connects is said by `check` (exit 2) ------


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:s3cr%zzet@db:5432/railguard", "invalid percent-encoded token"),
        ("postgresql://u:s3cret@db:5432/railguard?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://u:s3cret@db:notaport/railguard", "port 'notaport'"),
        ("postgresql://u:s3cret@db:5432/railguard?port=99999", "port '99999'"),
        ("postgresql://u:s3cret@db:5432/railguard?sslmode=bogus", "sslmode 'bogus'"),
        ("postgresql://u:s3cret@[::1/railguard", 'matching "]"'),
    ],
)
def test_a_database_url_libpq_cannot_use_is_a_config_error_without_the_password(
    url: str, said: str
) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: ") as e:
        load_environment({"DATABASE_URL": url})
    assert said in str(e.value)
    assert "s3cr" not in str(e.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:s3cret@db:5432/railguard",  # Heroku's scheme
        "postgresql://u:s3%40cret@db/railguard?sslmode=require",
        "postgresql://u:pw@h1:5432,h2:5433/railguard?target_session_attrs=read-write",
        "postgresql:///railguard?host=/var/run/postgresql",
        "postgresql://u@%2Fvar%2Frun%2Fpostgresql/railguard",
    ],
)
def test_a_database_url_libpq_can_use_is_kept(url: str) -> None:
    kept = load_environment({"DATABASE_URL": url}).database_url
    assert kept is not None
    assert kept.get_secret_value() == url


# -- the outbox: a claim that answers after the leader's view ran out sends nothing ---------


class Deposable:
    """Leads until told otherwise (``Acting``)."""

    def __init__(self) -> None:
        self.lead = True
        self.refusals: list[str] = []

    def leading(self) -> bool:
        return self.lead

    def refused(self, task: str, error: NotLeader) -> None:
        self.refusals.append(task)


class SlowClaims:
    """The store, with each outbox claim's commit answering only once the replica's view has
    run out (PostgreSQL slow to answer: the lease's renewals are not answered either)."""

    def __init__(self, store: SqlStore, acting: Deposable) -> None:
        self.store, self.acting = store, acting
        self.slow = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def outbox_claim(self, id: int, at: float) -> OutboxRecord:
        claimed = await self.store.outbox_claim(id, at)
        if self.slow:
            self.acting.lead = False  # the view ran out while the commit was on its way
        return claimed


async def test_a_claim_answered_after_the_view_ran_out_is_not_sent(
    receiver: tuple[Receiver, str], clock: FakeClock, tmp_path: Path
) -> None:
    r, url = receiver
    acting = Deposable()
    async with aiohttp.ClientSession() as session:
        store = await open_store(tmp_path / "state.db")
        slow = SlowClaims(store, acting)
        outbox = Outbox(
            slow,
            {"hook": HookChannel(session, url)},
            clock=clock,
            metrics=Metrics(CollectorRegistry()),
            acting=acting,
            seed=1,
        )
        await outbox.start()
        assert await outbox.put("hook", note(1, clock))
        await until(lambda: not acting.lead, "the claim")
        await until(lambda: not store.busy and clock.sleepers > 0, "the worker to settle")
        # Deposed before the send: nothing goes out; the next leader sends it, once.
        assert r.attempts == 0
        (message,) = await store.outbox("hook")
        assert message.state == "pending"
        slow.slow, acting.lead = False, True  # a takeover (a new epoch)
        for _ in range(20):
            if r.got:
                break
            await clock.advance(1)
        await until(lambda: r.got == ["m1"], "the new leader's send")
        await outbox.stop()
        await store.close()
    assert r.got == ["m1"]


# -- the router's cursor: an event another replica commits late is still routed -------------


async def test_an_event_committed_after_a_later_one_was_routed_is_still_routed(
    postgres: str, clock: FakeClock, write: Callable[..., Path]
) -> None:
    # Ids come from a sequence when a transaction inserts, not when it commits: a standby's
    # freeze (the admin API answers on every replica) holds id N in a transaction still open
    # while the leader's event N+1 commits and is routed; the cursor must not pass N.
    plan = build_plan(write(ROUTER_CONFIG), load_environment({}), {})
    store = await open_store(Path("x"), database_url=postgres)
    metrics = Metrics(CollectorRegistry())
    channels = {"pager": ChannelConfig(min_severity=Severity.CRITICAL)}
    outbox = Outbox(store, {"pager": Recorder("pager")}, clock=clock, metrics=metrics)
    router = Router(
        store, outbox, channels, {s.name: s for s in plan.services}, clock=clock, metrics=metrics
    )
    standby = await psycopg.AsyncConnection.connect(postgres)  # a transaction of its own
    try:
        frozen = FreezeEvent(kind=EventKind.FROZEN, reason="incident", actor="ops")
        await standby.execute(
            "INSERT INTO events (service, kind, at, data) VALUES (%s, %s, %s, %s)",
            ("web", "frozen", clock.time(), json.dumps(frozen.to_dict())),
        )
        await store.record_event(
            "web", "rule_firing", clock.time(), {"rule": "health-failing", "reason": "500"}
        )
        assert await router.route_new() == 1
        await standby.commit()
        await clock.advance(60)
        await router.route_new()
        kinds = [m.payload["kind"] for m in reversed(await store.outbox("pager"))]
        assert kinds == ["rule_firing", "frozen"]
        # A transaction rolled back leaves a gap for ever: what follows is routed at once,
        # and the cursor passes the gap once it has been waited for.
        await standby.execute(
            "INSERT INTO events (service, kind, at, data) VALUES (%s, %s, %s, %s)",
            ("web", "frozen", clock.time(), json.dumps(frozen.to_dict())),
        )
        await standby.rollback()
        resolved = await store.record_event(
            "web", "rule_resolved", clock.time(), {"rule": "health-failing"}
        )
        assert await router.route_new() == 1
        assert await store.cursor(CURSOR) != str(resolved)
        await clock.advance(GAP_WAIT)
        assert await router.route_new() == 0
        assert await store.cursor(CURSOR) == str(resolved)
    finally:
        await standby.close()
        await store.close()


# -- a takeover's reconcile that waits on Railway longer than a lease lasts -----------------


async def test_a_slow_takeover_keeps_renewing_and_no_other_replica_takes_the_lease(
    postgres: str, clock: FakeClock
) -> None:
    # The takeover reconciles an unfinished intent against Railway: one request may take
    # 15s (5 attempts, more), longer than the lease's ttl. Meanwhile the lease is renewed:
    # otherwise it runs out, another replica takes it and reconciles as slowly, and so on,
    # and no replica ever leads (no notification either) while Railway is slow.
    a, b = (Watched(postgres, name, clock, mirror=None) for name in "ab")
    railway = asyncio.Event()
    reconciling: list[float] = []

    async def takeover() -> None:
        reconciling.append(clock.monotonic())
        await railway.wait()

    leader = Leader(a, clock=clock, metrics=Metrics(CollectorRegistry()), takeover=takeover)
    task = asyncio.create_task(leader.run())
    try:
        await until(lambda: bool(reconciling), "the takeover")
        for _ in range(10):  # 30s: three times the ttl
            await clock.advance(TERMS.renew_every)
            await until(lambda: not a.busy, "a's look")
            await b.look()
            assert b.view.epoch is None, "b took the lease while a reconciled"
            assert b.holder == "a"
            # The lease loop beats: the supervisor does not call it stalled (/healthz red).
            assert leader.last_beat is not None
            assert clock.monotonic() - leader.last_beat < TERMS.renew_every
        railway.set()
        await until(leader.leading, "a leads")
        assert leader.epoch() == 1
        assert len(reconciling) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- a rule's transition seen while this replica stood by is told when it takes over -------


async def test_a_rule_that_fired_while_this_replica_stood_by_is_told_when_it_takes_over(
    stage: Stage, replicas: Replicas
) -> None:
    stage.tier_extra = "auto_rollback = false"  # told, not rolled back: the page is all
    a, b = await baked(stage, replicas, "a", "b")
    await replicas.stop(a, clean=False)  # the leader dies ...
    stage.deploy("v2")  # ... as a bad release goes live: b's rule fires before it leads
    await replicas.run_until(b.leading, "b takes over")
    assert b.daemon.workers[0].states["error-rate"].phase is Phase.FIRING
    await replicas.run(3)
    kinds = [e.kind for e in await b.store.events("web")]
    assert "rule_firing" in kinds


async def test_a_rule_that_resolved_while_this_replica_stood_by_is_told_when_it_takes_over(
    stage: Stage, replicas: Replicas
) -> None:
    stage.tier_extra = "auto_rollback = false"
    a, b = await baked(stage, replicas, "a", "b")
    stage.deploy("v2")
    await replicas.run_until(
        lambda: a.daemon.workers[0].states["error-rate"].phase is Phase.FIRING, "a's rule fires"
    )
    await replicas.run(1)
    assert "rule_firing" in [e.kind for e in await a.store.events("web")]  # told by a
    await replicas.stop(a, clean=False)  # the leader dies ...
    stage.deploy("v3")  # ... and a good release ends the incident before b leads
    await replicas.run_until(b.leading, "b takes over")
    assert b.daemon.workers[0].states["error-rate"].phase is Phase.INACTIVE
    await replicas.run(3)
    kinds = [e.kind for e in await b.store.events("web")]
    # Else the incident stays open on b's router, and its reminders repeat for ever.
    assert kinds.count("rule_resolved") == 1, kinds


# -- two processes under one RAILWAY_REPLICA_ID ----------------------------------------------


async def test_two_processes_with_one_replica_id_do_not_both_lead(
    postgres: str, clock: FakeClock
) -> None:
    # Two processes given one id (a copied variable, a replica's last run still alive): the
    # one that holds the lease renews it; the other follows until it expires, then takes it
    # under a new epoch (which fences the first), never renewing the first's.
    first, second = (Watched(postgres, replica_id("replica-1"), clock, mirror=None) for _ in "ab")
    await first.look()
    for _ in range(4):
        await second.look()
        assert first.view.may_act(clock.monotonic())
        assert second.view.epoch is None, "both lead, under one epoch"
        await clock.advance(TERMS.renew_every)
        await first.look()
    await clock.advance(TERMS.ttl)  # the first dies
    await second.look()
    assert (second.view.epoch, second.view.may_act(clock.monotonic())) == (2, True)
    await first.look()  # it was only paused: it finds its lease taken, and follows
    assert first.view.epoch is None


# -- a release the standby verified first is still announced -------------------------------


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0, 1.5])
async def test_a_release_the_standby_verified_first_is_still_announced(
    stage: Stage, replicas: Replicas, offset: float
) -> None:
    # Both replicas bake what they see; the one whose poll saw the release first marks it
    # known-good first. The leader, finding it good already, must still tell it.
    stage.deploy("v1", ago=7200)
    a = await replicas.start("a")
    b = await replicas.start("b")
    assert a.leading()
    await replicas.run(1.0 + offset)
    v11 = stage.deploy("v1.1")
    await replicas.run(20)
    (record,) = [r for r in await a.store.deployments("web") if r.id == v11.id]
    assert record.verdict == "good"
    told = [e.data.get("deployment") for e in await a.store.events("web")]
    assert told.count(v11.id) == 1, told
    assert b.daemon.workers


# -- reminders: a takeover (or a restart) does not repeat one just sent ---------------------


async def test_a_takeover_does_not_repeat_a_reminder_just_sent(world: World) -> None:
    await world.record("web-production", "escalation", kind="rollback_failed", why="it broke")
    await world.router.route_new()
    await world.clock.advance(3600)
    assert await world.router.remind() == 1  # the old leader reminds, then dies
    await world.clock.advance(60)
    router = _new_process(world)  # the new leader
    await router.restore()
    assert await router.remind() == 0  # reminded a minute ago: not again for an hour
    await world.clock.advance(3540)
    assert await router.remind() == 1
