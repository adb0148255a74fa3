"""The promql source against a real Prometheus (backfilled data) and small fake servers."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from monitor.clock import FakeClock
from monitor.errors import ProbeError
from monitor.model import Sample, Signal
from monitor.sources.promql import (
    MAX_BODY_BYTES,
    PromQLErrorRate,
    PromQLLatency,
    PromQLMemory,
    PromQLSource,
)
from tests.prometheus_fixture import PERIOD, Prometheus, prometheus_server  # noqa: F401

ENVIRON = {"PROM_TOKEN": "s3cret"}
ERROR_RATE = (
    'sum(rate(http_requests_total{job="web",code=~"5.."}[1m]))'
    ' / sum(rate(http_requests_total{job="web"}[1m]))'
)
TRAFFIC = 'sum(increase(http_requests_total{job="web"}[1m]))'
MEMORY = 'app_memory_bytes{job="web"} / app_memory_limit_bytes{job="web"}'


def error_rate(url: str, query: str = ERROR_RATE, **fields: Any) -> PromQLErrorRate:
    return PromQLErrorRate.model_validate(
        {"source": "promql", "url": url, "query": query, **fields}, context={"environ": ENVIRON}
    )


def memory(url: str, query: str = MEMORY, **fields: Any) -> PromQLMemory:
    return PromQLMemory.model_validate(
        {"source": "promql", "url": url, "query": query, **fields}, context={"environ": ENVIRON}
    )


def latency(url: str, **fields: Any) -> PromQLLatency:
    return PromQLLatency.model_validate(
        {"source": "promql", "url": url, **fields}, context={"environ": ENVIRON}
    )


P50, P95, P99 = Signal.LATENCY_P50, Signal.LATENCY_P95, Signal.LATENCY_P99


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def one(source: PromQLSource, at: float) -> Sample:
    (sample,) = await source.collect(at)
    assert sample.at == at
    return sample


async def rate_at(
    prometheus: Prometheus, session: aiohttp.ClientSession, at: float, query: str, **fields: Any
) -> Sample:
    config = error_rate(prometheus.url, query, **fields)
    return await one(PromQLSource(session, FakeClock(at), error_rate=config), at)


async def memory_at(
    prometheus: Prometheus, session: aiohttp.ClientSession, at: float, query: str
) -> Sample:
    source = PromQLSource(session, FakeClock(at), memory=memory(prometheus.url, query))
    return await one(source, at)


# -- against a real Prometheus ------------------------------------------------------------


async def test_error_rate_follows_the_backfilled_phases(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(prometheus.failing)
    source = PromQLSource(session, clock, error_rate=error_rate(prometheus.url))
    assert source.signals == frozenset({Signal.ERROR_RATE})

    failing = await one(source, clock.time())
    assert failing.signal is Signal.ERROR_RATE
    assert failing.value == pytest.approx(0.1)
    assert failing.detail == {"url": prometheus.url, "query": ERROR_RATE, "series": 1}

    await clock.advance(PERIOD)
    healthy = await one(source, clock.time())
    assert healthy.value == 0.0
    assert healthy.reason == ""

    await clock.advance(PERIOD)
    idle = await one(source, clock.time())
    assert idle.value is None
    assert idle.reason == "no traffic (the query is NaN)"
    assert idle.detail["series"] == 1


async def test_traffic_query_gates_the_error_rate(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    at = prometheus.failing
    # 10 requests per 15 s step: 40 in the last minute.
    enough = await rate_at(prometheus, session, at, ERROR_RATE, traffic_query=TRAFFIC)
    assert enough.value == pytest.approx(0.1)
    assert enough.detail["traffic"] == pytest.approx(40)

    few = await rate_at(prometheus, session, at, ERROR_RATE, traffic_query=TRAFFIC, min_traffic=100)
    assert few.value is None
    assert few.reason == "too little traffic: 40 < min_traffic 100"
    assert few.detail["traffic"] == pytest.approx(40)

    # NaN traffic is too little traffic, whatever min_traffic says.
    nan = await rate_at(prometheus, session, at, ERROR_RATE, traffic_query="0/0")
    assert nan.reason == "too little traffic: NaN < min_traffic 0"

    broken = await rate_at(prometheus, session, at, ERROR_RATE, traffic_query="sum(")
    assert broken.value is None
    assert broken.reason.startswith("traffic_query: bad_data: ")
    assert broken.detail["traffic"] is None


async def test_memory_ratio_alongside_error_rate(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(prometheus.healthy)
    source = PromQLSource(
        session,
        clock,
        error_rate=error_rate(prometheus.url, traffic_query=TRAFFIC),
        memory=memory(prometheus.url),
    )
    assert source.signals == frozenset({Signal.ERROR_RATE, Signal.MEMORY})
    rate, usage = await source.collect(clock.time())
    assert (rate.signal, rate.value) == (Signal.ERROR_RATE, 0.0)
    assert (usage.signal, usage.value) == (Signal.MEMORY, 0.5)
    assert usage.detail == {"url": prometheus.url, "query": MEMORY, "series": 1}


async def test_several_series_ask_for_aggregation(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    query = 'rate(http_requests_total{job="web"}[1m])'
    sample = await rate_at(prometheus, session, prometheus.failing, query)
    assert sample.value is None
    assert sample.reason == (
        "query returned 2 series; it must return one: wrap it in sum() or max()"
    )
    assert sample.detail["series"] == 2


async def test_no_series_names_the_query(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    sample = await memory_at(prometheus, session, prometheus.failing, "app_memory_typo_bytes")
    assert sample.value is None
    assert sample.reason == "query returned no series: app_memory_typo_bytes"
    assert sample.detail["series"] == 0

    # Before the backfilled data begins, the right query finds nothing either.
    early = await memory_at(prometheus, session, prometheus.start - 3600, MEMORY)
    assert early.reason == f"query returned no series: {MEMORY}"

    # A long query is named by its start, on one line.
    long = 'app_memory_bytes{\n  job="web",\n  instance="' + "x" * 100 + '"\n}'
    clipped = await memory_at(prometheus, session, prometheus.failing, long)
    excerpt = 'app_memory_bytes{ job="web", instance="' + "x" * 38 + "..."
    assert clipped.reason == f"query returned no series: {excerpt}"


async def test_bad_syntax_carries_prometheus_error(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    sample = await rate_at(prometheus, session, prometheus.failing, "sum(rate(x[1m])")
    assert sample.value is None
    assert sample.reason.startswith('bad_data: invalid parameter "query": ')
    assert "parse error" in sample.reason
    assert sample.detail["series"] is None


async def test_error_rate_above_one_is_a_query_that_forgot_to_divide(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    sample = await rate_at(prometheus, session, prometheus.failing, TRAFFIC)
    assert sample.value is None
    assert sample.reason == (
        "the query returned 40, outside the error_rate range 0..1: "
        "it must divide the errors by the total"
    )


@pytest.mark.parametrize(
    ("query", "value"),
    [("0.25", 0.25), ('scalar(sum(http_requests_total{job="web",code="500"})) / 80', 0.25)],
)
async def test_scalar_results(
    prometheus: Prometheus, session: aiohttp.ClientSession, query: str, value: float
) -> None:
    # 20 errors counted by the middle of the failing phase.
    sample = await rate_at(prometheus, session, prometheus.failing, query)
    assert sample.value == pytest.approx(value)
    assert sample.detail["series"] is None


@pytest.mark.parametrize(
    ("signal", "query", "reason"),
    [
        ("memory", "1/0", "no traffic (the query is +Inf)"),
        ("memory", "-1/0", "no traffic (the query is -Inf)"),
        ("memory", "-0.5", "the query returned -0.5, outside the memory range 0..1000"),
        ("memory", 'app_memory_bytes{job="web"}[1m]', "query returned a matrix; "),
        ("error_rate", '"text"', "query returned a string; "),
    ],
)
async def test_values_that_are_not_a_measurement(
    prometheus: Prometheus,
    session: aiohttp.ClientSession,
    signal: str,
    query: str,
    reason: str,
) -> None:
    at = prometheus.failing
    if signal == "memory":
        sample = await memory_at(prometheus, session, at, query)
    else:
        sample = await rate_at(prometheus, session, at, query)
    assert sample.value is None
    assert sample.reason.startswith(reason)


# -- against fake servers -----------------------------------------------------------------


class FakePrometheus:
    """An /api/v1/query endpoint whose answer the test sets; records what it was asked."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b'{"status":"success","data":{"resultType":"scalar","result":[0,"0.5"]}}'
        self.by_query: dict[str, bytes] = {}
        """Answers to particular queries (any other gets ``body``)."""
        self.hang = False
        self.requests: list[web.Request] = []
        self.gather = 0
        """When set, answer only once this many requests are in flight together."""
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        if self.gather and len(self.requests) >= self.gather:
            self.arrived.set()
        if self.hang:
            await self.release.wait()
        if self.gather:
            await self.arrived.wait()
        body = self.by_query.get(request.query.get("query", ""), self.body)
        return web.Response(body=body, status=self.status, content_type="application/json")


