"""High availability: replicas share one leader lease on a real PostgreSQL; only the leader acts.

Two daemons run in this process against one emulated Railway, sharing one store on the test's
PostgreSQL database as production replicas do, each with a PgLease there whose clock is the
test's FakeClock (so time moves only when the test moves it): the in-process gate keeps the
standby from acting, and the store's fence checks every intent, attempt and outbox claim
against the lease's row. One test gives a replica a store of its own (another schema) with
the lease row copied in, to make the store's row say what the replica's view does not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.alerts.digest import Digest
from monitor.alerts.outbox import Outbox
from monitor.clock import FakeClock, SystemClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.errors import NotLeader
from monitor.executor import RollbackRefused
from monitor.leadership import SOLO, Leader, leadership_text, replica_id, solo_status
from monitor.lease import Leadership, LeaseRow, LeaseTerms
from monitor.model import Phase
from monitor.planning import build_plan
from monitor.statuspage import render_summary
from monitor.store import open_store
from monitor.store.lease_pg import Connection, PgLease, connector
from monitor.store.postgres import PostgresStore
from monitor.telemetry import Metrics
from tests.alerts.receivers import Receiver
from tests.helpers import until
from tests.stage import Stage
from tests.test_daemon import free_port

TERMS = LeaseTerms(ttl=10.0, renew_every=3.0, margin=2.0)  # the defaults: takeover within 13s
BAD_5XX = {"v2": {"error_ratio": 0.5}}
CHANNEL = '\n[[channels]]\ntype = "webhook"\nname = "hook"\nurl = "${HOOK_URL}"\n'


class Watched(PgLease):
    """A PgLease on the test's clock that says when a look is in flight, and may copy the
    row it leaves into another store's ``leases`` table (``mirror``: that store's URL; its
    fence then sees the lease as the lease's database has it)."""

    def __init__(self, dsn: str, me: str, clock: FakeClock, mirror: str | None) -> None:
        async def database_time(connection: Connection) -> float:
            return clock.time()

        super().__init__(connector(dsn), me, clock=clock, terms=TERMS, database_time=database_time)
        self.busy = 0
        self.mirror = mirror

    async def look(self):  # type: ignore[no-untyped-def]
        self.busy += 1
        try:
            return await super().look()
        finally:
            self.busy -= 1

    async def _claim(self) -> tuple[LeaseRow, LeaseRow | None]:
        row, written = await super()._claim()
        if self.mirror is not None:
            now = written or row
            set_lease(self.mirror, now.holder, now.epoch, now.expires_at)
        return row, written


async def refused() -> Connection:
    raise OSError("connection refused")


