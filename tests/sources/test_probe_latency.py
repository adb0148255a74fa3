"""Latency from the health probe's response times: FakeClock time, real servers on 127.0.0.1."""

from __future__ import annotations

import socket
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.model import LATENCY_SIGNALS, Sample, Signal
from monitor.planning import build_plan
from monitor.rules import builtin_rules_path
from monitor.sources.health import HealthCheck, HealthSource
from monitor.sources.probe_latency import HealthLatency, quantile
from monitor.sources.registry import SourceContext, build_sources

P50, P95, P99 = Signal.LATENCY_P50, Signal.LATENCY_P95, Signal.LATENCY_P99
STEP = 15.0


class Timed:
    """A health endpoint that takes, by the fake clock, what the test says each answer takes.

    Each planned step is seconds to take (then 200), ``(seconds, status)``, or ``"drop"``: no
    HTTP answer, only a line of garbage before the connection is closed.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.plan: list[float | tuple[float, int] | str] = []

    async def handle(self, request: web.Request) -> web.Response:
        step = self.plan.pop(0)
        if step == "drop":
            # Not a bare close: aiohttp's client would retry that on a fresh connection.
            assert request.transport is not None
            request.transport.write(b"not http\r\n\r\n")
            request.transport.close()
            return web.Response()
        seconds, status = step if isinstance(step, tuple) else (step, 200)
        assert isinstance(seconds, float)
        await self.clock.advance(seconds)
        return web.Response(status=int(status), text="ok")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def timed(clock: FakeClock) -> AsyncIterator[tuple[Timed, str]]:
    server = Timed(clock)
    app = web.Application()
    app.router.add_get("/health", server.handle)
    async with TestServer(app, host="127.0.0.1") as running:
        yield server, f"http://127.0.0.1:{running.port}/health"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def config(**fields: Any) -> HealthLatency:
    return HealthLatency.model_validate({"source": "health", **fields}, context={"environ": {}})


async def probes(
    source: HealthSource, clock: FakeClock, count: int
) -> list[tuple[Sample, list[Sample]]]:
    """``count`` collects ``STEP`` apart: each one's health sample and latency samples."""
    out = []
    for i in range(count):
        if i:
            await clock.advance(STEP)
        health, *latency = await source.collect(clock.time())
        assert health.signal is Signal.HEALTH
        out.append((health, latency))
    return out