@pytest.fixture
async def fake() -> AsyncIterator[FakePrometheus]:
    server = FakePrometheus()
    app = web.Application()
    app.router.add_get("/api/v1/query", server.handle)
    app.router.add_get("/prom/api/v1/query", server.handle)
    async with TestServer(app, host="127.0.0.1") as running:
        server.url = str(running.make_url("")).rstrip("/")
        yield server
        server.release.set()
        server.arrived.set()


async def test_request_carries_query_time_and_bearer_token(
    fake: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    config = memory(fake.url + "/prom/", "up", bearer_token="${PROM_TOKEN}")
    source = PromQLSource(session, FakeClock(), memory=config)
    sample = await one(source, 1_700_000_123.5)
    assert sample.value == 0.5
    (request,) = fake.requests
    assert request.path == "/prom/api/v1/query"
    assert dict(request.query) == {"query": "up", "time": "1700000123.500"}
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(config)


async def test_credentials_in_the_url_stay_out_of_the_detail(
    fake: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    url = fake.url.replace("http://", "http://reader:pw@")
    sample = await one(PromQLSource(session, FakeClock(), memory=memory(url)), 1.0)
    assert sample.detail["url"] == fake.url.replace("http://", "http://reader:***@")
    assert fake.requests[0].headers["Authorization"].startswith("Basic ")


async def test_queries_run_together(fake: FakePrometheus, session: aiohttp.ClientSession) -> None:
    fake.gather = 3  # run one after another, the first would wait for its timeout
    source = PromQLSource(
        session,
        FakeClock(),
        error_rate=error_rate(fake.url, "0.5", traffic_query="9", timeout="5s"),
        memory=memory(fake.url, timeout="5s"),
    )
    rate, usage = await source.collect(1.0)
    assert (rate.value, rate.detail["traffic"], usage.value) == (0.5, 0.5, 0.5)
    assert len(fake.requests) == 3


async def test_a_hanging_prometheus_times_out(
    fake: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fake.hang = True
    config = error_rate(fake.url, timeout="50ms")
    sample = await one(PromQLSource(session, FakeClock(), error_rate=config), 1.0)
    assert sample.value is None
    assert sample.reason == "timeout after 50ms"


async def test_refused_connection(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = memory(f"http://127.0.0.1:{port}")
    sample = await one(PromQLSource(session, FakeClock(), memory=config), 1.0)
    assert sample.value is None
    assert sample.reason == f"connection refused: 127.0.0.1:{port}"
    assert sample.detail == {"url": f"http://127.0.0.1:{port}", "query": MEMORY, "series": None}


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (502, b"<html>Bad Gateway</html>", "status 502 (expected 2xx)"),
        (200, b"<html>login</html>", "response is not JSON ("),
        (200, b"\xff\xfe", "response is not JSON ("),
        (200, b"[1, 2]", "unexpected response: [1, 2]"),
        (404, b'{"message": "not here"}', "status 404 (expected 2xx)"),
        (200, b'{"status": "success"}', 'unexpected response: {"status": "success"}'),
        (200, b'{"status":"success","data":{"resultType":"vector","result":[{}]}}', "unexpected"),
        (
            200,
            b'{"status":"success","data":{"resultType":"scalar","result":[0,"x"]}}',
            "the query's value 'x' is not a number",
        ),
        (503, b'{"status":"error","errorType":"timeout","error":"query timed out"}', "timeout: "),
        (422, b'{"status":"error","error":"many-to-many matching"}', "error: many-to-many"),
        (200, b"{" + b" " * MAX_BODY_BYTES + b"}", f"response larger than {MAX_BODY_BYTES} bytes"),
    ],
)
async def test_bad_answers_are_unknown(
    fake: FakePrometheus,
    session: aiohttp.ClientSession,
    status: int,
    body: bytes,
    reason: str,
) -> None:
    fake.status, fake.body = status, body
    sample = await one(PromQLSource(session, FakeClock(), memory=memory(fake.url)), 1.0)
    assert sample.value is None
    assert sample.reason.startswith(reason)
    assert len(sample.reason) < 300


async def test_long_bodies_are_clipped_in_reasons(
    fake: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fake.body = b'{"status": "success", "data": "' + b"x" * 200 + b'"}'
    sample = await one(PromQLSource(session, FakeClock(), memory=memory(fake.url)), 1.0)
    assert sample.reason == "unexpected response: " + fake.body[:77].decode() + "..."


async def test_needs_a_signal_and_an_open_session(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ProbeError, match="needs error_rate, memory or latency"):
        PromQLSource(session, FakeClock())
    closed = aiohttp.ClientSession()
    await closed.close()
    source = PromQLSource(closed, FakeClock(), memory=memory("http://127.0.0.1:9"))
    with pytest.raises(ProbeError, match="session is closed"):
        await source.collect(1.0)


# -- config -------------------------------------------------------------------------------


def test_defaults() -> None:
    config = error_rate("http://prometheus:9090")
    assert (config.timeout, config.bearer_token, config.traffic_query) == (5.0, None, None)
    assert config.min_traffic == 0.0
    token = memory("http://prometheus:9090", bearer_token="${PROM_TOKEN}").bearer_token
    assert token is not None
    assert token.get_secret_value() == "s3cret"


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (PromQLMemory, {"url": "prometheus:9090"}, "http:// or https:// URL"),
        (PromQLMemory, {"url": "ftp://prometheus"}, "http:// or https:// URL"),
        (PromQLMemory, {"query": ""}, "query must not be empty"),
        (PromQLMemory, {"query": "  \n"}, "query must not be empty"),
        (PromQLMemory, {"bearer_token": "s3cret"}, "secrets come only from the environment"),
        (PromQLMemory, {"headers": {"X": "y"}}, "Extra inputs are not permitted"),
        (PromQLMemory, {"min_requests": 10}, "Extra inputs are not permitted"),
        (PromQLMemory, {"source": "exposition"}, "Input should be 'promql'"),
        (PromQLMemory, {"timeout": "0s"}, "timeout must be more than 0s"),
        (
            PromQLMemory,
            {"url": "http://u:p@prometheus", "bearer_token": "${PROM_TOKEN}"},
            "either credentials in url or bearer_token",
        ),
        (PromQLErrorRate, {"traffic_query": " "}, "traffic_query must not be empty"),
        (PromQLErrorRate, {"min_traffic": 10}, "min_traffic needs traffic_query"),
        (PromQLErrorRate, {"traffic_query": "x", "min_traffic": -1}, "greater than or equal"),
    ],
)
def test_config_errors(
    model: type[PromQLMemory | PromQLErrorRate], fields: dict[str, Any], message: str
) -> None:
    document = {"source": "promql", "url": "http://prometheus:9090", "query": "up", **fields}
    with pytest.raises(ValidationError, match=message):
        model.model_validate(document, context={"environ": ENVIRON})


# -- latency --------------------------------------------------------------------------------

BUCKETS = 'http_request_duration_seconds_bucket{job="web"}[2m]'
COUNT = 'http_request_duration_seconds_count{job="web"}[2m]'


async def ask(session: aiohttp.ClientSession, url: str, query: str, at: float) -> float:
    """Prometheus' own answer to ``query`` at ``at``: one series' value."""
    params = {"query": query, "time": str(at)}
    async with session.get(f"{url}/api/v1/query", params=params) as response:
        body = await response.json()
    assert body["status"] == "success", body
    (series,) = body["data"]["result"]
    return float(series["value"][1])


@pytest.mark.parametrize("phase", ["failing", "healthy"])
async def test_latency_is_prometheus_own_histogram_quantile(
    prometheus: Prometheus, session: aiohttp.ClientSession, phase: str
) -> None:
    at = getattr(prometheus, phase)
    config = latency(prometheus.url, selector='job="web"')
    source = PromQLSource(session, FakeClock(at), latency=config, quantiles=[P99, P50, P95])
    assert source.signals == frozenset({P50, P95, P99})
    samples = await source.collect(at)
    assert [s.signal for s in samples] == [P50, P95, P99]
    requests = await ask(session, prometheus.url, f"sum(increase({COUNT}))", at)
    assert requests == pytest.approx(80)  # 10 requests a step, 8 steps in 2m
    for sample in samples:
        q = sample.signal.quantile
        query = f"histogram_quantile({q}, sum by (le) (rate({BUCKETS})))"
        assert sample.value == await ask(session, prometheus.url, query, at), sample.reason
        assert sample.detail == {
            "url": prometheus.url,
            "query": query,
            "series": 1,
            "requests_query": f"sum(increase({COUNT}))",
            "requests": requests,
            "span_s": 120.0,
        }
    p50, p95, p99 = (s.value for s in samples)
    if phase == "failing":  # 9.5 of 10 a step: half way into the (1s, 2.5s] bucket
        assert (p50, p95, p99) == (pytest.approx(0.1), pytest.approx(1.75), pytest.approx(2.35))
    else:  # 6 of 10 a step up to 50ms, 9 up to 100ms
        assert (p50, p95, p99) == (
            pytest.approx(0.05 * 5 / 6),
            pytest.approx(0.175),
            pytest.approx(0.235),
        )


async def test_latency_without_traffic_is_unknown(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    at = prometheus.idle
    config = latency(prometheus.url, selector='{job="web"}', range="1m")
    source = PromQLSource(session, FakeClock(at), latency=config, quantiles=[P95, P99])
    for sample in await source.collect(at):
        assert sample.value is None
        assert sample.reason == "too little traffic: 0 requests < min_requests 10"
        assert sample.detail["requests"] == 0
        assert sample.detail["span_s"] == 60.0
        assert "[1m]" in sample.detail["query"]

    # With the count written out, histogram_quantile's own NaN says there was nothing.
    config = latency(
        prometheus.url,
        query=f"histogram_quantile({{quantile}}, sum by (le) (rate({BUCKETS})))",
        requests_query="vector(100)",
    )
    (nan,) = await PromQLSource(session, FakeClock(at), latency=config).collect(at)
    assert nan.value is None
    assert nan.reason == "no observations in the histogram's buckets (the query is NaN)"
    assert nan.detail["query"] == f"histogram_quantile(0.95, sum by (le) (rate({BUCKETS})))"


async def test_latency_with_written_queries(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    at = prometheus.failing
    written = f"histogram_quantile({{quantile}}, sum by (le) (rate({BUCKETS})))"
    config = latency(prometheus.url, query=written, requests_query=f"sum(increase({COUNT}))")
    source = PromQLSource(session, FakeClock(at), latency=config, quantiles=[P50, P95])
    p50, p95 = await source.collect(at)
    assert (p50.value, p95.value) == (pytest.approx(0.1), pytest.approx(1.75))
    assert p95.detail["query"] == f"histogram_quantile(0.95, sum by (le) (rate({BUCKETS})))"

    # One quantile needs no {quantile}: the query says which.
    fixed = f"histogram_quantile(0.9, sum by (le) (rate({BUCKETS})))"
    config = latency(prometheus.url, query=fixed, requests_query=f"sum(increase({COUNT}))")
    (p90,) = await PromQLSource(
        session, FakeClock(at), latency=config, quantiles=[Signal.LATENCY_P90]
    ).collect(at)
    assert p90.value == pytest.approx(0.5)
    assert p90.detail["query"] == fixed
    with pytest.raises(
        ProbeError, match=re.escape("without {quantile} can serve only one quantile")
    ):
        PromQLSource(session, FakeClock(at), latency=config, quantiles=[P50, P95])


async def test_latency_of_no_series_names_the_query(
    prometheus: Prometheus, session: aiohttp.ClientSession
) -> None:
    at = prometheus.failing
    config = latency(prometheus.url, selector='job="typo"')
    (sample,) = await PromQLSource(session, FakeClock(at), latency=config).collect(at)
    assert sample.value is None
    count = 'sum(increase(http_request_duration_seconds_count{job="typo"}[2m]))'
    assert sample.reason == f"requests_query: query returned no series: {count}"
    assert sample.detail["requests"] is None

    # Without sum by (le) each label set is its own quantile: one series is wanted.
    config = latency(
        prometheus.url,
        query="histogram_quantile({quantile}, rate(http_request_duration_seconds_bucket[2m]))"
        " + on() group_left vector(0) or vector(1)",
        requests_query="vector(100)",
    )
    (several,) = await PromQLSource(session, FakeClock(at), latency=config).collect(at)
    assert several.reason == (
        "query returned 2 series; it must return one: wrap it in sum() or max()"
    )


def scalar(value: str) -> bytes:
    return (
        b'{"status":"success","data":{"resultType":"scalar","result":[0,"'
        + value.encode()
        + b'"]}}'
    )


async def test_latency_queries_run_together(
    fake: FakePrometheus, session: aiohttp.ClientSession
) -> None:
    fake.gather = 4  # the requests count and three quantiles
    config = latency(fake.url, timeout="5s", selector='job="web"')
    fake.by_query = {
        config.count_query: scalar("42"),
        config.quantile_query(0.5): scalar("0.02"),
        config.quantile_query(0.95): scalar("+Inf"),
        config.quantile_query(0.99): scalar("-0.5"),
    }
    source = PromQLSource(session, FakeClock(), latency=config, quantiles=[P50, P95, P99])
    p50, p95, p99 = await source.collect(1.0)
    assert len(fake.requests) == 4
    assert (p50.value, p50.detail["requests"], p50.detail["series"]) == (0.02, 42.0, None)
    assert p95.value is None
    assert p95.reason == "the query returned +Inf: not a latency in seconds"
    assert p99.value is None
    assert p99.reason == "latency_p99 would be -0.5, outside 0..86400"


def test_latency_defaults_and_queries() -> None:
    config = latency("http://prometheus:9090")
    assert (config.metric, config.selector, config.range, config.min_requests) == (
        "http_request_duration_seconds",
        "",
        120.0,
        10,
    )
    assert config.quantile_query(0.99) == (
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[2m])))"
    )
    assert config.count_query == "sum(increase(http_request_duration_seconds_count[2m]))"
    odd = latency("http://p", metric="rpc_seconds", selector=' { a="1", b!~"x|y" } ', range="90s")
    assert odd.quantile_query(0.5) == (
        'histogram_quantile(0.5, sum by (le) (rate(rpc_seconds_bucket{a="1", b!~"x|y"}[90s])))'
    )
    assert latency("http://p", range="1500ms").count_query.endswith("[1500ms]))")
    braces = latency("http://p", selector='path=~"/v[0-9]{1,2}/.*"')
    assert braces.count_query.endswith('_count{path=~"/v[0-9]{1,2}/.*"}[2m]))')
    assert latency("http://p", range="1h").count_query.endswith("[1h]))")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": "histogram_quantile({quantile}, x)"}, "query needs requests_query too"),
        ({"query": " ", "requests_query": "x"}, "query must not be empty"),
        ({"requests_query": ""}, "requests_query must not be empty"),
        (
            {"query": "q", "requests_query": "r", "metric": "m", "range": "1m"},
            "metric and range build the default query: with query, write them into it",
        ),
        ({"metric": "http-latency"}, "is not a Prometheus metric name"),
        ({"range": "0s"}, "at least 1s"),
        ({"range": 120}, "durations are strings with a unit"),
        ({"min_requests": 0}, "greater than or equal to 1"),
        ({"traffic_query": "x"}, "Extra inputs are not permitted"),
        ({"bearer_token": "s3cret"}, "secrets come only from the environment"),
    ],
)
def test_latency_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        latency("http://prometheus:9090", **fields)