def set_lease(url: str, holder: str | None, epoch: int, expires_at: float = 0.0) -> None:
    """Write the lease row of the store at ``url`` (what its fence reads)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ('leader', %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "epoch = excluded.epoch, expires_at = excluded.expires_at",
            (holder, epoch, expires_at),
        )


@dataclass
class Replica:
    """One railguard of several: its daemon, its lease, its store."""

    name: str
    daemon: Daemon
    lease: Watched
    store: PostgresStore

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def leading(self) -> bool:
        assert self.daemon.leader is not None
        return self.daemon.leader.leading()


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD_5XX)
    await stage.start_servers()
    yield stage
    await stage.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as rx:
        yield rx


class Replicas:
    """Starts replicas on the stage and runs the stage until their looks are answered."""

    def __init__(self, stage: Stage, postgres: str, tmp: Path) -> None:
        self.stage, self.postgres, self.tmp = stage, postgres, tmp
        self.running: list[Replica] = []
        self.stopped: list[Replica] = []

    async def start(self, name: str, *, store_url: str | None = None) -> Replica:
        """A replica on the shared store (``store_url``: a store of its own, the lease's
        row copied into it)."""
        stage = self.stage
        environ = stage.environ
        plan = build_plan(stage.write_config(), load_environment(environ), environ)
        store = await PostgresStore.open(store_url or self.postgres)
        assert isinstance(stage.clock, FakeClock)
        lease = Watched(self.postgres, name, stage.clock, store_url)
        daemon = Daemon(
            plan,
            clock=stage.clock,
            metrics=Metrics(CollectorRegistry()),
            serve_http=False,
            store=store,
            lease=lease,
        )
        stage.sync_app()
        await daemon.startup()
        replica = Replica(name, daemon, lease, store)
        self.running.append(replica)
        await self.run(0.5)  # its first look
        return replica

    async def stop(self, replica: Replica, *, clean: bool = True) -> None:
        """The replica goes away: shut down (it gives its lease up), or not ``clean``ly
        (its lease is no longer renewed, and expires by itself)."""
        self.running.remove(replica)
        self.stopped.append(replica)
        if not clean:
            replica.lease.connect = refused
        await replica.daemon.shutdown()

    async def run(self, seconds: float) -> None:
        """Move the stage on, each step waiting for the looks it started to be answered."""
        for _ in range(round(seconds / 0.5)):
            await self.stage.run_for(0.5)
            await until(lambda: not any(r.lease.busy for r in self.running), "looks in flight")

    async def run_until(self, condition: object, what: str, limit: float = 60.0) -> float:
        """Run until ``condition()`` holds; the clock's monotonic time then."""
        assert callable(condition)
        waited = 0.0
        while not condition():
            assert waited < limit, f"not within {limit}s: {what}"
            await self.run(0.5)
            waited += 0.5
        return self.stage.clock.monotonic()

    async def close(self) -> None:
        for replica in self.running:
            await replica.daemon.shutdown()
        for replica in self.running + self.stopped:
            await replica.store.close()


@pytest.fixture
async def replicas(stage: Stage, postgres: str, tmp_path: Path) -> AsyncIterator[Replicas]:
    group = Replicas(stage, postgres, tmp_path)
    yield group
    await group.close()


async def baked(stage: Stage, replicas: Replicas, *names: str, **kw: str) -> list[Replica]:
    """v1 served for hours; v1.1 serves and bakes to known-good under the replicas' eyes."""
    stage.deploy("v1", ago=7200)
    stage.deploy("v1.1", ago=3600)
    started = [await replicas.start(name, **kw) for name in names]  # type: ignore[arg-type]
    await replicas.run(12)
    return started


async def test_only_the_leader_rolls_back_and_alerts(
    stage: Stage, replicas: Replicas, receiver: Receiver
) -> None:
    stage.extra_config = CHANNEL
    stage.extra_environ["HOOK_URL"] = receiver.url()
    a, b = await baked(stage, replicas, "a", "b")
    assert a.leading()
    assert not b.leading()
    good = next(r for r in await a.store.deployments("web") if r.verdict == "good")

    stage.deploy("v2")
    await replicas.run(25)
    assert stage.rollbacks_sent() == [good.id]  # once, by the leader
    (rollback,) = await a.store.rollbacks("web")
    assert (rollback.state, rollback.epoch) == ("succeeded", 1)  # under a's lease

    # The standby kept its rules warm but wrote no event: each happened once in the trail,
    # none for its router to tell, none to tell twice.
    assert b.daemon.workers[0].states["error-rate"].last_known_at == pytest.approx(
        a.daemon.workers[0].states["error-rate"].last_known_at, abs=1.0
    )
    kinds = [e.kind for e in await a.store.events("web")]
    for kind in ("rule_firing", "rollback_started", "rollback_succeeded"):
        assert kinds.count(kind) == 1, kinds

    sent = await a.store.outbox(state="sent")
    await until(lambda: len(receiver.requests) == len(sent), "the leader's notifications")
    ids = [r.json()["id"] for r in receiver.requests]
    assert sorted(ids) == sorted(m.message_id for m in sent)  # each once
    assert all(m.claimed_at is not None for m in sent)  # claimed right before each send

    assert (a.metric("railguard_leader"), b.metric("railguard_leader")) == (1, 0)
    assert (a.metric("railguard_lease_epoch"), b.metric("railguard_lease_epoch")) == (1, 0)
    assert a.metric("railguard_leader_takeovers_total") == 1
    assert b.metric("railguard_leader_takeovers_total") == 0
    assert b.metric("railguard_lease_look_failures_total") == 0

    led = (await a.daemon.status_document())["leadership"]
    assert (led["replica"], led["role"], led["epoch"], led["holder"]) == ("a", "leader", 1, "a")
    assert led["acting_until"] > stage.clock.time()
    document = await b.daemon.status_document()
    follows = document["leadership"]
    assert (follows["replica"], follows["role"], follows["holder"]) == ("b", "standby", "a")
    assert follows["epoch"] is None
    assert "a leads; this replica (b) is a standby" in "".join(render_summary(document, []))
    assert b.daemon.status()["leadership"] == follows
    # A standby is healthy and ready: it watches, and takes over when it must.
    assert b.daemon.liveness()[0]
    assert b.daemon.readiness()[0]


