"""Railway's own status: read at the boundary, asked with the poll, never a false incident."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from monitor.clock import FakeClock
from monitor.errors import RailwayGraphQLError
from monitor.railway import platform
from monitor.railway.budget import RequestBudget
from monitor.railway.client import RailwayClient
from monitor.railway.document import Target, build_document
from monitor.railway.platform import PlatformStatus, read_platform
from monitor.railway.poller import PLATFORM_BACKOFF, RailwayPoller
from monitor.railway.schema import load_schema, validate_document
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.sources.railway import RailwayErrorRate
from monitor.telemetry import Metrics

AT = 1_700_000_000.0
TOKEN = "test-token"


def incident(status: str = "INVESTIGATING", **kw: Any) -> dict[str, Any]:
    return {
        "id": "inc-1",
        "message": "Edge network\n failing in every region",
        "status": status,
        "url": "https://status.railway.com/incidents/inc-1",
        "createdAt": "2023-11-14T22:00:00.000Z",
    } | kw


def maintenance(status: str = "INPROGRESS", **kw: Any) -> dict[str, Any]:
    return {
        "id": "m-1",
        "message": "Database upgrade",
        "status": status,
        "url": "https://status.railway.com/maintenance/m-1",
        "start": "2023-11-14T21:00:00Z",
    } | kw


def answer(stable: Any = True, inc: Any = None, maint: Any = None) -> dict[str, Any]:
    return {"isStable": stable, "incident": inc, "maintenance": maint}


def test_the_statuses_are_the_schemas() -> None:
    def values(name: str) -> set[str]:
        return set(getattr(load_schema().get_type(name), "values", {}))

    assert values("IncidentStatus") == platform.INCIDENT_STATUSES
    assert values("MaintenanceStatus") == platform.MAINTENANCE_STATUSES


def test_the_poll_asks_it_in_the_same_document() -> None:
    targets = [Target("web", "s", "e", deployment=True), Target("api", "s", "e")]
    document = build_document(targets)
    assert validate_document(document) == []
    assert document.count("platformStatus") == 1
    assert validate_document(build_document(targets, platform=False)) == []
    assert "platformStatus" not in build_document(targets, platform=False)


@pytest.mark.parametrize(
    ("given", "troubled", "key", "said"),
    [
        (answer(), False, None, ""),
        (
            answer(False, incident()),
            True,
            "inc-1",
            '"Edge network failing in every region" (INVESTIGATING, '
            "https://status.railway.com/incidents/inc-1)",
        ),
        (answer(True, incident("MONITORING")), True, "inc-1", '"Edge network'),  # still open
        (answer(True, incident("RESOLVED")), False, None, ""),
        (answer(True, None, maintenance()), False, None, ""),  # maintenance alone holds nothing
        (
            answer(False, None, maintenance()),
            True,
            "m-1",
            'not stable, maintenance in progress: "Database upgrade" (INPROGRESS',
        ),
        (answer(False, None, maintenance("NOTSTARTEDYET")), True, "unstable", "not stable (no"),
        (answer(False, incident("RESOLVED")), True, "unstable", "not stable (no incident named)"),
        (answer(False, incident(url="javascript:alert(1)")), True, "inc-1", "(INVESTIGATING)"),
    ],
)
def test_what_railway_says(given: Any, troubled: bool, key: str | None, said: str) -> None:
    status = read_platform(given, AT)
    assert isinstance(status, PlatformStatus), status
    assert (status.troubled, status.key) == (troubled, key)
    assert said in status.describe()
    assert bool(status.describe()) == troubled
    assert status.at == AT


def test_an_incident_is_named_with_its_time_and_link() -> None:
    status = read_platform(answer(False, incident(message="x" * 500)), AT)
    assert isinstance(status, PlatformStatus)
    assert status.incident is not None
    assert len(status.incident.message) == platform.MAX_TEXT
    assert status.incident.since == AT - 800  # 2023-11-14T22:00:00Z
    assert status.incident.url == "https://status.railway.com/incidents/inc-1"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (None, "platform: expected an object, got None"),
        ("stable", "platform: expected an object"),
        ([answer()], "platform: expected an object"),
        ({}, "platform.isStable: expected a boolean, got None"),
        (answer(None), "platform.isStable: expected a boolean, got None"),
        (answer("false"), "platform.isStable: expected a boolean, got 'false'"),
        (answer(0), "platform.isStable: expected a boolean, got 0"),
        (answer(False, 5), "platform.incident: expected an object or null, got 5"),
        (answer(False, incident(id=None)), "platform.incident.id: expected a string"),
        (answer(False, incident(id=" ")), "platform.incident.id: expected a string"),
        (answer(False, incident(message=7)), "platform.incident.message: expected a string"),
        (answer(False, incident(url=None)), "platform.incident.url: expected a string"),
        (answer(False, incident("ONGOING")), "platform.incident.status: not one of IDENTIFIED"),
        (answer(True, None, maintenance("RESOLVED")), "platform.maintenance.status: not one of"),
        (answer(True, None, [[[[[]]]]]), "platform.maintenance: expected an object or null"),
    ],
)
def test_garbage_is_unknown_never_an_incident(given: Any, reason: str) -> None:
    read = read_platform(given, AT)
    assert isinstance(read, str)
    assert read.startswith(reason), read


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)
NOTICE = st.fixed_dictionaries(
    {
        "id": st.one_of(st.just("inc-1"), JSON),
        "message": st.one_of(st.just("down"), JSON),
        "status": st.one_of(st.sampled_from(["INVESTIGATING", "RESOLVED", "INPROGRESS"]), JSON),
        "url": st.one_of(st.just("https://status.railway.com/x"), JSON),
        "createdAt": JSON,
        "start": JSON,
    }
)
PLATFORM = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "isStable": st.one_of(st.booleans(), JSON),
            "incident": st.one_of(st.none(), NOTICE, JSON),
            "maintenance": st.one_of(st.none(), NOTICE, JSON),
        }
    ),
)


@settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(PLATFORM)
def test_any_answer_is_a_status_or_a_reason(given: Any) -> None:
    read = read_platform(given, AT)
    if isinstance(read, str):
        assert read.strip()
        return
    assert read.troubled == (read.key is not None)
    assert read.troubled == bool(read.describe())
    assert "\n" not in read.describe()


# -- the poller ----------------------------------------------------------------------------------


@pytest.fixture
async def emu(clock: FakeClock) -> AsyncIterator[RailwayEmulator]:
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    yield emu
    await emu.aclose()


@pytest.fixture
async def poller(emu: RailwayEmulator, clock: FakeClock) -> AsyncIterator[RailwayPoller]:
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    targets = []
    for name in ("web", "api"):
        service = emu.add_service(project.id, name)
        emu.add_deployment(service.id, env.id, created_at=clock.time() - 3600)
        targets.append(Target(name, service.id, env.id, deployment=True))
    metrics = Metrics(CollectorRegistry())
    budget = RequestBudget(clock, per_hour=1000, per_second=10, metrics=metrics)
    async with TestServer(emu.app, host="127.0.0.1") as server, aiohttp.ClientSession() as s:
        client = RailwayClient(
            s,
            url=str(server.make_url("/graphql/v2")),
            token=SecretStr(TOKEN),
            clock=clock,
            budget=budget,
            metrics=metrics,
        )
        yield RailwayPoller(client, targets, clock=clock, interval=30)


async def test_railways_incident_comes_with_the_poll(
    poller: RailwayPoller, emu: RailwayEmulator, clock: FakeClock
) -> None:
    seen: list[PlatformStatus] = []

    async def listen(status: PlatformStatus) -> None:
        seen.append(status)

    poller.platform_listener = listen
    await poller.poll()
    assert len(emu.requests) == 1  # no extra request for it
    assert "platformStatus" in emu.requests[0].fields
    assert poller.incident(clock.time()) is None
    assert [s.troubled for s in seen] == [False]

    emu.platform.open_incident("Deploys paused", status="IDENTIFIED", id="inc-9")
    await poller.poll()
    trouble = poller.incident(clock.time())
    assert trouble is not None
    assert trouble.key == "inc-9"
    assert trouble.describe().startswith('"Deploys paused" (IDENTIFIED, https://')
    assert trouble.at == poller.latest("web").at  # type: ignore[union-attr]  # when it answered
    assert poller.latest("web") is not None
    assert len(emu.requests) == 2
    # Stale: a reading older than the poll's max age holds nothing.
    assert poller.max_age == 5 * 30 + 30
    await clock.advance(poller.max_age)
    assert poller.incident(clock.time()) is not None
    await clock.advance(1)
    assert poller.incident(clock.time()) is None
    emu.platform.close_incident()
    await poller.poll()
    assert poller.incident(clock.time()) is None
    assert [s.key for s in seen] == [None, "inc-9", None]


async def test_railway_refusing_it_costs_one_request_then_it_rests(
    poller: RailwayPoller, emu: RailwayEmulator, clock: FakeClock
) -> None:
    """platformStatus is non-null: an error on it nulls the whole answer. The poll asks
    again without it (the services are still judged) and leaves it out for a while."""
    emu.platform.open_incident("Edge failing")
    emu.platform.error = "Not available for this token"
    await poller.poll()
    assert [("platformStatus" in r.fields) for r in emu.requests] == [True, False]
    assert poller.last_failure is None
    assert poller.latest("web") is not None
    assert poller.platform is None
    assert poller.platform_problem == "Railway refused platformStatus: Not available for this token"
    assert poller.incident(clock.time()) is None  # unknown is never an incident
    await clock.advance(PLATFORM_BACKOFF - 1)
    await poller.poll()
    assert len(emu.requests) == 3
    assert "platformStatus" not in emu.requests[-1].fields
    emu.platform.error = None
    await clock.advance(1)
    await poller.poll()
    assert "platformStatus" in emu.requests[-1].fields
    assert poller.incident(clock.time()) is not None
    assert poller.platform_problem is None


async def test_a_refusal_beside_a_failing_service_is_retried_once_each(
    poller: RailwayPoller, emu: RailwayEmulator
) -> None:
    emu.platform.error = "boom"
    rate = RailwayErrorRate(source="railway")  # its alias errors: the service is gone
    poller.targets = (*poller.targets, Target("gone", "no-such-service", "no-env", rate))
    poller.document = build_document(poller.targets)
    await poller.poll()
    assert len(emu.requests) == 3  # Railway names one error at a time: one retry each
    assert poller.last_failure is None
    gone = poller.latest("gone")
    assert gone is not None
    assert gone.problem is not None
    assert poller.latest("web").problem is None  # type: ignore[union-attr]


class Answers:
    """A client answering each poll with the next of ``answers`` (an exception is raised)."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)

    async def execute(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        reply = self.answers.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


async def test_garbage_keeps_the_last_readable_status_to_age(clock: FakeClock) -> None:
    edges = {"edges": []}
    client = Answers(
        {"d0": edges, "platform": answer(False, incident())},
        {"d0": edges, "platform": {"isStable": "no"}},
        {"d0": edges},
        {"d0": edges, "platform": None},
    )
    poller = RailwayPoller(
        cast(RailwayClient, client), [Target("web", "s", "e")], clock=clock, interval=30
    )
    await poller.poll()
    first = poller.platform
    assert first is not None
    for _ in range(3):
        await clock.advance(30)
        await poller.poll()  # never raises
        assert poller.platform is first  # unknown changes nothing: the last word ages
        assert poller.platform_problem is not None
    assert poller.incident(clock.time()) is not None  # 90s old: still fresh
    await clock.advance(poller.max_age - 90 + 1)
    assert poller.incident(clock.time()) is None


async def test_partial_data_with_an_error_on_it_is_unknown(clock: FakeClock) -> None:
    error = RailwayGraphQLError(
        "RailguardTick", ["boom"], data={"d0": {"edges": []}}, paths={"platform": "boom"}
    )
    poller = RailwayPoller(
        cast(RailwayClient, Answers(error)), [Target("web", "s", "e")], clock=clock, interval=30
    )
    await poller.poll()
    assert poller.platform is None
    assert poller.platform_problem == "Railway refused platformStatus: boom"
    assert poller.latest("web") is not None


async def test_polling_without_it(clock: FakeClock) -> None:
    client = Answers({"d0": {"edges": []}, "platform": answer(False, incident())})
    poller = RailwayPoller(
        cast(RailwayClient, client),
        [Target("web", "s", "e")],
        clock=clock,
        interval=30,
        platform=False,
    )
    assert "platformStatus" not in poller.document
    await poller.poll()
    assert poller.platform is None
    assert poller.platform_problem is None
