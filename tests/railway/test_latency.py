"""Latency from Railway: httpDurationMetrics (milliseconds) and the step's request count read at
the boundary, asked in the batched poll and handed to the service (garbage property-based with
hypothesis, derandomized for CI)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from monitor.clock import FakeClock
from monitor.model import LATENCY_SIGNALS, Sample, Signal
from monitor.railway.budget import RequestBudget
from monitor.railway.client import RailwayClient
from monitor.railway.document import Target
from monitor.railway.metrics import latency_samples
from monitor.railway.poller import RailwayPoller
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.sources.exposition_checks import MAX_LATENCY
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwaySource

TOKEN = "latency-token"
LATENCY = RailwayLatency(source="railway", min_requests=10, step=60)
AT = 1_700_000_000.0
STEP = AT - 120  # a complete step
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),  # NaN and infinities included
    st.integers(),
    st.sampled_from([10**400, -(10**400), 1e308, -1.0, 0, "5", "1e3", "yesterday", ""]),
    st.text(max_size=6),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)
MS = st.one_of(st.floats(0, 1e5), st.integers(0, 10**5), ODD)
TS = st.one_of(st.integers(int(AT) - 600, int(AT)), ODD)
DURATIONS = st.one_of(
    st.fixed_dictionaries(
        {
            "samples": st.lists(
                st.one_of(
                    st.fixed_dictionaries({"ts": TS, "p50": MS, "p90": MS, "p95": MS, "p99": MS}),
                    JSON,
                ),
                max_size=3,
            )
        }
    ),
    JSON,
)
COUNTS = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {
                "statusCode": st.one_of(st.sampled_from([200, 500]), ODD),
                "samples": st.lists(
                    st.fixed_dictionaries(
                        {"ts": TS, "value": st.one_of(st.integers(0, 10**4), ODD)}
                    ),
                    max_size=3,
                ),
            }
        ),
        max_size=2,
    ),
    JSON,
)


def durations(*steps: tuple[Any, Any, Any, Any, Any]) -> dict[str, Any]:
    return {
        "samples": [{"ts": ts, "p50": a, "p90": b, "p95": c, "p99": d} for ts, a, b, c, d in steps]
    }


def counts(*steps: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"statusCode": 200, "samples": [{"ts": ts, "value": n} for ts, n in steps]}]


def read(
    answer: Any, by_status: Any, signals: tuple[Signal, ...] = LATENCY_SIGNALS
) -> list[Sample]:
    return latency_samples(answer, by_status, LATENCY, signals, AT, "p0", requests_path="n0")


@FAST
@given(DURATIONS, COUNTS)
def test_any_answer_gives_sane_latencies_or_unknown(answer: Any, by_status: Any) -> None:
    samples = read(answer, by_status)
    assert [s.signal for s in samples] == list(LATENCY_SIGNALS)
    for sample in samples:
        if sample.value is None:
            assert sample.reason.strip(), sample
        else:
            assert math.isfinite(sample.value), sample
            assert 0 <= sample.value <= MAX_LATENCY, sample
            assert sample.detail["requests"] >= LATENCY.min_requests
    known = [s.value for s in samples if s.value is not None]
    assert known == sorted(known)  # never p99 below p50


@pytest.mark.parametrize(
    ("answer", "by_status", "reason"),
    [
        ([], counts((STEP, 50)), "p0: expected {samples: [...]}, got []"),
        ({"samples": {"ts": 1}}, counts((STEP, 50)), "p0: expected {samples: [...]}"),
        (durations((STEP, math.nan, 2, 3, 4)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, 1, 2, 3, math.inf)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, -1, 2, 3, 4)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, True, 2, 3, 4)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, "1", 2, 3, 4)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, 1, 2, 3, 1e12)), counts((STEP, 50)), "p0: a duration that is not"),
        (durations((STEP, 1, 2, 3, 10**400)), counts((STEP, 50)), "p0: a duration that is not"),
        ({"samples": [{"ts": STEP, "p50": 1}]}, counts((STEP, 50)), "p0: a duration that is not"),
        (durations(("soon", 1, 2, 3, 4)), counts((STEP, 50)), "p0: a timestamp that is not"),
        (durations((-60, 1, 2, 3, 4)), counts((STEP, 50)), "p0: a timestamp that is not"),
        (durations((math.nan, 1, 2, 3, 4)), counts((STEP, 50)), "p0: a timestamp that is not"),
        (durations((STEP, 90, 2, 3, 4)), counts((STEP, 50)), "p0: quantiles out of order"),
        (durations((STEP, 1, 2, 5, 4)), counts((STEP, 50)), "p0: quantiles out of order"),
        (
            durations((STEP, 1, 2, 3, 4), (STEP, 5, 6, 7, 8)),
            counts((STEP, 50)),
            "p0: a step answered twice",
        ),
        (durations((STEP, 1, 2, 3, 4)), counts((STEP, -5)), "n0: a request count that is not"),
        (durations((STEP, 1, 2, 3, 4)), {"oops": 1}, "n0: expected a list"),
        (
            durations((STEP, 1, 2, 3, 4)),
            counts((STEP, 9)),
            "too little traffic: 9 requests < min_requests 10",
        ),
        (durations((STEP, 1, 2, 3, 4)), [], "too little traffic: 0 requests < min_requests 10"),
        (durations(), [], "no requests recorded in the last steps"),
        (durations((AT - 30, 1, 2, 3, 4)), [], "no requests recorded"),  # the step still filling
        (
            durations((STEP - 60, 1, 2, 3, 4)),
            counts((STEP - 60, 50), (STEP, 50)),
            f"p0: no request durations for the step at {STEP:g} (50 requests)",
        ),
    ],
)
def test_each_kind_of_garbage_is_unknown(answer: Any, by_status: Any, reason: str) -> None:
    samples = read(answer, by_status)
    assert {s.value for s in samples} == {None}
    assert all(s.reason.startswith(reason) for s in samples), samples[0].reason


def test_the_newest_complete_step_in_seconds_with_its_requests() -> None:
    answer = durations(
        (STEP - 60, 10, 20, 30, 40), (STEP, 100, 300, 750.5, 2000), (AT - 30, 1, 2, 3, 4)
    )
    by_status = [
        {"statusCode": 200, "samples": [{"ts": STEP - 60, "value": 40}, {"ts": STEP, "value": 95}]},
        {"statusCode": 503, "samples": [{"ts": STEP, "value": 5}, {"ts": AT - 30, "value": 50}]},
    ]
    p50, p90, p95, p99 = read(answer, by_status)
    assert (p50.value, p90.value, p95.value, p99.value) == pytest.approx((0.1, 0.3, 0.7505, 2.0))
    assert p95.detail == {"requests": 100.0, "step_start": STEP, "step_s": 60.0}
    assert p95.reason == ""
    (only,) = read(answer, by_status, (Signal.LATENCY_P95,))
    assert only.signal is Signal.LATENCY_P95
    assert only.value == pytest.approx(0.7505)


# -- in the batched poll ------------------------------------------------------------------------


@pytest.fixture
async def railway(clock: FakeClock) -> AsyncIterator[tuple[RailwayEmulator, RailwayClient]]:
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    server = TestServer(emu.app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield (
            emu,
            RailwayClient(
                session,
                url=str(server.make_url("/graphql/v2")),
                token=SecretStr(TOKEN),
                clock=clock,
                budget=RequestBudget(clock, per_hour=1000, per_second=10),
            ),
        )
    await server.close()
    await emu.aclose()


async def test_one_poll_gives_each_service_its_quantiles(
    railway: tuple[RailwayEmulator, RailwayClient], clock: FakeClock
) -> None:
    emu, client = railway
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production").id
    rate = RailwayErrorRate(source="railway", step=60)
    targets = []
    for name, error_rate, latency_ms in (("web", None, 800.0), ("api", rate, 40.0)):
        service = emu.add_service(project.id, name).id
        emu.add_deployment(service, env, created_at=clock.time() - 3600)
        emu.set_traffic(service, env, 2, at=clock.time() - 600, latency_ms=latency_ms)
        quantiles = (Signal.LATENCY_P50, Signal.LATENCY_P99)
        targets.append(Target(name, service, env, error_rate, None, LATENCY, quantiles))
    poller = RailwayPoller(client, targets, clock=clock, interval=30)
    await poller.poll()
    assert len(emu.requests) == 1
    assert sorted(emu.requests[0].fields) == sorted(
        ["deployments"] * 2
        + ["httpDurationMetrics"] * 2
        + ["httpMetricsGroupedByStatus"] * 2  # web's own count, api's error rate's
        + ["platformStatus"]
    )
    web, api = poller.latest("web"), poller.latest("api")
    assert web is not None
    assert api is not None
    assert set(web.samples) == {Signal.LATENCY_P50, Signal.LATENCY_P99}
    assert web.samples[Signal.LATENCY_P50].value == pytest.approx(0.8)
    assert web.samples[Signal.LATENCY_P99].value == pytest.approx(0.8 * math.exp(0.5 * 2.3263479))
    assert web.samples[Signal.LATENCY_P50].detail["requests"] == pytest.approx(120)
    assert api.samples[Signal.LATENCY_P50].value == pytest.approx(0.04)
    assert api.samples[Signal.ERROR_RATE].value == 0.0

    source = RailwaySource(poller, "web", frozenset({Signal.LATENCY_P99}), max_age=60)
    (delivered,) = await source.collect(clock.time())
    assert delivered is web.samples[Signal.LATENCY_P99]
    await clock.advance(120)
    (stale,) = await source.collect(clock.time())
    assert stale.value is None
    assert stale.reason.startswith("no fresh Railway data")


class Answers:
    """A client whose every answer is ``data``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    async def execute(self, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        return self.data


async def test_unreadable_deployments_leave_the_latency_be(clock: FakeClock) -> None:
    step = int(clock.time() // 60 * 60) - 60
    target = Target("web", "s", "e", latency=LATENCY, quantiles=(Signal.LATENCY_P95,))
    data = {
        "d0": {"edges": "nope"},
        "p0": durations((step, 10, 20, 30, 40)),
        "n0": counts((step, 20)),
    }
    poller = RailwayPoller(cast(RailwayClient, Answers(data)), [target], clock=clock, interval=30)
    await poller.poll()
    web = poller.latest("web")
    assert web is not None
    assert web.problem is not None
    assert web.samples[Signal.LATENCY_P95].value == pytest.approx(0.03)