async def test_the_standby_takes_over_reconciles_and_finishes_the_rollback(
    stage: Stage, replicas: Replicas
) -> None:
    a, b = await baked(stage, replicas, "a", "b")
    good = next(r for r in await a.store.deployments("web") if r.verdict == "good")
    stage.deploy("v2")

    async def in_flight() -> bool:
        return any(r.state in ("sent", "deploying") for r in await a.store.rollbacks("web"))

    sent = False
    while not sent:
        await replicas.run(0.5)
        sent = await in_flight()
    (intent,) = await a.store.rollbacks("web")
    assert intent.epoch == 1  # written under a's lease
    await replicas.stop(a, clean=False)  # the leader dies with its rollback in flight

    died = stage.clock.monotonic()
    took = await replicas.run_until(b.leading, "b takes over")
    assert took - died <= TERMS.takeover_within + 0.5
    assert b.lease.view.epoch == 2
    assert b.metric("railguard_leader_takeovers_total") == 1

    async def finished() -> bool:
        record = await b.store.rollback(intent.id)
        return record is not None and record.finished

    done = False
    for _ in range(80):
        await replicas.run(0.5)
        done = await finished()
        if done:
            break
    assert done
    (rollback,) = await b.store.rollbacks("web")
    assert rollback.state == "succeeded", rollback.error
    assert stage.applied_rollbacks() == [good.id]  # exactly one mutation, whoever drove it
    assert stage.active_release() == "v1.1"


async def test_a_leader_cut_off_from_postgres_stops_before_another_takes_over(
    stage: Stage, replicas: Replicas
) -> None:
    a, b = await baked(stage, replicas, "a", "b")
    good = next(r for r in await a.store.deployments("web") if r.verdict == "good")
    a.lease.connect = refused  # PostgreSQL unreachable from a
    stopped = await replicas.run_until(lambda: not a.leading(), "a stops acting")
    assert not b.leading()  # nobody leads for a moment: the lease has not expired yet
    stage.deploy("v2")
    took = await replicas.run_until(b.leading, "b takes over")
    assert stopped < took
    # Warm: b's rule began its `for` window while b was a standby, not at the takeover.
    (web,) = b.daemon.workers
    state = web.states["error-rate"]
    assert state.phase is not Phase.INACTIVE
    assert state.since is not None
    assert stage.clock.time() - state.since >= 1.0, (state.phase, stage.clock.time() - state.since)
    await replicas.run(25)
    assert stage.rollbacks_sent() == [good.id]  # by b, once
    (rollback,) = await b.store.rollbacks("web")
    assert (rollback.state, rollback.epoch) == ("succeeded", 2)
    assert a.metric("railguard_lease_look_failures_total") >= 3
    assert a.metric("railguard_leader") == 0
    assert a.lease.last_error == "OSError: connection refused"
    assert a.daemon.supervisor.problems() == {}  # the lease loop goes on looking
    assert a.metric("railguard_task_restarts_total", task="lease") == 0
    assert (await a.daemon.status_document())["leadership"]["role"] == "standby"


