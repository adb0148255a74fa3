"""The batched poller against the Railway emulator: one request per poll for all services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.clock import FakeClock
from monitor.model import Signal
from monitor.railway.budget import RequestBudget
from monitor.railway.client import RailwayClient
from monitor.railway.document import Target, build_document
from monitor.railway.metrics import error_rate_sample, memory_sample
from monitor.railway.poller import RailwayPoller
from monitor.railway.schema import validate_document
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.sources.railway import RailwayErrorRate, RailwayMemory, RailwaySource
from monitor.telemetry import Metrics
from tests.helpers import until

TOKEN = "test-token"
ERROR_RATE = RailwayErrorRate(source="railway", min_requests=10, step=60)
MEMORY = RailwayMemory(source="railway", sample_rate=30)


@dataclass
class World:
    emu: RailwayEmulator
    client: RailwayClient
    targets: list[Target]
    deployments: dict[str, str]  # service name -> its active deployment id


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    targets, deployments = [], {}
    for name, error_rate, memory in [
        ("web", ERROR_RATE, MEMORY),
        ("api", ERROR_RATE, None),
        ("docs", None, None),
    ]:
        service = emu.add_service(project.id, name)
        emu.add_deployment(service.id, env.id, created_at=clock.time() - 7200)
        active = emu.add_deployment(service.id, env.id, created_at=clock.time() - 3600)
        deployments[name] = active.id
        targets.append(Target(name, service.id, env.id, error_rate=error_rate, memory=memory))
    server = TestServer(emu.app, host="127.0.0.1")
    await server.start_server()
    metrics = Metrics(CollectorRegistry())
    budget = RequestBudget(clock, per_hour=1000, per_second=10, metrics=metrics)
    async with aiohttp.ClientSession() as session:
        client = RailwayClient(
            session,
            url=str(server.make_url("/graphql/v2")),
            token=SecretStr(TOKEN),
            clock=clock,
            budget=budget,
            metrics=metrics,
        )
        yield World(emu, client, targets, deployments)
    await server.close()


def test_the_tick_document_validates_against_railways_schema() -> None:
    targets = [
        Target("a", "s", "e", error_rate=ERROR_RATE, memory=MEMORY, deployment=True),
        Target("b", "s", "e"),
        Target("c", "s", "e", deployment=True),
    ]
    document = build_document(targets)
    assert validate_document(document) == []
    assert document.count("deployments(") == 3
    assert document.count("instances { id status }") == 3  # the deployment signal's facts
    assert document.count("httpMetricsGroupedByStatus(") == 1
    # Deployments only: no time window may be declared, or GraphQL refuses the document.
    bare = build_document([Target("b", "s", "e")])
    assert validate_document(bare) == []
    assert "$start" not in bare
    assert "platformStatus" in bare  # Railway's own status comes with every poll


async def test_one_request_answers_every_service(world: World, clock: FakeClock) -> None:
    emu = world.emu
    web, api = world.targets[0], world.targets[1]
    emu.set_traffic(web.service_id, web.environment_id, 10, error_ratio=0.2, at=clock.time() - 600)
    emu.set_traffic(api.service_id, api.environment_id, 5, at=clock.time() - 600)
    emu.set_memory(world.deployments["web"], 0.45, 0.5, at=clock.time() - 60)
    poller = RailwayPoller(world.client, world.targets, clock=clock, interval=30)
    await poller.poll()

    assert len(emu.requests) == 1
    assert emu.requests[0].operation_name == "RailguardTick"
    web_now = poller.latest("web")
    assert web_now is not None
    assert web_now.active is not None
    assert web_now.active.id == world.deployments["web"]
    assert len(web_now.deployments) == 2
    rate = web_now.samples[Signal.ERROR_RATE]
    assert rate.value == pytest.approx(0.2)
    assert rate.detail["requests"] == pytest.approx(600)
    assert web_now.samples[Signal.MEMORY].value == pytest.approx(0.9)
    api_now = poller.latest("api")
    assert api_now is not None
    assert api_now.samples[Signal.ERROR_RATE].value == 0.0
    assert Signal.MEMORY not in api_now.samples
    docs = poller.latest("docs")
    assert docs is not None
    assert docs.samples == {}
    assert poller.last_error is None


async def test_no_traffic_is_unknown_not_healthy(world: World, clock: FakeClock) -> None:
    poller = RailwayPoller(world.client, world.targets, clock=clock, interval=30)
    await poller.poll()
    web = poller.latest("web")
    assert web is not None
    assert web.samples[Signal.ERROR_RATE].value is None
    assert "no requests" in web.samples[Signal.ERROR_RATE].reason
    assert web.samples[Signal.MEMORY].value is None


async def test_a_failed_poll_ages_into_unknown(world: World, clock: FakeClock) -> None:
    web = world.targets[0]
    world.emu.set_traffic(web.service_id, web.environment_id, 10, at=clock.time() - 600)
    poller = RailwayPoller(world.client, world.targets, clock=clock, interval=30)
    source = RailwaySource(poller, "web", frozenset({Signal.ERROR_RATE}), max_age=75)
    first = await source.collect(clock.time())
    assert [s.value for s in first] == [None]  # nothing polled yet
    assert "no poll has answered yet" in first[0].reason

    await poller.poll()
    (sample,) = await source.collect(clock.time())
    assert sample.value == 0.0
    assert await source.collect(clock.time() + 15) == []  # delivered once

    world.emu.set_faults(error_ratio=1.0)  # Railway's edge answers 503 to everything
    await clock.advance(30)
    polling = asyncio.ensure_future(poller.poll())
    while not polling.done():  # retries back off on the clock
        await clock.advance(1)
        await asyncio.sleep(0.001)
    await polling
    assert poller.last_error is not None
    assert "503" in poller.last_error
    assert clock.time() - poller.latest("web").at < 75  # type: ignore[union-attr]
    assert await source.collect(clock.time()) == []  # still within max_age
    await clock.advance(75 - (clock.time() - poller.latest("web").at) + 1)  # type: ignore[union-attr]
    (stale,) = await source.collect(clock.time())
    assert stale.value is None
    assert "the last answer is 1m16s old" in stale.reason
    assert "503" in stale.reason


async def test_polls_follow_their_cadence(world: World, clock: FakeClock) -> None:
    poller = RailwayPoller(world.client, world.targets, clock=clock, interval=30)
    task = asyncio.ensure_future(poller.run())
    await until(lambda: poller.polls == 1, "poll 1")
    for n in (2, 3):
        await clock.advance(30)
        await until(lambda n=n: poller.polls == n, f"poll {n}")  # type: ignore[misc]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [round(r.at - world.emu.requests[0].at) for r in world.emu.requests] == [0, 30, 60]


@pytest.mark.parametrize(
    ("answer", "value", "reason"),
    [
        ([], None, "no requests recorded"),
        (
            [
                {"statusCode": 200, "samples": [{"ts": 0, "value": 90}, {"ts": 60, "value": 9}]},
                {"statusCode": 503, "samples": [{"ts": 0, "value": 10}, {"ts": 60, "value": 9}]},
            ],
            0.1,
            "",
        ),
        (
            [{"statusCode": 200, "samples": [{"ts": 0, "value": 5}]}],
            None,
            "too little traffic: 5 requests < min_requests 10",
        ),
        ("nope", None, "h0: expected a list"),
        ([{"statusCode": "x", "samples": []}], None, "h0: unexpected entry"),
    ],
)
def test_error_rate_uses_the_newest_complete_step(
    answer: object, value: float | None, reason: str
) -> None:
    sample = error_rate_sample(answer, ERROR_RATE, at=100.0, path="h0")  # step 60 is not complete
    assert sample.value == (pytest.approx(value) if value is not None else None)
    assert reason in sample.reason


def test_memory_needs_an_active_deployment_and_a_limit() -> None:
    assert memory_sample([], None, 0.0, "m0").reason == "no active deployment"


async def test_refresh_polls_now_at_most_once_per_half_interval(
    world: World, clock: FakeClock
) -> None:
    poller = RailwayPoller(world.client, world.targets, clock=clock, interval=30)
    task = asyncio.ensure_future(poller.run())
    await until(lambda: poller.polls == 1, "poll 1")
    await clock.advance(5)
    assert poller.refresh()
    await until(lambda: poller.polls == 2, "the early poll")
    assert not any(poller.refresh() for _ in range(10))  # a flood spends nothing more
    await clock.advance(14)  # 14s after the early poll: less than interval / 2
    assert not poller.refresh()
    await clock.advance(1)
    assert poller.refresh()
    await until(lambda: poller.polls == 3, "the second early poll")
    await clock.advance(30)  # the cadence restarts from the early poll
    await until(lambda: poller.polls == 4, "the next scheduled poll")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert poller.early_polls == 2
    assert [round(r.at - world.emu.requests[0].at) for r in world.emu.requests] == [0, 5, 20, 50]


async def test_the_deployment_signal_follows_the_active_deployment(
    world: World, clock: FakeClock
) -> None:
    targets = [replace(t, deployment=t.name != "api") for t in world.targets]
    poller = RailwayPoller(world.client, targets, clock=clock, interval=30)
    await poller.poll()
    assert len(world.emu.requests) == 1  # still one request for every service
    web = poller.latest("web")
    assert web is not None
    running = web.samples[Signal.DEPLOYMENT]
    assert running.value == 1.0
    assert running.detail["deployment"] == world.deployments["web"]
    assert running.detail["status"] == "SUCCESS"
    assert Signal.DEPLOYMENT not in poller.latest("api").samples  # type: ignore[union-attr]

    world.emu.set_deployment(world.deployments["web"], status="CRASHED")
    await clock.advance(30)
    await poller.poll()
    web = poller.latest("web")
    assert web is not None
    assert web.active is not None
    assert web.active.id == world.deployments["web"]  # crashed, it is still the active one
    crashed = web.samples[Signal.DEPLOYMENT]
    assert crashed.value == 0.0
    assert crashed.detail["status"] == "CRASHED"
    docs = poller.latest("docs")
    assert docs is not None
    assert docs.samples[Signal.DEPLOYMENT].value == 1.0


class Answers:
    """A client that answers every poll with ``data``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    async def execute(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        return self.data


async def test_unreadable_deployments_make_the_deployment_signal_unknown(clock: FakeClock) -> None:
    target = Target("web", "s", "e", memory=MEMORY, deployment=True)
    client = cast(RailwayClient, Answers({"d0": {"edges": "nope"}, "m0": []}))
    poller = RailwayPoller(client, [target], clock=clock, interval=30)
    await poller.poll()
    web = poller.latest("web")
    assert web is not None
    deployment, memory = web.samples[Signal.DEPLOYMENT], web.samples[Signal.MEMORY]
    assert deployment.value is None
    assert deployment.reason.startswith("d0")
    assert memory.reason == deployment.reason  # the same problem, said once per signal


async def test_no_active_deployment_is_unknown(clock: FakeClock) -> None:
    client = cast(RailwayClient, Answers({"d0": {"edges": []}}))
    poller = RailwayPoller(
        client, [Target("web", "s", "e", deployment=True)], clock=clock, interval=30
    )
    await poller.poll()
    sample = poller.latest("web").samples[Signal.DEPLOYMENT]  # type: ignore[union-attr]
    assert (sample.value, sample.reason) == (None, "no active deployment")


async def test_retargeted_it_asks_about_the_new_targets_and_forgets_the_old(
    world: World, clock: FakeClock
) -> None:
    web, api, docs = world.targets
    poller = RailwayPoller(world.client, [web, api], clock=clock, interval=30)
    seen: list[str] = []

    async def listener(name: str, _snapshot: Any) -> None:
        seen.append(name)

    poller.listener = listener
    await poller.poll()
    assert poller.latest("api") is not None
    poller.retarget([web, docs])
    assert "docs" in {t.name for t in poller.targets}
    assert poller.latest("api") is None
    seen.clear()
    await poller.poll()
    assert seen == ["web", "docs"]
    assert poller.document.count("deployments(") == 2
    assert validate_document(poller.document) == []


async def test_a_target_retargeted_during_a_poll_is_not_news(
    world: World, clock: FakeClock
) -> None:
    web, api, docs = world.targets
    gate, sent = asyncio.Event(), asyncio.Event()

    class Held:
        """The client, holding each answer until the gate opens."""

        async def execute(self, document: str, variables: Any, **kw: Any) -> Any:
            sent.set()
            await gate.wait()
            return await world.client.execute(document, variables, **kw)

    poller = RailwayPoller(cast(RailwayClient, Held()), [web, api], clock=clock, interval=30)
    seen: list[str] = []

    async def listener(name: str, _snapshot: Any) -> None:
        seen.append(name)

    poller.listener = listener
    polling = asyncio.ensure_future(poller.poll())
    await sent.wait()
    poller.retarget([web, docs])  # api dropped, docs added while the answer is on its way
    gate.set()
    await polling
    assert poller.latest("api") is None
    assert poller.latest("docs") is None  # asked about from the next poll on
    assert seen == ["web"]
