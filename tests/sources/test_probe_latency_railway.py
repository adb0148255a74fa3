"""Latency from the health probe behind the Railway wrappers, on the sample app: a wake's cold
start and a deploy's overlap leave no response time in the window. FakeClock, 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.model import Sample, Signal
from monitor.planning import build_plan
from monitor.railway.poller import RailwayPoller
from monitor.rules import builtin_rules_path
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.sources.health import HealthCheck, HealthSource
from monitor.sources.probe_latency import HealthLatency
from monitor.sources.registry import SourceContext, build_sources
from monitor.sources.release import ReleaseAware, ReleaseCheck
from monitor.sources.sleep import SleepAware
from tests.helpers import until

P95 = Signal.LATENCY_P95
STEP, COLD_START, MAX_AGE = 5.0, 30.0, 70.0
LATENCY = HealthLatency.model_validate(
    {"source": "health", "min_probes": 3}, context={"environ": {}}
)
HEADER = "X-Railway-Deployment-Id"


@dataclass(frozen=True)
class Dep:
    id: str
    status: str = "SUCCESS"
    created_at: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Railway:
    """The poller's latest view of service "web" (what both wrappers read)."""

    at: float = 0.0
    active: Dep | None = None
    deployments: tuple[Dep, ...] = ()

    def latest(self, name: str) -> Railway:
        assert name == "web"
        return self

    def refresh(self) -> bool:
        return True

    def poll(self, at: float, active: Dep, *deployments: Dep) -> None:
        self.at, self.active, self.deployments = at, active, (active, *deployments)