async def store_of_its_own(dsn: str) -> str:
    """The URL of a new schema in the lease's database: a store apart from the lease's row."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as db:
        await db.execute("CREATE SCHEMA solo")
    return f"{dsn}?options=-c%20search_path%3Dsolo"


async def test_not_leader_from_the_store_is_quiet_and_the_next_evaluation_decides_again(
    stage: Stage, replicas: Replicas, receiver: Receiver
) -> None:
    stage.extra_config = CHANNEL
    stage.extra_environ["HOOK_URL"] = receiver.url()
    solo = await store_of_its_own(replicas.postgres)
    (a,) = await baked(stage, replicas, "a", store_url=solo)
    good = next(r for r in await a.store.deployments("web") if r.verdict == "good")
    await until(lambda: len(receiver.requests) >= 1, "the verified release's notice")
    told = len(receiver.requests)
    # The store's lease row says another replica took over; a's own view still says a
    # leads (its looks answer): every fenced write is refused.
    a.lease.mirror = None
    set_lease(solo, "elsewhere", 99, 1e12)
    with capture_logs() as logs:
        stage.deploy("v2")
        await replicas.run(15)
    assert stage.rollbacks_sent() == []
    assert await a.store.rollbacks("web") == []
    assert a.metric("railguard_not_leader_total", task="rollback") >= 2  # counted each time
    assert a.metric("railguard_not_leader_total", task="outbox:hook") >= 1
    assert len(receiver.requests) == told  # nothing delivered meanwhile
    refusals = [e for e in logs if e["event"].startswith("not the leader")]
    assert sorted(e["task"] for e in refusals) == ["outbox:hook", "rollback"]  # once each
    assert all(e["log_level"] == "warning" for e in refusals)
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]
    assert a.daemon.supervisor.problems() == {}

    # The row is a's again: the next evaluation decides afresh and acts; the outbox sends.
    assert a.lease.view.epoch is not None
    set_lease(solo, "a", a.lease.view.epoch, 1e12)
    await replicas.run(20)
    assert stage.rollbacks_sent() == [good.id]
    (rollback,) = await a.store.rollbacks("web")
    assert (rollback.state, rollback.epoch) == ("succeeded", 1)
    await until(lambda: len(receiver.requests) > told, "the held notifications")


# -- the Leader on a lease driven by hand -------------------------------------------------


class HandLease:
    """A lease the test grants, refuses or cuts off (the Lease protocol, no database)."""

    def __init__(self, clock: FakeClock, me: str = "a") -> None:
        self.clock, self.me, self.name, self.terms = clock, me, "leader", TERMS
        self.view = Leadership()
        self.holder: str | None = None
        self.last_error: str | None = None
        self.epoch = 1
        self.grant = True
        self.down = False

    async def look(self) -> Leadership:
        if self.down:
            self.last_error = "OSError: down"
            return self.view
        self.last_error = None
        started = self.clock.monotonic()
        if self.grant:
            row = LeaseRow(self.me, self.epoch, self.clock.time() + TERMS.ttl)
            self.holder = self.me
        else:
            row, self.holder = None, "b"
        self.view = self.view.after(row, self.me, started, TERMS)
        return self.view

    async def release(self) -> None:
        self.view = Leadership()


async def test_the_leader_takes_over_after_reconciling_and_stands_down_when_its_view_ends(
    clock: FakeClock,
) -> None:
    lease = HandLease(clock)
    calls: list[tuple[str, float, bool]] = []
    metrics = Metrics(CollectorRegistry())

    async def takeover() -> None:
        calls.append(("takeover", clock.monotonic(), leader.leading()))

    async def stand_down() -> None:
        calls.append(("stand_down", clock.monotonic(), leader.leading()))

    async def leading_now() -> None:
        calls.append(("leading_now", clock.monotonic(), leader.leading()))

    leader = Leader(
        lease,
        clock=clock,
        metrics=metrics,
        takeover=takeover,
        stand_down=stand_down,
        leading_now=leading_now,
    )
    start = clock.monotonic()
    task = asyncio.create_task(leader.run())
    try:
        await until(lambda: len(calls) >= 2, "the first look")
        # Reconciled before it acts; then, leading, it decides at once (not next tick).
        assert calls == [("takeover", start, False), ("leading_now", start, True)]
        assert leader.leading()
        assert leader.epoch() == 1
        assert leadership_text(leader.status()) == "a leads (this replica, epoch 1)"
        lease.down = True  # PostgreSQL gone: looks at +3s and +6s fail
        await clock.advance(7.9)
        assert leader.leading()  # acting on its last renewal until it runs out
        await clock.advance(0.1)
        # Stood down the moment its view ran out (+8s), not at the next look (+9s).
        assert calls[2:] == [("stand_down", start + 8.0, False)]
        assert not leader.leading()
        assert leader.epoch() is None
        assert leader.fence().epoch() is None
        cut_off = "this replica (a) cannot renew its lease: it does not act"
        assert leadership_text(leader.status()) == cut_off
        assert metrics.registry.get_sample_value("railguard_lease_look_failures_total") == 2
        assert metrics.registry.get_sample_value("railguard_leader") == 0
        lease.down, lease.grant = False, False
        await clock.advance(1.0)
        assert leadership_text(leader.status()) == "b leads; this replica (a) is a standby"
        lease.grant, lease.epoch = True, 3  # taken again, under a new epoch
        await clock.advance(3.0)
        assert calls[-2:] == [
            ("takeover", start + 12.0, False),
            ("leading_now", start + 12.0, True),
        ]
        assert leader.leading()
        assert metrics.registry.get_sample_value("railguard_leader_takeovers_total") == 2
        assert metrics.registry.get_sample_value("railguard_lease_epoch") == 3
        status = leader.status()
        assert (status["role"], status["epoch"], status["holder"]) == ("leader", 3, "a")
        assert status["acting_until"] == clock.time() + 8.0 - 0.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_new_epoch_seen_while_leading_is_a_stand_down_then_a_takeover(
    clock: FakeClock,
) -> None:
    lease = HandLease(clock)
    said: list[str] = []

    async def takeover() -> None:
        said.append("takeover")

    async def stand_down() -> None:
        said.append("stand_down")

    leader = Leader(
        lease,
        clock=clock,
        metrics=Metrics(CollectorRegistry()),
        takeover=takeover,
        stand_down=stand_down,
    )
    await leader.step()
    lease.epoch = 2  # lost and retaken between two looks: the old epoch's work is void
    await leader.step()
    assert said == ["takeover", "stand_down", "takeover"]
    assert leader.acting_epoch == 2


def test_a_refusal_is_counted_each_time_and_said_once_per_leadership(clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    leader = Leader(HandLease(clock), clock=clock, metrics=metrics)
    with capture_logs() as logs:
        for _ in range(3):
            leader.refused("rollback", NotLeader("refused"))
        leader.refused("outbox:hook", NotLeader("refused"))
        SOLO.refused("rollback", NotLeader("cannot happen"))
    said = [e for e in logs if e["event"].startswith("not the leader")]
    assert [e["task"] for e in said] == ["rollback", "outbox:hook"]
    assert (
        metrics.registry.get_sample_value("railguard_not_leader_total", {"task": "rollback"}) == 3
    )
    assert SOLO.leading()


def test_replica_ids_and_the_words_for_leadership() -> None:
    assert replica_id("7c2d-replica") == "7c2d-replica"
    mine = replica_id(None)
    assert mine.startswith(f"{socket.gethostname()}-{os.getpid()}-")
    assert mine != replica_id(None)  # a restart in the same container is a new replica
    assert leadership_text(None) == "single replica (no DATABASE_URL): it leads"
    assert leadership_text(solo_status()) == "single replica (no DATABASE_URL): it leads"
    lead = {"role": "leader", "replica": "a", "holder": "a", "epoch": 4}
    assert leadership_text(lead) == "a leads (this replica, epoch 4)"
    standby = {"role": "standby", "replica": "b", "holder": None, "epoch": None}
    assert leadership_text(standby) == "no leader known; this replica (b) is a standby"


async def test_a_standby_refuses_a_manual_rollback(stage: Stage, replicas: Replicas) -> None:
    _, b = await baked(stage, replicas, "a", "b")
    assert b.daemon.executor is not None
    with pytest.raises(RollbackRefused, match="standby"):
        await b.daemon.executor.rollback("web", reason="by hand", actor="manual:test")


async def test_a_standby_sends_no_digest(clock: FakeClock, tmp_path: Path) -> None:
    standby = HandLease(clock)
    standby.grant = False
    leader = Leader(standby, clock=clock, metrics=Metrics(CollectorRegistry()))
    await leader.step()
    async with await open_store(tmp_path / "d.db") as store:
        outbox = Outbox(store, {}, clock=clock, metrics=Metrics(CollectorRegistry()))
        digest = Digest(store, outbox, {}, [], clock=clock, acting=leader)
        digest.tiers = {"staging": []}  # would fail if it tried to send one
        task = asyncio.create_task(digest.run())
        await until(lambda: digest.last_beat is not None, "a round")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await store.cursor("digest/staging") is None


# -- `railguard run` with DATABASE_URL ------------------------------------------------------


async def test_run_with_database_url_leads_and_says_so(
    postgres: str, write: Callable[..., Path]
) -> None:
    path = write(RUN_CONFIG)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAILGUARD_")},
        "PORT": str(port),
        "RAILGUARD_HOST": "127.0.0.1",
        "RAILGUARD_LOG_FORMAT": "json",
        "RAILGUARD_STATE": str(path.parent / "state.db"),
        "DATABASE_URL": postgres,
        "RAILWAY_REPLICA_ID": "replica-1",
        "RAILGUARD_LEASE_TTL": "8s",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--config",
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def leadership() -> dict[str, object] | None:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/status?format=json") as r:
                        found = (await r.json())["leadership"]
                        return found if found["role"] == "leader" else None
                except aiohttp.ClientConnectionError:
                    return None

            led = None
            for _ in range(500):
                led = await leadership()
                if led is not None:
                    break
                await asyncio.sleep(0.02)  # waiting for the process to start, not for time
            assert led is not None, "railguard did not lead"
            assert (led["replica"], led["holder"], led["epoch"]) == ("replica-1", "replica-1", 1)
            assert led["ttl_s"] == 8.0
            async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                text = await r.text()
            assert "railguard_leader 1.0" in text
            async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                assert r.status == 200
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert '"event": "took the lead"' in stderr.decode()


async def test_a_fenced_write_on_the_system_clock(postgres: str, tmp_path: Path) -> None:
    """The store asks the fence for the epoch on its own thread, where the system clock must
    answer too (it asked the running loop, which that thread has not: every intent and outbox
    claim of a real leader failed with RuntimeError, and no replica ever rolled back)."""
    clock = SystemClock()
    lease = PgLease(connector(postgres), "a", clock=clock, terms=TERMS)
    async with await open_store(tmp_path / "unused.db", database_url=postgres) as store:
        leader = Leader(lease, clock=clock, metrics=Metrics(CollectorRegistry()))
        await leader.step()
        assert leader.leading()
        store.fence = leader.fence()
        record = await store.begin_rollback(
            service="web",
            from_deployment="d2",
            to_deployment="d1",
            trigger="auto",
            actor="railguard",
            rule="error-rate",
            reason="error rate 50% > 5% for 5s",
            evidence={},
            decided_at=clock.time(),
            dry_run=False,
        )
        assert record.epoch == 1


RUN_CONFIG = """
[daemon]
shutdown_timeout = "2s"

[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


async def test_a_leader_that_shuts_down_gives_the_lease_up_at_once(
    stage: Stage, replicas: Replicas
) -> None:
    a, b = await baked(stage, replicas, "a", "b")
    await replicas.stop(a)
    assert a.metric("railguard_leader") == 0
    assert a.lease.view.epoch is None
    left = stage.clock.monotonic()
    took = await replicas.run_until(b.leading, "b takes over")
    assert took - left <= TERMS.renew_every + 0.5  # its next look, not the lease's expiry
    assert b.lease.view.epoch == 2


async def test_a_single_replica_leads(stage: Stage) -> None:
    stage.deploy("v1", ago=7200)
    daemon = await stage.start_daemon()
    assert daemon.metrics.registry.get_sample_value("railguard_leader") == 1
    assert daemon.leadership()["role"] == "single"
