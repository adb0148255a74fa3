"""High availability with real processes and real SIGKILLs: replicas of ``railguard run``
share one PostgreSQL database; the leader is killed at each step of a rollback, a standby
takes over, and the rollback ends succeeded with exactly one mutation sent to Railway and
each notification delivered once. And a leader cut off from PostgreSQL stops acting before
another replica takes over.

Each scenario is a world of its own: the Stage (Railway emulator and sample app, in this
process on the system clock, second-long windows), a database, a webhook receiver, and each
replica's connections to the database through a TCP proxy of its own (tests/pg_proxy.py),
which can hold the answer to one commit or cut the replica off. Who leads is read from the
``leases`` table, rollbacks from ``rollbacks``, from outside the replicas. The four moments of
a kill run at once, one world each, so the file takes about as long as its slowest world.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from monitor.clock import SystemClock
from monitor.leadership import Leader
from monitor.lease import LeaseTerms
from monitor.store.lease_pg import PgLease, connector
from monitor.telemetry import Metrics
from tests.alerts.receivers import Receiver
from tests.pg_proxy import Proxy
from tests.postgres import database
from tests.stage import Stage
from tests.test_daemon import metric

# Many seconds of wall time: started first (conftest), so the wait overlaps other tests.
pytestmark = pytest.mark.long_running

BAD = {"v2": {"error_ratio": 0.5}}
# A takeover within 5.5s; a leader acts for 4s after a renewal began, so a loaded machine
# (replicas under coverage beside the other tests) does not cost a healthy leader its lease.
TTL, RENEW = 5.0, 0.5
# The reconcile window: longer than a takeover, so the new leader finds the intent of a
# mutation that never reached Railway still within it (resent), not past it (abandoned).
WINDOW = 8.0
LATENCY = 1.5  # Railway's answers while a mutation must be caught in flight

EXTRA = f"""
[lease]
ttl = "{TTL}s"
renew_every = "{RENEW}s"

[[channels]]
type = "webhook"
name = "hook"
url = "${{HOOK_URL}}"
"""


class Moment(enum.StrEnum):
    """When, in a rollback, the leader is killed."""

    BEFORE_INTENT = "before the intent"  # the bad release live, the rule pending
    AFTER_INTENT = "after the intent"  # the intent committed, the mutation not yet sent
    IN_FLIGHT = "with the mutation in flight"  # Railway applies it after the kill
    VERIFYING = "during verification"  # Railway applied it, the replacement comes up


@pytest.fixture(autouse=True)
def _normal_pass_only(request: pytest.FixtureRequest) -> None:
    """PostgreSQL by nature: the --store=postgres pass would run the same thing again."""
    if request.config.getoption("--store") == "postgres":
        pytest.skip("on PostgreSQL in the normal pass already")


class Replica:
    """One ``railguard run`` process; its database connections go through its own proxy."""

    def __init__(self, world: World, name: str, proxy: Proxy) -> None:
        self.world, self.name, self.proxy = world, name, proxy
        self.log = world.tmp / f"{name}.log"  # kept for a post-mortem
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None

    async def start(self) -> None:
        world = self.world
        drop = ("RAILGUARD_", "RAILWAY_", "DATABASE_URL")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env |= world.stage.environ | {
            "DATABASE_URL": self.proxy.url(world.dsn),
            "RAILWAY_REPLICA_ID": self.name,
            "RAILGUARD_STATE": str(world.tmp / f"{self.name}.db"),  # unused: DATABASE_URL
            "RAILGUARD_HOST": "127.0.0.1",
            "PORT": "0",
            "RAILGUARD_LOG_FORMAT": "json",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(world.config),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def lines(self) -> list[dict[str, Any]]:
        """Its log so far, one JSON object a line."""
        found = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found

    async def started(self) -> bool:
        """Whether it serves HTTP yet (its port read from its log)."""
        assert self.running, f"{self.name} exited: {self.log.read_text()[-2000:]}"
        if self.port is None:
            said = [e for e in self.lines() if e.get("event") == "railguard started"]
            self.port = said[0]["port"] if said else None
        return self.port is not None

    async def get(self, path: str) -> str | None:
        """GET ``path``; None if it does not answer."""
        assert self.port is not None
        try:
            async with self.world.http.get(f"http://127.0.0.1:{self.port}{path}") as response:
                return await response.text()
        except aiohttp.ClientError:
            return None

    async def status(self) -> dict[str, Any] | None:
        """/status as JSON; None before it serves."""
        if not await self.started():
            return None
        text = await self.get("/status?format=json")
        return None if text is None else dict(json.loads(text))

    async def role(self) -> tuple[str | None, str | None]:
        """(its role, the holder it last saw) as /status says."""
        status = await self.status()
        if status is None:
            return None, None
        return status["leadership"]["role"], status["leadership"]["holder"]

    def tracebacks(self) -> list[str]:
        """The tracebacks in its log, but for those of the store out of reach (a StoreError
        caught by a supervised loop or the verdict sink's net: logged, counted, retried)."""
        text = self.log.read_text()
        found = [line for line in text.splitlines() if line.startswith("Traceback")]
        for event in self.lines():
            trace = str(event.get("exception") or "")
            if trace and not _raised(trace).startswith("monitor.errors.StoreError"):
                found.append(trace)
        return found

    async def metric(self, name: str, **labels: str) -> float | None:
        text = await self.get("/metrics")
        return None if text is None else metric(text, name, **labels)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        """SIGTERM; the exit status."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=15)


def _raised(trace: str) -> str:
    """A traceback's exception line (the first after its last frame)."""
    lines = trace.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1 :] if frames else lines
    return next((line for line in after if not line.startswith(" ")), "")


