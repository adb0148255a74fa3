"""The Railway client against the emulator over real HTTP, on a FakeClock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from monitor.clock import FakeClock
from monitor.errors import (
    RailwayAuthError,
    RailwayGraphQLError,
    RailwayProtocolError,
    RailwayTransientError,
)
from monitor.railway import client as client_module
from monitor.railway import ratelimit
from monitor.railway.budget import Priority, RequestBudget
from monitor.railway.client import (
    DEPLOYMENT_QUERY,
    RailwayClient,
    operation_of,
    parse_deployment,
    parse_deployments,
)
from monitor.railway.schema import validate_document
from monitor.sandbox.emulator_model import Deployment as EmuDeployment
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.telemetry import Metrics
from tests.helpers import until

TOKEN = "account-token"
T = TypeVar("T")


@dataclass
class World:
    """A shop with web and api in production; web has an old, a good and a current release."""

    emu: RailwayEmulator
    clock: FakeClock
    url: str
    session: aiohttp.ClientSession
    metrics: Metrics
    project: str
    env: str
    web: str
    old: EmuDeployment
    good: EmuDeployment
    current: EmuDeployment
    queries: list[dict[str, str]] = field(default_factory=list)

    def client(self, *, budget: RequestBudget | None = None, **kwargs: Any) -> RailwayClient:
        kwargs.setdefault("token", SecretStr(TOKEN))
        return RailwayClient(
            self.session,
            url=self.url,
            clock=self.clock,
            budget=budget or self.budget(),
            metrics=self.metrics,
            **kwargs,
        )

    def budget(self, **kwargs: Any) -> RequestBudget:
        kwargs = {"per_hour": 1000, "per_second": 1000} | kwargs
        return RequestBudget(self.clock, metrics=self.metrics, **kwargs)

    def count(self, operation: str, outcome: str) -> float:
        labels = {"operation": operation, "outcome": outcome}
        value = self.metrics.registry.get_sample_value("railguard_railway_requests_total", labels)
        return 0.0 if value is None else value

    def rollbacks(self) -> list[str]:
        return [m.arguments["id"] for m in self.emu.mutation_calls("deploymentRollback") if m.ok]


@pytest.fixture
async def world(clock: FakeClock) -> AsyncIterator[World]:
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    web_ = emu.add_service(project.id, "web")
    now = clock.time()
    old = emu.add_deployment(web_.id, env.id, created_at=now - 7200, meta={"v": 1})
    good = emu.add_deployment(web_.id, env.id, created_at=now - 3600, meta={"v": 2})
    current = emu.add_deployment(web_.id, env.id, created_at=now - 600, meta={"v": 3})
    queries: list[dict[str, str]] = []

    async def record(request: web.Request, _response: web.StreamResponse) -> None:
        queries.append(dict(request.query))

    emu.app.on_response_prepare.append(record)
    server = TestServer(emu.app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield World(
            emu,
            clock,
            str(server.make_url("/graphql/v2")),
            session,
            Metrics(CollectorRegistry()),
            project.id,
            env.id,
            web_.id,
            old,
            good,
            current,
            queries,
        )
    await server.close()


async def finish(clock: FakeClock, work: Awaitable[T], step: float = 1.0, limit: float = 900) -> T:
    """Run ``work``, moving the clock on whenever it waits (I/O completes in between)."""
    task = asyncio.ensure_future(work)
    spent = 0.0
    while not task.done():
        await until(lambda: task.done() or clock.sleepers > 0, "the work to wait on the clock")
        if not task.done():
            assert spent < limit, f"still not done after {limit}s on the clock"
            await clock.advance(step)
            spent += step
    return task.result()


# -- auth and the request itself ---------------------------------------------------------------


async def test_an_account_token_reads_a_deployment(world: World) -> None:
    d = await world.client().deployment(world.good.id)
    assert (d.id, d.status, d.can_rollback, dict(d.meta)) == (
        world.good.id,
        "REMOVED",
        True,
        {"v": 2},
    )
    assert (d.service_id, d.environment_id) == (world.web, world.env)
    assert d.created_at == pytest.approx(world.good.created_at, abs=0.001)
    assert d.updated_at is not None
    assert d.static_url == "web-production.up.railway.app"
    assert world.count("RailguardDeployment", "ok") == 1


async def test_a_project_token_sees_its_environment_and_nothing_else(world: World) -> None:
    other = world.emu.add_project("other")
    other_env = world.emu.add_environment(other.id, "production")
    stranger = world.emu.add_deployment(world.emu.add_service(other.id, "x").id, other_env.id)
    token = world.emu.add_project_token(world.project, world.env)
    client = world.client(token=None, project_token=SecretStr(token))
    listed = await client.deployments(world.web, world.env, first=2)
    assert [d.id for d in listed] == [world.current.id, world.good.id]
    with pytest.raises(RailwayAuthError, match="Not Authorized"):
        await client.deployment(stranger.id)


@pytest.mark.parametrize("kind", ["token", "project_token"])
async def test_a_wrong_token_is_an_auth_error_sent_once(world: World, kind: str) -> None:
    client = world.client(**{"token": None, kind: SecretStr("wrong")})
    with pytest.raises(RailwayAuthError) as caught:
        await client.deployment(world.good.id)
    assert caught.value.messages == ["Not Authorized"]
    assert caught.value.data is None
    assert "wrong" not in str(caught.value)
    assert len(world.emu.requests) == 1
    assert world.count("RailguardDeployment", "auth_error") == 1


async def test_an_invalid_document_is_refused_with_graphqls_message_once(world: World) -> None:
    with pytest.raises(RailwayGraphQLError) as caught:
        await world.client().execute('query Bad { deployment(id: "x") { nope } }')
    assert not isinstance(caught.value, RailwayAuthError)
    assert caught.value.operation == "Bad"
    assert caught.value.messages == ["Cannot query field 'nope' on type 'Deployment'."]
    assert [r.status for r in world.emu.requests] == [400]
    assert world.count("Bad", "graphql_error") == 1


async def test_an_unknown_deployment_is_not_found(world: World) -> None:
    with pytest.raises(RailwayGraphQLError, match="Deployment not found"):
        await world.client().deployment("no-such-id")
    assert len(world.emu.requests) == 1


async def test_a_refused_rollback_is_not_retried(world: World) -> None:
    world.emu.set_deployment(world.good.id, can_rollback=False)
    with pytest.raises(RailwayGraphQLError, match="cannot be rolled back"):
        await world.client().rollback(world.good.id)
    assert len(world.emu.requests) == 1


@pytest.mark.parametrize(
    ("url", "source", "query"),
    [
        ("", "railguard", {"source": "railguard"}),
        ("", "ci", {"source": "ci"}),
        ("?source=mine", "railguard", {"source": "mine"}),  # a source in RAILWAY_API_URL wins
    ],
)
async def test_the_source_reaches_railway(
    world: World, url: str, source: str, query: dict[str, str]
) -> None:
    world.url += url
    await world.client(source=source).deployment(world.good.id)
    assert world.queries == [query]
    # As Railway's CLI names itself; the token is sent but never kept in the emulator's log.
    [sent] = world.emu.requests
    assert sent.headers["x-source"] == source
    assert sent.query == query
    assert "authorization" not in sent.headers


# -- transient failures ------------------------------------------------------------------------


async def test_a_5xx_burst_is_retried_until_it_succeeds(world: World) -> None:
    world.emu.set_faults(error_count=3)
    d = await finish(world.clock, world.client().deployment(world.good.id))
    assert d.id == world.good.id
    assert [r.status for r in world.emu.requests] == [503, 503, 503, 200]
    assert world.count("RailguardDeployment", "server_error") == 3
    assert world.count("RailguardDeployment", "ok") == 1
    duration = "railguard_railway_request_duration_seconds_count"
    labels = {"operation": "RailguardDeployment"}
    assert world.metrics.registry.get_sample_value(duration, labels) == 4


async def test_a_429_waits_for_retry_after_then_succeeds(world: World) -> None:
    clock = world.clock
    client = world.client(budget=world.budget(per_hour=36_000, reserve=0.0))
    world.emu.set_faults(rate_limit=2, rate_window=60)
    await client.deployment(world.good.id)
    world.emu.set_faults(rate_limit=1)  # Railway cuts the limit: no warning in the headers
    retry_after = math.ceil(60 - clock.time() % 60)
    task = asyncio.ensure_future(client.deployment(world.old.id))
    await until(lambda: len(world.emu.requests) == 2, "the 429")
    assert world.emu.requests[1].status == 429
    await clock.advance(retry_after - 0.01)
    assert not task.done()
    assert len(world.emu.requests) == 2
    assert (await finish(clock, task, step=0.01)).id == world.old.id
    assert world.emu.requests[2].at == pytest.approx(clock.time() - clock.time() % 60)
    assert world.count("RailguardDeployment", "rate_limited") == 1


async def test_a_429_storm_waits_out_every_retry_after(world: World, canned: Any) -> None:
    clock = world.clock
    busy = (429, '{"errors": [{"message": "Too many requests"}]}', {"Retry-After": "5"})
    fake = await canned(busy, busy, busy, (200, '{"data": {"ok": true}}', {}))
    task = asyncio.ensure_future(world.client().execute("query Q { __typename }"))
    await until(lambda: fake.hits == 1, "the first 429")
    for hits in (1, 2, 3):
        await clock.advance(4.99)
        assert fake.hits == hits
        await clock.advance(0.01)
        await until(lambda: fake.hits == hits + 1 or task.done(), "the retry")  # noqa: B023
    assert await task == {"ok": True}
    assert world.count("Q", "rate_limited") == 3


async def test_spent_attempts_raise_a_transient_error(world: World) -> None:
    world.emu.set_faults(error_count=10)
    with pytest.raises(RailwayTransientError, match="gave up after 3 attempts") as caught:
        await finish(world.clock, world.client(max_attempts=3).deployment(world.good.id))
    assert not caught.value.maybe_applied
    assert caught.value.operation == "RailguardDeployment"
    assert len(world.emu.requests) == 3


async def test_a_dropped_query_is_retried(world: World) -> None:
    world.emu.set_faults(drop_count=1)
    d = await finish(world.clock, world.client().deployment(world.good.id))
    assert d.id == world.good.id
    assert [r.fault for r in world.emu.requests] == ["drop", None]
    assert world.count("RailguardDeployment", "network_error") == 1


async def test_a_dropped_rollback_is_not_resent_and_may_have_been_applied(world: World) -> None:
    world.emu.set_faults(drop_count=1)
    with pytest.raises(RailwayTransientError) as caught:
        await world.client().rollback(world.good.id)
    assert caught.value.maybe_applied
    assert [r.fault for r in world.emu.requests] == ["drop"]
    assert world.rollbacks() == []  # here it was not: the caller re-checks, as it must


async def test_a_rollback_that_timed_out_is_not_resent(world: World) -> None:
    world.emu.set_faults(latency=5)  # on the FakeClock: the emulator answers when time moves
    with pytest.raises(RailwayTransientError, match="timed out") as caught:
        await world.client(timeout=0.05).rollback(world.good.id)
    assert caught.value.maybe_applied
    assert world.count("DeploymentRollback", "network_error") == 1
    await world.clock.advance(5)
    assert world.rollbacks() == []


async def test_a_rollback_through_429_is_applied_exactly_once(world: World) -> None:
    client = world.client(budget=world.budget(per_hour=36_000, reserve=0.0))
    world.emu.set_faults(rate_limit=2, rate_window=60)
    await client.deployment(world.good.id)
    world.emu.set_faults(rate_limit=1)
    assert await finish(world.clock, client.rollback(world.good.id))
    assert world.rollbacks() == [world.good.id]
    assert [r.status for r in world.emu.requests] == [200, 429, 200]


async def test_a_rollback_answered_5xx_is_not_resent_and_may_have_been_applied(
    world: World,
) -> None:
    # A gateway's 502/504 can come after the backend applied the mutation.
    world.emu.set_faults(error_count=1, error_status=502)
    with pytest.raises(RailwayTransientError, match="HTTP 502") as caught:
        await world.client().rollback(world.good.id)
    assert caught.value.maybe_applied
    assert [r.status for r in world.emu.requests] == [502]


async def test_an_unreachable_railway_is_retried_even_for_a_rollback(world: World) -> None:
    gone = TestServer(web.Application(), host="127.0.0.1")
    await gone.start_server()
    world.url = str(gone.make_url("/graphql/v2"))
    await gone.close()
    with pytest.raises(RailwayTransientError, match="cannot reach Railway") as caught:
        await finish(world.clock, world.client(max_attempts=2).rollback(world.good.id))
    assert not caught.value.maybe_applied  # never connected, so never sent
    assert world.count("DeploymentRollback", "network_error") == 2


# -- the budget --------------------------------------------------------------------------------


async def test_x_ratelimit_remaining_lowers_the_budget(world: World) -> None:
    world.emu.set_faults(rate_limit=50)
    budget = world.budget()
    await world.client(budget=budget).deployment(world.good.id)
    assert budget.level == pytest.approx(49, abs=0.01)


@pytest.mark.parametrize("unit", ["unix", "seconds", "unix_ms"])
async def test_x_ratelimit_reset_in_any_unit_waits_only_for_the_window(
    world: World, unit: str
) -> None:
    clock = world.clock
    world.emu.set_faults(rate_limit=1, rate_window=60, reset_unit=unit)
    client = world.client()
    with capture_logs() as logs:
        await client.deployment(world.good.id)  # the last one of the window: none remain
        window_end = clock.time() - clock.time() % 60 + 60
        task = asyncio.ensure_future(client.deployment(world.old.id))
        await clock.advance(window_end - clock.time() - 0.5)
        assert not task.done()
        assert len(world.emu.requests) == 1  # nothing sent before the reset
        assert (await finish(clock, task, step=0.5, limit=5)).id == world.old.id
    assert [r.status for r in world.emu.requests] == [200, 200]
    assert [e for e in logs if "rate-limit" in e["event"]] == []  # every unit read plausibly


@pytest.mark.parametrize(
    ("reset", "longest"),
    [
        ("99999999999999999999", ratelimit.MAX_WAIT),  # far future in every unit
        ("1e300", ratelimit.MAX_WAIT),
        ("-12345678901234", 0.0),  # in the past in every unit
        ("tomorrow", ratelimit.MAX_WAIT),  # unreadable: Railway's count is kept for the max
    ],
)
async def test_an_implausible_reset_is_clamped_and_logged_once(
    world: World, canned: Any, reset: str, longest: float
) -> None:
    clock = world.clock
    spent = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    fake = await canned((200, '{"data": {}}', spent))
    client = world.client()
    with capture_logs() as logs:
        await client.execute("query Q { __typename }")
        task = asyncio.ensure_future(client.execute("query Q { __typename }"))
        await finish(clock, task, step=1.0, limit=longest + 2)
    assert fake.hits == 2
    assert clock.monotonic() <= longest + 1
    # Said once for both answers: every answer carries the header.
    [warning] = [e for e in logs if e["log_level"] == "warning" and "rate-limit" in e["event"]]
    assert warning["header"] == "X-RateLimit-Reset"


async def test_a_retry_after_of_days_waits_the_maximum_and_says_so(
    world: World, canned: Any
) -> None:
    days = {"Retry-After": str(40 * 86400)}
    fake = await canned((429, "slow down", days), (200, '{"data": {"ok": true}}', {}))
    with capture_logs() as logs:
        task = asyncio.ensure_future(world.client().execute("query Q { __typename }"))
        await until(lambda: fake.hits == 1, "the 429")
        await world.clock.advance(ratelimit.MAX_WAIT - 1)
        assert not task.done()
        assert await finish(world.clock, task, step=0.5, limit=5) == {"ok": True}
    [warning] = [e for e in logs if e["log_level"] == "warning" and "rate-limit" in e["event"]]
    assert warning["header"] == "Retry-After"
    assert warning["wait"] == ratelimit.MAX_WAIT


async def test_the_budget_holds_routine_polling_but_not_the_rollback(world: World) -> None:
    client = world.client(budget=world.budget(per_hour=20, reserve=0.2))
    polls = [asyncio.ensure_future(client.deployment(world.current.id)) for _ in range(17)]
    await until(lambda: sum(t.done() for t in polls) == 16, "16 polls")
    assert len(world.emu.requests) == 16
    assert not polls[16].done()
    assert await client.rollback(world.good.id)  # straight from the reserve, no clock needed
    assert world.rollbacks() == [world.good.id]
    await world.clock.advance(3599)  # room returns when the first sends leave the hour
    assert not polls[16].done()
    await world.clock.advance(1)
    await until(polls[16].done, "the held poll")
    assert len(world.emu.requests) == 18


async def test_nothing_is_lost_or_duplicated_through_a_flaky_railway(world: World) -> None:
    emu = world.emu
    deployments = [
        emu.add_deployment(world.web, world.env, status="REMOVED", meta={"n": i}) for i in range(12)
    ]
    # 5xx for the queries (a mutation answered 5xx may have applied: the caller reconciles),
    # 429 for everything.
    emu.set_faults(
        error_ratio=0.3, fault_operations=["RailguardDeployment"], rate_limit=8, rate_window=60
    )
    client = world.client(budget=world.budget(per_hour=36_000, reserve=0.0), max_attempts=12)
    work = [client.deployment(d.id) for d in deployments]
    rollbacks = [client.rollback(world.old.id), client.rollback(world.good.id)]
    results = await finish(world.clock, asyncio.gather(*work, *rollbacks))
    got = [(d.id, dict(d.meta)) for d in results[:12]]
    assert got == [(d.id, {"n": i}) for i, d in enumerate(deployments)]
    assert results[12:] == [True, True]
    assert sorted(world.rollbacks()) == sorted([world.old.id, world.good.id])
    assert sum(r.status == 200 for r in emu.requests) == 14
    assert {r.status for r in emu.requests} == {200, 429, 503}


# -- answers that are not GraphQL --------------------------------------------------------------


class Canned:
    """A server answering with canned responses in turn (the last one repeats)."""

    def __init__(self, *answers: tuple[int, str, dict[str, str]]) -> None:
        self.answers = answers
        self.hits = 0
        self.app = web.Application()
        self.app.router.add_post("/graphql/v2", self.answer)

    async def answer(self, _request: web.Request) -> web.Response:
        status, body, headers = self.answers[min(self.hits, len(self.answers) - 1)]
        self.hits += 1
        return web.Response(status=status, text=body, headers=headers)


@pytest.fixture
async def canned(world: World) -> AsyncIterator[Any]:
    servers: list[TestServer] = []

    async def serve(*answers: tuple[int, str, dict[str, str]]) -> Canned:
        fake = Canned(*answers)
        server = TestServer(fake.app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        world.url = str(server.make_url("/graphql/v2"))
        return fake

    yield serve
    for server in servers:
        await server.close()


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (
            200,
            "<html>oops</html>",
            RailwayProtocolError,
            "not a JSON object \\(HTTP 200\\): '<html",
        ),
        (200, "[1, 2]", RailwayProtocolError, "not a JSON object"),
        (200, "{}", RailwayProtocolError, "neither data nor errors"),
        (404, '{"data": null}', RailwayProtocolError, "neither data nor errors \\(HTTP 404\\)"),
        (200, "x" * 500, RailwayProtocolError, "x{120}\\.\\.\\.'$"),
        (403, "Forbidden", RailwayAuthError, "HTTP 403"),
        (401, '{"errors": [{"message": "bad"}]}', RailwayAuthError, "bad"),
        (400, '{"errors": "bad"}', RailwayGraphQLError, "Q: bad"),
        (200, '{"errors": ["plain"]}', RailwayGraphQLError, "plain"),
    ],
)
async def test_odd_answers_are_permanent_errors_sent_once(
    world: World, canned: Any, status: int, body: str, error: type[Exception], match: str
) -> None:
    fake = await canned((status, body, {}))
    with pytest.raises(error, match=match):
        await world.client().execute("query Q { __typename }")
    assert fake.hits == 1
    outcome = {RailwayProtocolError: "server_error", RailwayAuthError: "auth_error"}
    assert world.count("Q", outcome.get(error, "graphql_error")) == 1


async def test_partial_data_comes_with_the_error(world: World, canned: Any) -> None:
    await canned((200, '{"data": {"a": 1}, "errors": [{"message": "Unauthenticated"}]}', {}))
    with pytest.raises(RailwayAuthError) as caught:
        await world.client().execute("query Q { __typename }")
    assert caught.value.data == {"a": 1}


async def test_an_http_date_retry_after_is_honoured(world: World, canned: Any) -> None:
    clock = world.clock
    later = format_datetime(datetime.fromtimestamp(clock.time() + 30, UTC), usegmt=True)
    odd = {"X-RateLimit-Remaining": "lots", "X-RateLimit-Reset": "soon"}
    fake = await canned((503, "busy", {"Retry-After": later, **odd}), (200, '{"data": {}}', odd))
    budget = world.budget()
    task = asyncio.ensure_future(world.client(budget=budget).execute("{ __typename }"))
    await until(lambda: fake.hits == 1, "the 503")
    await clock.advance(29.9)
    assert not task.done()
    assert fake.hits == 1
    assert await finish(clock, task, step=0.1) == {}
    assert budget.level == 998  # two attempts sent; unreadable headers change nothing
    assert world.count("anonymous query", "ok") == 1


# -- construction, documents and parsing -------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "project_token"),
    [(None, None), ("a", "b"), ("", None), ("  ", "")],
)
def test_exactly_one_token_is_required(
    world: World, token: str | None, project_token: str | None
) -> None:
    with pytest.raises(ValueError, match=r"RAILWAY_API_TOKEN .* RAILWAY_PROJECT_TOKEN"):
        world.client(
            token=None if token is None else SecretStr(token),
            project_token=None if project_token is None else SecretStr(project_token),
        )


def test_max_attempts_must_allow_one_attempt(world: World) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        world.client(max_attempts=0)


def test_the_token_stays_out_of_the_repr(world: World) -> None:
    client = world.client(token=SecretStr("s3cret"))
    assert "s3cret" not in repr(client)
    assert URL(str(client.url)).query["source"] == "railguard"


def documents() -> Iterator[tuple[str, str]]:
    for name in dir(client_module):
        if name.endswith(("_QUERY", "_MUTATION")):
            yield name, getattr(client_module, name)


@pytest.mark.parametrize(("name", "document"), list(documents()))
def test_every_document_validates_against_railways_schema(name: str, document: str) -> None:
    assert validate_document(document) == [], name


def test_the_documents_cover_what_railguard_sends() -> None:
    names = {n for n, _ in documents()}
    assert {"DEPLOYMENT_QUERY", "DEPLOYMENTS_QUERY", "ROLLBACK_MUTATION"} <= names
    assert {"REDEPLOY_MUTATION", "RESTART_MUTATION", "DEPLOY_COMMIT_MUTATION"} <= names


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (DEPLOYMENT_QUERY, ("RailguardDeployment", "RailguardDeployment")),
        ("{ __typename }", ("anonymous query", None)),
        ("mutation { deploymentRestart(id: 1) }", ("anonymous mutation", None)),
        ("fragment F on Deployment { id }", ("no operation", None)),
        ("query {", ("unparsable", None)),
    ],
)
def test_the_operation_name_comes_from_the_document(
    document: str, expected: tuple[str, str | None]
) -> None:
    assert operation_of(document) == expected


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("inf", None),
        ("Tue, 14 Nov 2023 22:14:20 GMT", 0.0),  # now
        ("Tue, 14 Nov 2023 22:13:20 GMT", 0.0),  # a minute ago
        ("whenever", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert ratelimit.retry_after(header, NOW + 60).seconds == seconds


def test_an_http_date_retry_after_counts_from_now() -> None:
    assert ratelimit.retry_after("Tue, 14 Nov 2023 22:14:20 GMT", NOW).seconds == 60.0


NODE = {
    "id": "d1",
    "status": "SUCCESS",
    "createdAt": "2024-01-02T03:04:05.678Z",
    "updatedAt": None,
    "canRollback": True,
    "serviceId": None,
    "environmentId": "e1",
    "meta": None,
    "staticUrl": None,
}


def test_a_deployment_parses_with_optional_fields_empty() -> None:
    d = parse_deployment(NODE, "deployment")
    assert d.created_at == datetime(2024, 1, 2, 3, 4, 5, 678000, UTC).timestamp()
    assert (d.updated_at, d.service_id, d.meta, d.static_url) == (None, None, {}, None)
    naive = parse_deployment(NODE | {"createdAt": "2024-01-02T03:04:05"}, "d")
    assert naive.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert hash(d) == hash(parse_deployment(NODE | {"meta": {"a": 1}}, "deployment"))


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        (None, "d0: expected an object, got None"),
        ({"edges": "x"}, "d0.edges: expected a list, got 'x'"),
        ({}, "d0.edges: expected a list, got nothing"),
        ({"edges": [5]}, "d0.edges[0]: expected an object, got 5"),
        ({"edges": [{}]}, "d0.edges[0].node: expected an object, got None"),
        ({"edges": [{"node": NODE | {"id": 7}}]}, "d0.edges[0].node.id: expected a string, got 7"),
        (
            {"edges": [{"node": NODE | {"createdAt": "yesterday"}}]},
            "d0.edges[0].node.createdAt: expected an ISO 8601 time, got 'yesterday'",
        ),
        (
            {"edges": [{"node": {k: v for k, v in NODE.items() if k != "createdAt"}}]},
            "d0.edges[0].node.createdAt: expected an ISO 8601 time, got nothing",
        ),
        (
            {"edges": [{"node": NODE | {"canRollback": "yes"}}]},
            "d0.edges[0].node.canRollback: expected a boolean, got 'yes'",
        ),
        (
            {"edges": [{"node": NODE | {"meta": [1]}}]},
            "d0.edges[0].node.meta: expected an object, got [1]",
        ),
    ],
)
def test_bad_shapes_name_the_field_path_and_value(connection: Any, message: str) -> None:
    with pytest.raises(RailwayProtocolError) as caught:
        parse_deployments(connection, "d0")
    assert str(caught.value) == message


async def test_a_rollback_answer_that_is_not_a_boolean_is_a_protocol_error(
    world: World, canned: Any
) -> None:
    await canned((200, '{"data": {"deploymentRollback": "yes"}}', {}))
    with pytest.raises(RailwayProtocolError, match=r"data\.deploymentRollback: expected a boolean"):
        await world.client().rollback("d1")


async def test_a_commit_is_deployed_and_the_new_deployment_named(world: World) -> None:
    world.emu.deployments[world.good.id].meta["commitHash"] = "c0ffee"
    new = await world.client().deploy_commit(world.web, world.env, "c0ffee")
    (call,) = world.emu.mutation_calls("serviceInstanceDeployV2")
    assert call.arguments == {
        "environmentId": world.env,
        "serviceId": world.web,
        "commitSha": "c0ffee",
    }
    built = world.emu.deployments[new]
    assert (built.status, built.meta) == ("INITIALIZING", {"v": 2, "commitHash": "c0ffee"})
    (request,) = world.emu.requests
    assert (request.operation_name, request.status) == ("ServiceInstanceDeploy", 200)


async def test_a_dropped_deploy_is_not_resent_and_may_have_been_applied(world: World) -> None:
    world.emu.set_faults(drop_after_count=1)
    with pytest.raises(RailwayTransientError) as caught:
        await world.client().deploy_commit(world.web, world.env, "c0ffee")
    assert caught.value.maybe_applied
    assert len(world.emu.mutation_calls("serviceInstanceDeployV2")) == 1  # applied, once


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('{"data": {"serviceInstanceDeployV2": true}}', "expected a string"),
        ('{"data": {"serviceInstanceDeployV2": " "}}', "expected a deployment id"),
        ('{"data": {"serviceInstanceDeployV2": "' + "x" * 300 + '"}}', "expected a deployment id"),
    ],
)
async def test_a_deploy_answer_that_is_no_id_is_a_protocol_error(
    world: World, canned: Any, body: str, match: str
) -> None:
    await canned((200, body, {}))
    with pytest.raises(RailwayProtocolError, match=match):
        await world.client().deploy_commit("s", "e", "c0ffee")


async def test_critical_reads_use_the_reserve(world: World) -> None:
    budget = world.budget(per_hour=10, reserve=0.9)
    client = world.client(budget=budget)
    assert (await client.deployment(world.good.id, priority=Priority.CRITICAL)).id == world.good.id
    listed = await client.deployments(world.web, world.env, priority=Priority.CRITICAL)
    assert [d.id for d in listed] == [world.current.id, world.good.id, world.old.id]


async def test_metrics_are_optional(world: World) -> None:
    budget = RequestBudget(world.clock, per_hour=100, per_second=10)
    client = RailwayClient(
        world.session, url=world.url, token=SecretStr(TOKEN), clock=world.clock, budget=budget
    )
    assert (await client.deployment(world.good.id)).id == world.good.id