async def test_quantiles_of_the_answered_probes(
    timed: tuple[Timed, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = timed
    server.plan = [0.3, 0.1, 0.5, 0.2, (0.4, 503), 0.6]
    source = HealthSource(
        HealthCheck(url=url), session, clock, latency=config(), quantiles=[P95, P50]
    )
    assert source.signals == frozenset({Signal.HEALTH, P50, P95})
    seen = await probes(source, clock, 6)

    # Four answers are too few for min_probes 5: each quantile is UNKNOWN, saying so.
    health, (p50, p95) = seen[3]
    assert health.detail["latency_ms"] == 200.0
    assert (p50.signal, p95.signal) == (P50, P95)
    for sample in (p50, p95):
        assert sample.value is None
        assert sample.reason == "too few answered probes: 4 in the last 5m < min_probes 5"
        assert sample.detail == {"requests": 4, "unanswered": 0, "span_s": 3 * STEP + 1.1}

    # The fifth answer is a 503: failing health, but it took 0.4s all the same.
    health, (p50, p95) = seen[4]
    assert (health.value, health.detail["status"]) == (0.0, 503)
    # Linear interpolation between order statistics: 0.1 0.2 0.3 0.4 0.5.
    assert p50.value == pytest.approx(0.3)
    assert p95.value == pytest.approx(0.4 + 0.8 * 0.1)
    assert p95.detail == {"requests": 5, "unanswered": 0, "span_s": 4 * STEP + 1.5}
    assert p95.window_start == pytest.approx(p95.at - (4 * STEP + 1.5))

    _, (p50, p95) = seen[5]
    assert (p50.value, p95.value) == (pytest.approx(0.35), pytest.approx(0.575))
    assert p50.detail["requests"] == 6


async def test_probes_without_an_answer_are_left_out_and_counted(
    timed: tuple[Timed, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = timed
    server.plan = [0.2, "drop", 0.4, "drop", 0.8]
    source = HealthSource(HealthCheck(url=url), session, clock, latency=config(min_probes=3))
    seen = await probes(source, clock, 5)

    health, (p95,) = seen[3]
    assert health.reason.startswith("request failed: ")
    assert health.detail["status"] is None
    assert p95.value is None
    assert p95.reason == (
        "too few answered probes: 2 in the last 5m < min_probes 3 (2 got no answer)"
    )
    assert (p95.detail["requests"], p95.detail["unanswered"]) == (2, 2)

    _, (p95,) = seen[4]
    assert p95.value == pytest.approx(0.4 + 0.9 * 0.4)  # of 0.2, 0.4, 0.8 alone
    assert (p95.detail["requests"], p95.detail["unanswered"]) == (3, 2)


async def test_a_refused_probe_has_no_response_time(
    clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    check = HealthCheck(url=f"http://127.0.0.1:{port}/health")
    source = HealthSource(check, session, clock, latency=config(min_probes=1))
    health, p95 = await source.collect(clock.time())
    assert health.reason == f"connection refused: 127.0.0.1:{port}"
    assert p95.value is None
    assert p95.reason == (
        "too few answered probes: 0 in the last 5m < min_probes 1 (1 got no answer)"
    )
    assert p95.detail == {"requests": 0, "unanswered": 1, "span_s": 0.0}


async def test_the_window_forgets_older_probes(
    timed: tuple[Timed, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = timed
    server.plan = [5.0, 0.1, 0.2]
    source = HealthSource(
        HealthCheck(url=url), session, clock, latency=config(window="1m", min_probes=1)
    )
    ((_, (first,)),) = await probes(source, clock, 1)
    assert (first.value, first.detail["span_s"]) == (5.0, 5.0)
    await clock.advance(50.0)  # the slow probe started 55s ago: still in the window
    _, kept = await source.collect(clock.time())
    assert (kept.value, kept.detail["requests"]) == (pytest.approx(5.0 - 0.05 * 4.9), 2)
    await clock.advance(10.0)  # now 65.1s after it started: out
    _, fresh = await source.collect(clock.time())
    assert (fresh.value, fresh.detail["requests"]) == (pytest.approx(0.1 + 0.95 * 0.1), 2)
    assert fresh.detail["span_s"] == pytest.approx(10.3)


async def test_without_latency_the_source_only_probes(
    timed: tuple[Timed, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = timed
    server.plan = [0.25]
    source = HealthSource(HealthCheck(url=url), session, clock)
    assert source.signals == frozenset({Signal.HEALTH})
    (health,) = await source.collect(clock.time())
    assert health.detail["latency_ms"] == 250.0


@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=2, max_size=50),
    st.sampled_from(LATENCY_SIGNALS),
)
def test_quantile_is_python_inclusive_method(times: list[float], signal: Signal) -> None:
    # statistics' "inclusive" method is numpy's default linear interpolation (type 7).
    assert signal.quantile is not None
    percent = round(signal.quantile * 100)
    expected = statistics.quantiles(times, n=100, method="inclusive")[percent - 1]
    assert quantile(sorted(times), signal.quantile) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("ordered", "q", "value"),
    [([0.7], 0.99, 0.7), ([1.0, 2.0], 0.5, 1.5), ([1.0, 2.0, 3.0, 10.0], 0.9, 7.9)],
)
def test_quantile_table(ordered: list[float], q: float, value: float) -> None:
    assert quantile(ordered, q) == pytest.approx(value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window": "0s"}, "at least 1s"),
        ({"window": "2d"}, "at most 1d"),
        ({"window": 300}, "durations are strings with a unit"),
        ({"min_probes": 0}, "greater than or equal to 1"),
        ({"url": "http://x/"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**fields)


def test_defaults() -> None:
    latency = config()
    assert (latency.window, latency.min_probes) == (300.0, 5)
    assert latency.too_short(15.0) == ""
    assert latency.too_short(61.0) == (
        "window 5m holds about 4 probes at the service's interval 1m1s, fewer than "
        "min_probes 5: the quantiles would never be known"
    )


RULES = """
[[rules]]
name = "latency-p95"
signal = "latency_p95"
op = ">"
threshold = "500ms"
for = "2m"

[[rules]]
name = "latency-p99"
signal = "latency_p99"
op = ">"
threshold = "2s"
for = "2m"
"""


async def test_registry_gives_latency_from_health_to_the_health_source(
    tmp_path: Path, timed: tuple[Timed, str], clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    server, url = timed
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "railguard.toml").write_text(
        f'rule_files = ["{builtin_rules_path()}", "rules.toml"]\n'
        '[tiers.preview]\nrules = ["latency-p95", "latency-p99"]\n'
        f'[[services]]\nname = "web"\ntier = "preview"\nhealth_url = "{url}"\n'
        'latency = { source = "health", min_probes = 1 }\n'
    )
    plan = build_plan(tmp_path / "railguard.toml", load_environment({}), {})
    ((name, source),) = build_sources(SourceContext(plan.services[0], session, clock, None))
    assert name == "health"
    assert source.signals == frozenset({Signal.HEALTH, P95, P99})
    server.plan = [0.125]
    health, p95, p99 = await source.collect(clock.time())
    assert (health.value, p95.value, p99.value) == (1.0, 0.125, 0.125)