class World:
    """One scenario: the stage, a database, a receiver, replicas (see the module docstring)."""

    def __init__(self, tmp: Path, dsn: str, receiver: Receiver, http: aiohttp.ClientSession):
        self.tmp, self.dsn, self.receiver, self.http = tmp, dsn, receiver, http
        self.stage = Stage(SystemClock(), tmp, BAD)
        # Second-long windows; a lost mutation is resent after WINDOW.
        self.stage.config_template = (
            self.stage.config_template.replace(
                'poll_interval = "2s"', f'poll_interval = "2s"\nreconcile_window = "{WINDOW}s"'
            )
            .replace('for = "5s"', 'for = "2s"')
            .replace('bake = "10s"', 'bake = "2s"')
        )
        self.stage.extra_config = EXTRA
        self.stage.extra_environ["HOOK_URL"] = receiver.url()
        self.replicas: list[Replica] = []
        self.db: psycopg.AsyncConnection[Any] | None = None
        self._traffic: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, tmp: Path, replicas: int) -> AsyncIterator[World]:
        """A world with ``replicas`` replicas (not started), v1.1 known-good and active."""
        async with (
            database() as dsn,
            Receiver() as receiver,
            aiohttp.ClientSession() as http,
        ):
            world = cls(tmp, dsn, receiver, http)
            try:
                await world._open(replicas)
                yield world
            finally:  # a failing test must not leave a replica running
                await world._close()

    async def _open(self, replicas: int) -> None:
        stage = self.stage
        await stage.start_servers()
        stage.deploy("v1", ago=7200)
        self.good = stage.deploy("v1.1", ago=3600).id  # active: it bakes under r0's eyes
        self.config = stage.write_config()
        self.db = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
        for i in range(replicas):
            proxy = await Proxy.to(self.dsn)
            self.replicas.append(Replica(self, f"r{i}", proxy))
        self._traffic = asyncio.create_task(self._send_traffic())

    async def _send_traffic(self) -> None:
        """The app on the active release, and under traffic, all along (real time)."""
        while True:
            self.stage.sync_app()
            await self.stage.send_traffic(1)
            await asyncio.sleep(0.05)  # the load generator's pace

    async def _close(self) -> None:
        for replica in self.replicas:
            if replica.running:
                assert replica.proc is not None
                replica.kill()
                await replica.proc.wait()
        if self._traffic is not None:
            self._traffic.cancel()
            await asyncio.gather(self._traffic, return_exceptions=True)
        for replica in self.replicas:
            await replica.proxy.close()
        if self.db is not None:
            await self.db.close()
        await self.stage.close()

    # -- the database, read from outside -----------------------------------------------------

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self.db is not None
        try:
            cursor = await self.db.execute(sql, params)
        except psycopg.errors.UndefinedTable:  # not created yet
            return []
        return list(await cursor.fetchall())

    async def rollbacks(self) -> list[tuple[str, int | None, int]]:
        """(state, epoch, attempts) of every rollback."""
        rows = await self._rows("SELECT state, epoch, attempts FROM rollbacks ORDER BY id")
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    async def verdict(self, deployment: str) -> str | None:
        rows = await self._rows("SELECT verdict FROM deployments WHERE id = %s", (deployment,))
        return str(rows[0][0]) if rows else None

    async def lease(self) -> tuple[str | None, int]:
        """(holder, epoch) of the leader lease."""
        rows = await self._rows("SELECT holder, epoch FROM leases WHERE name = 'leader'")
        return (rows[0][0], int(rows[0][1])) if rows else (None, 0)

    async def outbox(self) -> list[tuple[str, str, float | None]]:
        """(message id, state, claimed at) of every notification queued."""
        rows = await self._rows("SELECT message_id, state, claimed_at FROM outbox ORDER BY id")
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    async def mid_delivery(self) -> set[str]:
        """The notifications that may be between the receiver and the record that they were
        sent (claimed and not recorded, or received and not recorded), by message id: a kill
        then sends them again, by design (at least once, with the same idempotency key)."""
        queued = await self.outbox()
        sent = {m for m, state, _ in queued if state == "sent"}
        received = {r.json()["id"] for r in self.receiver.requests}
        claimed = {m for m, state, at in queued if state == "pending" and at is not None}
        return claimed | (received - sent)

    # -- waiting -----------------------------------------------------------------------------

    async def until(
        self, condition: Callable[[], Awaitable[bool]], what: str, limit: float = 45.0
    ) -> None:
        """Look until ``condition()`` holds (real time, bounded: a broken test fails)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not await condition():
            assert loop.time() < deadline, f"not within {limit}s: {what}"
            await asyncio.sleep(0.02)  # the pace of looking

    async def start(self) -> Replica:
        """r0 first, until it leads; then the others, until each follows it. The leader."""
        leader, *others = self.replicas
        await leader.start()

        async def leads() -> bool:
            return await leader.role() == ("leader", leader.name)

        await self.until(leads, f"{leader.name} leads")
        for replica in others:
            await replica.start()

        async def follow() -> bool:
            roles = [await r.role() for r in others]
            return all(role == ("standby", leader.name) for role in roles)

        await self.until(follow, "the others follow")

        async def baked() -> bool:
            return await self.verdict(self.good) == "good"

        await self.until(baked, "v1.1 is known-good")
        return leader

    def survivors(self) -> list[Replica]:
        return [r for r in self.replicas if r.running]


# -- the leader killed at each step of a rollback -------------------------------------------


async def _killed_at(world: World, moment: Moment) -> None:
    stage = world.stage
    leader = await world.start()
    if moment is Moment.AFTER_INTENT:
        # The intent commits on the server; its answer is held: the leader waits for it,
        # with the mutation not yet sent, until it is killed.
        leader.proxy.lose_answer_to, leader.proxy.answer = b"INSERT INTO rollbacks", b"COMMIT\0"
        leader.proxy.hold = True
    if moment is Moment.IN_FLIGHT:
        # Railway answers slowly: the kill lands with the mutation on its way, counted in
        # the intent; Railway applies it after the kill, and nobody hears the answer.
        stage.emu.set_faults(latency=LATENCY)
    stage.deploy("v2")  # the bad release goes live

    async def at_the_moment() -> bool:
        match moment:
            case Moment.BEFORE_INTENT:  # the leader sees the rule pending
                pending = await leader.metric("railguard_rule_state", rule="error-rate")
                return pending == 1 and not await world.rollbacks()
            case Moment.AFTER_INTENT:
                return leader.proxy.held.is_set()
            case Moment.IN_FLIGHT:
                return stage.emu.in_flight["mutation"] > 0
            case Moment.VERIFYING:
                states = [state for state, _, _ in await world.rollbacks()]
                return bool(stage.rollbacks_sent()) and states in (["sent"], ["deploying"])

    async def ready() -> bool:  # and no notification half delivered (World.mid_delivery)
        if moment is Moment.AFTER_INTENT:
            # The held COMMIT may also carry the record that a notification was sent (one
            # batch): that record never comes, so waiting for it would wait forever.
            return await at_the_moment()
        return await at_the_moment() and not await world.mid_delivery()

    await world.until(ready, moment)
    in_flight = await world.mid_delivery()  # sent again after the kill, same id
    leader.kill()
    assert leader.proc is not None
    await leader.proc.wait()
    at_kill = await world.rollbacks()
    match moment:
        case Moment.BEFORE_INTENT:
            assert at_kill == []
        case Moment.AFTER_INTENT | Moment.IN_FLIGHT:
            assert at_kill == [("intent", 1, 1)]  # under r0's epoch, the attempt counted
            assert stage.rollbacks_sent() == []  # not applied (yet)
            stage.emu.set_faults(latency=0.0)
        case Moment.VERIFYING:
            assert [s for s, _, _ in at_kill] in (["sent"], ["deploying"])
            assert stage.rollbacks_sent() == [world.good]

    # A standby takes over under a new epoch, settles what r0 left, and finishes.
    async def taken() -> bool:
        holder, epoch = await world.lease()
        return holder != leader.name and epoch == 2

    await world.until(taken, "a standby takes over")

    async def succeeded() -> bool:
        return any(state == "succeeded" for state, _, _ in await world.rollbacks())

    await world.until(succeeded, "the rollback succeeds")
    new_leader, epoch = await world.lease()
    assert new_leader in {r.name for r in world.survivors()}
    assert epoch == 2
    ((state, written_under, attempts),) = await world.rollbacks()
    assert state == "succeeded"
    assert written_under == (2 if moment is Moment.BEFORE_INTENT else 1)
    # Resent once only when Railway provably never had the first one.
    assert attempts == (2 if moment is Moment.AFTER_INTENT else 1)
    assert stage.rollbacks_sent() == [world.good]  # exactly one mutation reached Railway
    assert stage.applied_rollbacks() == [world.good]
    assert stage.active_release() == "v1.1"

    # Every notification delivered, each once, whoever led.
    async def delivered() -> bool:
        told = any(r.json()["kind"] == "rollback_succeeded" for r in world.receiver.requests)
        return told and all(state == "sent" for _, state, _ in await world.outbox())

    await world.until(delivered, "every notification delivered")
    ids = [r.json()["id"] for r in world.receiver.requests]
    twice = {m for m in ids if ids.count(m) > 1}
    assert twice <= in_flight, (ids, in_flight)  # only what the kill caught mid-delivery
    assert set(ids) == {m for m, _, _ in await world.outbox()}
    kinds = [
        r.json()["kind"] for r in {r.json()["id"]: r for r in world.receiver.requests}.values()
    ]
    assert kinds.count("rollback_started") == 1, kinds
    assert kinds.count("rollback_succeeded") == 1, kinds

    roles = {r.name: await r.role() for r in world.survivors()}  # one leads, the rest follow
    assert roles == {
        name: ("leader" if name == new_leader else "standby", new_leader) for name in roles
    }
    for replica in world.survivors():
        assert await replica.stop() == 0, replica.log.read_text()[-2000:]
    for replica in world.replicas:
        assert "Traceback" not in replica.log.read_text(), replica.name


@pytest.mark.parametrize("replicas", [2, 3])
async def test_the_leader_killed_at_any_step_of_a_rollback_is_replaced_and_nothing_is_sent_twice(
    tmp_path: Path, replicas: int
) -> None:
    """The four moments at once, a world each (they wait on real time, not on the CPU)."""

    async def play(moment: Moment, tmp: Path) -> None:
        try:
            async with World.open(tmp, replicas) as world:
                await _killed_at(world, moment)
        except BaseException as e:
            e.add_note(f"the leader killed {moment} ({replicas} replicas; logs in {tmp})")
            raise

    tmps = {moment: tmp_path / moment.replace(" ", "-") for moment in Moment}
    for tmp in tmps.values():
        tmp.mkdir()
    async with asyncio.TaskGroup() as group:
        for moment, tmp in tmps.items():
            group.create_task(play(moment, tmp))


async def test_a_leader_cut_off_from_postgres_stops_acting_before_another_takes_over(
    tmp_path: Path,
) -> None:
    async with World.open(tmp_path, 2) as world:
        stage = world.stage
        leader = await world.start()
        standby = world.replicas[1]
        stage.deploy("v2")

        async def verifying() -> bool:
            states = [state for state, _, _ in await world.rollbacks()]
            sent = bool(stage.rollbacks_sent()) and states in (["sent"], ["deploying"])
            return sent and not await world.mid_delivery()

        await world.until(verifying, "the leader's rollback reaches Railway")
        leader.proxy.cut()  # PostgreSQL gone, for the leader alone: its lease is not renewed

        stopped_first = False  # seen not leading while the lease was still its own

        async def taken() -> bool:
            nonlocal stopped_first
            leading = await leader.metric("railguard_leader")
            held = await world.lease()
            if leading == 0 and held == (leader.name, 1):
                stopped_first = True
            return held == (standby.name, 2)

        await world.until(taken, "the standby takes over")
        assert stopped_first, "the cut-off leader acted until the lease was taken"
        status = await leader.status()  # the store's parts left out, who leads still said
        assert status is not None
        assert status["leadership"]["role"] == "standby"
        assert status["leadership"]["holder"] == leader.name  # its last look: it held it
        assert "connection" in status["store_error"]
        page = await leader.get("/status?format=html") or ""
        assert "this replica (r0) cannot renew its lease: it does not act" in page
        assert "store unreadable" in page
        failures = await leader.metric("railguard_lease_look_failures_total")
        assert (failures or 0) >= 1

        async def succeeded() -> bool:
            return [state for state, _, _ in await world.rollbacks()] == ["succeeded"]

        await world.until(succeeded, "the new leader finishes the rollback")
        assert stage.rollbacks_sent() == [world.good]  # once, whoever led
        assert stage.active_release() == "v1.1"
        assert await world.rollbacks() == [("succeeded", 1, 1)]

        # PostgreSQL back: the old leader follows the new one, and acts no more.
        leader.proxy.restore()

        async def follows() -> bool:
            return await leader.role() == ("standby", standby.name)

        await world.until(follows, "the old leader follows")
        assert await leader.metric("railguard_leader") == 0
        assert await standby.metric("railguard_leader") == 1

        async def delivered() -> bool:
            told = any(r.json()["kind"] == "rollback_succeeded" for r in world.receiver.requests)
            return told and all(state == "sent" for _, state, _ in await world.outbox())

        await world.until(delivered, "every notification delivered")
        ids = [r.json()["id"] for r in world.receiver.requests]
        assert len(ids) == len(set(ids)), ids
        assert stage.rollbacks_sent() == [world.good]
        for replica in world.replicas:
            assert await replica.stop() == 0, replica.log.read_text()[-2000:]
            assert replica.tracebacks() == [], replica.name
        assert "Traceback" not in standby.log.read_text()


async def test_the_fence_is_read_on_the_stores_thread_on_the_system_clock(postgres: str) -> None:
    """A fenced write asks the lease's view inside its transaction, on the store's thread,
    where no event loop runs (it failed there with RuntimeError, refusing every intent and
    every notification of a leader on the system clock)."""
    clock = SystemClock()
    lease = PgLease(connector(postgres), "r0", clock=clock, terms=LeaseTerms(TTL, RENEW, 0.6))
    leader = Leader(lease, clock=clock, metrics=Metrics(CollectorRegistry()))
    await leader.step()
    assert leader.leading()
    assert await asyncio.to_thread(leader.fence().epoch) == 1