@pytest.fixture
async def app(clock: FakeClock) -> AsyncIterator[tuple[web.Application, str]]:
    app = create_app(clock=clock)
    async with TestServer(app, host="127.0.0.1") as server:
        yield app, str(server.make_url("/health"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def collect(source: Any, clock: FakeClock, takes: float = 0.0) -> dict[Signal, Sample]:
    """One collect, the app holding the probe ``takes`` seconds (slow mode); then a STEP on."""
    task = asyncio.create_task(source.collect(clock.time()))
    if takes:
        await until(lambda: clock.sleepers > 0, "the app holding the probe")
        await clock.advance(takes)
    samples: list[Sample] = await task
    await clock.advance(STEP)
    return {s.signal: s for s in samples}


def health_source(url: str, session: aiohttp.ClientSession, clock: FakeClock, **check: Any) -> Any:
    return HealthSource(HealthCheck(url=url, **check), session, clock, latency=LATENCY)


async def test_a_wakes_slow_answers_never_reach_the_latency_window(
    app: tuple[web.Application, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = app
    state = server[STATE_KEY]
    health = health_source(url, session, clock)
    railway = Railway()
    source = SleepAware(
        health, railway, "web", cold_start=COLD_START, max_age=MAX_AGE, times=health.times
    )
    railway.poll(clock.time(), Dep("d1"))
    for _ in range(3):
        awake = await collect(source, clock)
    assert (awake[P95].value, awake[P95].detail["requests"]) == (0.0, 3)

    railway.poll(clock.time(), Dep("d1", "SLEEPING"))
    asleep = await collect(source, clock)
    assert (asleep[P95].value, asleep[P95].idle) == (None, True)

    # A user's request wakes it: Railway's edge answers 502 while the app starts (2s), then
    # the app answers, slowly at first (the edge held the request while it booted).
    state.update({"asleep": True, "cold_start": 2.0})
    async with session.get(url.replace("/health", "/work")) as woken:
        assert woken.status == 502
    railway.poll(clock.time(), Dep("d1"))
    starting = await collect(source, clock)
    assert starting[Signal.HEALTH].detail["status"] == 502
    assert all(s.idle and s.detail["cold_start"] for s in starting.values())
    assert starting[P95].reason.startswith("service is waking up")
    state.update({"mode": "slow", "delay": 3.0})
    first = await collect(source, clock, takes=3.0)  # healthy: the cold start is over
    assert (first[Signal.HEALTH].value, first[Signal.HEALTH].detail["latency_ms"]) == (1.0, 3000)
    assert (first[P95].value, first[P95].idle) == (None, True)

    # The window starts again: idle (the rules rest, never blind) until it holds min_probes.
    state.update({"mode": "ok"})
    for since in (1, 2):
        (filling,) = [(await collect(source, clock))[P95]]
        assert (filling.value, filling.idle) == (None, True)
        assert filling.reason == (
            "the window started again at the end of the service's cold start (woken from "
            f"SLEEPING): {since} of min_probes 3 probes since"
        )
    judged = (await collect(source, clock))[P95]
    assert (judged.value, judged.idle) == (0.0, False)  # neither the 3s nor the 502s count
    assert judged.detail == {"requests": 3, "unanswered": 0, "span_s": 2 * STEP}


async def test_when_the_cold_start_runs_out_the_window_starts_with_the_next_probe(
    app: tuple[web.Application, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = app
    health = health_source(url, session, clock)
    railway = Railway()
    source = SleepAware(
        health, railway, "web", cold_start=2 * STEP, max_age=MAX_AGE, times=health.times
    )
    railway.poll(clock.time(), Dep("d1", "SLEEPING"))
    await collect(source, clock)
    server[STATE_KEY].update({"asleep": True, "cold_start": 10 * STEP})  # longer than ours
    railway.poll(clock.time(), Dep("d1"))
    for _ in range(2):  # the edge's 502s: forgiven, their times not counted
        waking = await collect(source, clock)
        assert waking[P95].detail["cold_start"]
    judged = await collect(source, clock)
    assert judged[Signal.HEALTH].value == 0.0  # our cold start is over: a failing app fails
    assert judged[P95].reason.endswith("1 of min_probes 3 probes since")


async def test_the_replaced_deployments_answers_in_an_overlap_are_not_its_successors_latency(
    app: tuple[web.Application, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = app
    state = server[STATE_KEY]
    old, new = Dep("dep-1", created_at=1.0), Dep("dep-2", created_at=2.0)
    state.update({"release": "v1", "deployment_id": old.id, "mode": "slow", "delay": 2.0})
    # v2 goes live; v1 (slow) answers every other request for a minute.
    state.update({"release": "v2", "deployment_id": new.id, "mode": "ok", "overlap": 60})
    state.update({"overlap_ratio": 0.5})
    health = health_source(url, session, clock, release=ReleaseCheck(header=HEADER))
    railway = Railway()
    railway.poll(clock.time(), new, old)
    source = ReleaseAware(health, railway, "web", times=health.times)

    seen = [await collect(source, clock, takes=2.0 * (i % 2)) for i in range(6)]
    assert [s[Signal.HEALTH].detail["echoed"] for s in seen] == [new.id, old.id] * 3
    assert [s[Signal.HEALTH].value for s in seen] == [1.0, None] * 3
    assert [s[P95].value for s in seen] == [None] * 4 + [0.0, 0.0]
    assert seen[3][P95].reason == (
        "too few answered probes: 2 in the last 5m < min_probes 3 (2 from another deployment "
        "than the active one)"
    )
    assert seen[5][P95].detail == {
        "requests": 3,
        "unanswered": 0,
        "span_s": 5 * STEP + 3 * 2.0,
        "other_deployment": 3,
    }


@dataclass
class Poller:
    """What build_sources reads of the Railway poller."""

    interval: float = 30.0


async def test_the_registry_gives_both_wrappers_the_health_probes_times(
    tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    (tmp_path / "railguard.toml").write_text(
        f'rule_files = ["{builtin_rules_path()}"]\n[railway]\npoll_interval = "30s"\n'
        '[tiers.preview]\nrules = ["latency-p95-high"]\n'
        '[[services]]\nname = "web"\ntier = "preview"\nservice_id = "s"\nenvironment_id = "e"\n'
        f'health = {{ url = "http://127.0.0.1:9/health", release = {{ header = "{HEADER}" }} }}\n'
        'latency = { source = "health" }\n'
    )
    environ = {"RAILWAY_API_TOKEN": "t"}
    plan = build_plan(tmp_path / "railguard.toml", load_environment(environ), environ)
    ctx = SourceContext(plan.services[0], session, clock, cast(RailwayPoller, Poller()))
    ((name, sleep_aware),) = build_sources(ctx)
    assert name == "health"
    assert isinstance(sleep_aware, SleepAware)
    release_aware = sleep_aware.inner
    assert isinstance(release_aware, ReleaseAware)
    assert isinstance(release_aware.inner, HealthSource)
    times = release_aware.inner.times
    assert times is not None
    assert sleep_aware.times is times
    assert release_aware.times is times
