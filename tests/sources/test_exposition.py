"""The exposition source against real HTTP servers: counter deltas, memory ratios, failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from monitor.clock import FakeClock
from monitor.errors import ProbeError
from monitor.model import Sample, Signal
from monitor.sandbox.sample_app import create_app
from monitor.sources.exposition import THREAD_PARSE_BYTES, ExpositionSource
from monitor.sources.exposition_config import ExpositionErrorRate, ExpositionMemory, parse_size

MIB = 1024 * 1024
CTX = {"environ": {}}


class Exposer:
    """A /metrics endpoint whose answer the test sets; counts the requests it serves."""

    def __init__(self) -> None:
        self.body: str | bytes = ""
        self.status = 200
        self.hang = False
        self.chunked = False
        self.requests = 0
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.hang:
            await self.release.wait()
        body = self.body.encode() if isinstance(self.body, str) else self.body
        if not self.chunked:
            return web.Response(body=body, status=self.status, content_type="text/plain")
        response = web.StreamResponse(status=self.status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 4096):
            await response.write(body[start : start + 4096])
        await response.write_eof()
        return response


async def _serve(exposer: Exposer) -> AsyncIterator[Exposer]:
    app = web.Application()
    app.router.add_get("/metrics", exposer.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        exposer.url = str(server.make_url("/metrics"))
        yield exposer
        exposer.release.set()


@pytest.fixture
async def exposer() -> AsyncIterator[Exposer]:
    async for served in _serve(Exposer()):
        yield served


@pytest.fixture
async def other() -> AsyncIterator[Exposer]:
    async for served in _serve(Exposer()):
        yield served


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def error_rate(url: str, **fields: Any) -> ExpositionErrorRate:
    return ExpositionErrorRate.model_validate(
        {"source": "exposition", "url": url, **fields}, context=CTX
    )


def memory(url: str, **fields: Any) -> ExpositionMemory:
    return ExpositionMemory.model_validate(
        {"source": "exposition", "url": url, **fields}, context=CTX
    )


def counter(codes: dict[str, float], name: str = "http_requests", typed: bool = True) -> str:
    """An exposition of a requests counter by status code, as prometheus_client writes it."""
    lines = [f"# TYPE {name} counter"] if typed else []
    total = name if not typed or name.endswith("_total") else name + "_total"
    lines += [f'{total}{{code="{code}"}} {value}' for code, value in codes.items()]
    return "\n".join(lines) + "\n"


GAUGES = """# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 268435456.0
# TYPE app_memory_limit_bytes gauge
app_memory_limit_bytes 536870912.0
"""


@pytest.fixture
def rate_source(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> Callable[..., ExpositionSource]:
    def make(**fields: Any) -> ExpositionSource:
        return ExpositionSource(session, clock, error_rate=error_rate(exposer.url, **fields))

    return make


async def step(source: ExpositionSource, clock: FakeClock, seconds: float = 15.0) -> Sample:
    await clock.advance(seconds)
    (sample,) = await source.collect(clock.time())
    return sample


# -- error rate ---------------------------------------------------------------------------


async def test_rate_across_two_scrapes(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    assert source.signals == frozenset({Signal.ERROR_RATE})
    exposer.body = counter({"200": 40, "500": 5})
    first = await step(source, clock)
    assert first.value is None
    assert first.reason == "first scrape: no rate yet"
    assert first.at == clock.time()

    exposer.body = counter({"200": 130, "500": 15})
    sample = await step(source, clock)
    assert sample.signal is Signal.ERROR_RATE
    assert sample.value == pytest.approx(0.1)
    assert sample.detail == {"url": exposer.url, "requests": 100, "errors": 10, "span_s": 15.0}


async def test_below_min_requests_is_unknown(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    exposer.body = counter({"200": 10, "500": 0})
    await step(source, clock)
    exposer.body = counter({"200": 11, "500": 2})  # all errors, but only 3 requests
    sample = await step(source, clock)
    assert sample.value is None
    assert sample.reason == "too little traffic: 3 requests < min_requests 10"
    assert sample.detail["requests"] == 3

    exposer.body = counter({"200": 29, "500": 4})  # measured from the previous step
    assert (await step(source, clock)).value == pytest.approx(0.1)


async def test_counter_reset_is_unknown_then_ok(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    exposer.body = counter({"200": 500, "500": 20})
    await step(source, clock)
    exposer.body = counter({"200": 30, "500": 20})  # a series went down: a restart
    reset = await step(source, clock)
    assert reset.value is None
    assert reset.reason == 'counter reset: http_requests_total{code="200"} went down'

    # The values after the reset are the new baseline.
    exposer.body = counter({"200": 80, "500": 70})
    assert (await step(source, clock)).value == pytest.approx(0.5)


async def test_a_missing_series_beside_a_present_one_is_unknown_until_it_returns(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    exposer.body = counter({"200": 500, "500": 20})
    await step(source, clock)
    # Computed from what remains, this would be 5xx / 5xx = 100%: it must be UNKNOWN, and
    # stay so while the series is missing (a garbled name stays garbled).
    exposer.body = counter({"500": 30})
    for _ in range(3):
        missing = await step(source, clock)
        assert missing.value is None
        assert missing.reason == (
            'a missing series beside a present one: http_requests_total{code="200"} is gone'
        )
    # Back: measured from the last scrape that had it, over the whole span.
    exposer.body = counter({"200": 590, "500": 30})
    sample = await step(source, clock)
    assert sample.value == pytest.approx(0.1)
    assert sample.detail["span_s"] == 60.0
    # A restart (a counter went down) drops the series it no longer has.
    exposer.body = counter({"500": 1})
    assert (await step(source, clock)).reason.startswith("counter reset")
    exposer.body = counter({"200": 90, "500": 11})
    assert (await step(source, clock)).value == pytest.approx(0.1)


async def test_new_series_counts_from_zero(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    exposer.body = counter({"200": 100})
    await step(source, clock)
    # prometheus_client creates a labelled child at its first increment.
    exposer.body = counter({"200": 180, "503": 20})
    sample = await step(source, clock)
    assert sample.value == pytest.approx(0.2)
    assert sample.detail["errors"] == 20


async def test_label_filter(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    def body(api_ok: int, api_err: int, other_err: int) -> str:
        return (
            "# TYPE http_requests counter\n"
            f'http_requests_total{{code="200",handler="/api"}} {api_ok}\n'
            f'http_requests_total{{code="500",handler="/api"}} {api_err}\n'
            f'http_requests_total{{code="500",handler="/admin"}} {other_err}\n'
        )

    source = rate_source(labels={"handler": "/api"})
    exposer.body = body(0, 0, 0)
    await step(source, clock)
    exposer.body = body(90, 10, 1000)
    sample = await step(source, clock)
    assert sample.value == pytest.approx(0.1)
    assert sample.detail["requests"] == 100

    exposer.body = counter({"200": 1})  # no series carries handler="/api"
    missing = await step(source, clock)
    assert missing.value is None
    assert missing.reason == 'no http_requests_total{handler="/api"} series in the exposition'


@pytest.mark.parametrize("metric", ["http_requests", "http_requests_total"])
@pytest.mark.parametrize(
    ("exposed", "typed"),
    [("http_requests", True), ("http_requests_total", False), ("http_requests", False)],
)
async def test_total_suffix_either_way(
    exposer: Exposer,
    rate_source: Callable[..., ExpositionSource],
    clock: FakeClock,
    metric: str,
    exposed: str,
    typed: bool,
) -> None:
    source = rate_source(metric=metric)
    exposer.body = counter({"200": 0, "500": 0}, name=exposed, typed=typed)
    await step(source, clock)
    exposer.body = counter({"200": 75, "500": 25}, name=exposed, typed=typed)
    assert (await step(source, clock)).value == pytest.approx(0.25)


async def test_created_samples_are_not_requests(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    created = 'http_requests_created{code="200"} 1.7e9\n'
    exposer.body = counter({"200": 0, "500": 0}) + created
    await step(source, clock)
    exposer.body = counter({"200": 40, "500": 10}) + created
    assert (await step(source, clock)).value == pytest.approx(0.2)


async def test_status_class_values(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    def body(ok: int, client: int, server: int) -> str:
        return (
            "# TYPE http_responses counter\n"
            f'http_responses_total{{status="2xx"}} {ok}\n'
            f'http_responses_total{{status="4xx"}} {client}\n'
            f'http_responses_total{{status="5xx"}} {server}\n'
            "http_responses_total 7\n"  # no status label: counts as a request, not an error
        )

    source = rate_source(metric="http_responses_total", status_label="status")
    exposer.body = body(0, 0, 0)
    await step(source, clock)
    exposer.body = body(50, 30, 20)
    sample = await step(source, clock)
    assert sample.value == pytest.approx(0.2)
    assert sample.detail["errors"] == 20


async def test_missing_counter_keeps_the_baseline(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = rate_source()
    exposer.body = "# TYPE other counter\nother_total 3\n"
    first = await step(source, clock)
    assert first.reason == "no http_requests_total series in the exposition"
    exposer.body = counter({"200": 10})
    assert (await step(source, clock)).reason == "first scrape: no rate yet"
    exposer.body = "other_total 4\n"
    assert (await step(source, clock)).reason.startswith("no http_requests_total series")
    exposer.body = counter({"200": 45, "500": 5})
    sample = await step(source, clock)
    assert sample.value == pytest.approx(0.125)
    assert sample.detail["span_s"] == 30.0


async def test_a_non_finite_series_is_unknown_not_absent(
    exposer: Exposer, rate_source: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    # Dropping it would leave 5xx / 5xx: the garbage names the series instead.
    source = rate_source()
    exposer.body = 'http_requests_total{code="200"} NaN\n'
    sample = await step(source, clock)
    assert sample.reason == 'http_requests_total{code="200"} is NaN'


# -- memory -------------------------------------------------------------------------------


async def test_memory_with_fixed_limit(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    source = ExpositionSource(session, clock, memory=memory(exposer.url, limit="1GiB"))
    assert source.signals == frozenset({Signal.MEMORY})
    exposer.body = GAUGES
    (sample,) = await source.collect(clock.time())
    assert sample.signal is Signal.MEMORY
    assert sample.value == pytest.approx(0.25)
    assert sample.detail == {
        "url": exposer.url,
        "usage_bytes": 256 * MIB,
        "limit_bytes": 1024 * MIB,
    }


async def test_memory_with_limit_metric(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    config = memory(exposer.url, limit_metric="app_memory_limit_bytes")
    source = ExpositionSource(session, clock, memory=config)
    exposer.body = GAUGES
    (sample,) = await source.collect(clock.time())
    assert sample.value == pytest.approx(0.5)
    assert sample.detail["limit_bytes"] == 512 * MIB


async def test_memory_sums_series_and_filters_labels(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    exposer.body = (
        "# TYPE container_memory gauge\n"
        'container_memory{pod="a",kind="rss"} 100\n'
        'container_memory{pod="b",kind="rss"} 300\n'
        'container_memory{pod="b",kind="cache"} 5000\n'
    )
    summed = ExpositionSource(
        session, clock, memory=memory(exposer.url, metric="container_memory", limit=1000)
    )
    (sample,) = await summed.collect(clock.time())
    assert sample.value == pytest.approx(5.4)  # over 1.0: memory may exceed its limit
    rss = memory(exposer.url, metric="container_memory", limit=1000, labels={"kind": "rss"})
    (sample,) = await ExpositionSource(session, clock, memory=rss).collect(clock.time())
    assert sample.value == pytest.approx(0.4)
    assert sample.detail["usage_bytes"] == 400


@pytest.mark.parametrize(
    ("body", "fields", "reason"),
    [
        (
            "app_memory_limit_bytes 1\n",
            {"limit": "1GiB"},
            "no process_resident_memory_bytes series in the exposition",
        ),
        (
            "process_resident_memory_bytes 5\n",
            {"limit": "1GiB", "labels": {"pod": "a"}},
            'no process_resident_memory_bytes{pod="a"} series in the exposition',
        ),
        (
            "process_resident_memory_bytes 5\n",
            {"limit_metric": "app_memory_limit_bytes"},
            "no app_memory_limit_bytes series in the exposition (limit_metric)",
        ),
        (
            "process_resident_memory_bytes 5\napp_memory_limit_bytes 0\n",
            {"limit_metric": "app_memory_limit_bytes"},
            "memory limit app_memory_limit_bytes is 0",
        ),
    ],
)
async def test_memory_unknown(
    exposer: Exposer,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    body: str,
    fields: dict[str, Any],
    reason: str,
) -> None:
    exposer.body = body
    source = ExpositionSource(session, clock, memory=memory(exposer.url, **fields))
    (sample,) = await source.collect(clock.time())
    assert sample.value is None
    assert sample.reason == reason


# -- the scrape ---------------------------------------------------------------------------


@pytest.fixture
def both(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> Callable[..., ExpositionSource]:
    def make(url: str | None = None, **fields: Any) -> ExpositionSource:
        rate = error_rate(url or exposer.url, **fields)
        mem = memory(url or exposer.url, limit="1GiB", **fields)
        return ExpositionSource(session, clock, error_rate=rate, memory=mem)

    return make


async def test_shared_url_is_scraped_once(
    exposer: Exposer, both: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    source = both()
    assert source.signals == frozenset({Signal.ERROR_RATE, Signal.MEMORY})
    exposer.body = counter({"200": 0}) + GAUGES
    await source.collect(clock.time())
    exposer.body = counter({"200": 95, "500": 5}) + GAUGES
    rate, mem = await source.collect(clock.time())
    assert exposer.requests == 2
    assert (rate.signal, rate.value) == (Signal.ERROR_RATE, pytest.approx(0.05))
    assert (mem.signal, mem.value) == (Signal.MEMORY, pytest.approx(0.25))


async def test_distinct_urls_are_scraped_each(
    exposer: Exposer,
    other: Exposer,
    session: aiohttp.ClientSession,
    clock: FakeClock,
) -> None:
    source = ExpositionSource(
        session,
        clock,
        error_rate=error_rate(exposer.url),
        memory=memory(other.url, limit="512MiB"),
    )
    exposer.body = counter({"200": 1})
    other.body = GAUGES
    rate, mem = await source.collect(clock.time())
    assert (exposer.requests, other.requests) == (1, 1)
    assert rate.reason == "first scrape: no rate yet"
    assert mem.value == pytest.approx(0.5)
    assert mem.detail["url"] == other.url


@pytest.mark.parametrize("failure", ["status", "timeout"])
async def test_failed_scrape_is_unknown_and_keeps_the_baseline(
    exposer: Exposer,
    both: Callable[..., ExpositionSource],
    session: aiohttp.ClientSession,
    clock: FakeClock,
    failure: str,
) -> None:
    source = both(timeout="50ms")
    exposer.body = counter({"200": 100, "500": 0}) + GAUGES
    await source.collect(clock.time())

    if failure == "status":
        exposer.status = 500
        failed = await source.collect(clock.time())
        expected = "status 500 (expected 2xx)"
    else:
        exposer.hang = True
        failed = await source.collect(clock.time())
        expected = "timeout after 50ms"
        exposer.release.set()
        exposer.hang = False
    assert [s.signal for s in failed] == [Signal.ERROR_RATE, Signal.MEMORY]
    for sample in failed:
        assert sample.value is None
        assert sample.reason.startswith(expected)

    await clock.advance(30)
    exposer.status = 200
    exposer.body = counter({"200": 190, "500": 10}) + GAUGES
    rate, mem = await source.collect(clock.time())
    assert rate.value == pytest.approx(0.1)  # measured from the scrape before the failure
    assert rate.detail["span_s"] == 30.0
    assert mem.value == pytest.approx(0.25)


async def test_refused_connection_is_unknown_and_keeps_the_baseline(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    exposer = Exposer()
    app = web.Application()
    app.router.add_get("/metrics", exposer.handle)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    source = ExpositionSource(
        session, clock, error_rate=error_rate(url), memory=memory(url, limit="1GiB")
    )
    for sample in await source.collect(clock.time()):
        assert sample.value is None
        assert sample.reason == f"connection refused: 127.0.0.1:{port}"
        assert sample.detail == {"url": url}

    exposer.body = counter({"200": 100}) + GAUGES
    async with TestServer(app, host="127.0.0.1", port=port):
        rate, _ = await source.collect(clock.time())
    assert rate.reason == "first scrape: no rate yet"
    rate, _ = await source.collect(clock.time())  # the app went away again
    assert rate.reason.startswith("connection refused")

    await clock.advance(60)
    exposer.body = counter({"200": 160, "500": 40}) + GAUGES
    async with TestServer(app, host="127.0.0.1", port=port):
        rate, mem = await source.collect(clock.time())
    assert rate.value == pytest.approx(0.4)
    assert rate.detail["span_s"] == 60.0
    assert mem.value == pytest.approx(0.25)


async def test_parse_error_is_unknown(
    exposer: Exposer, both: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    exposer.body = GAUGES + 'http_requests_total{code="200" 5\n'
    for sample in await both().collect(clock.time()):
        assert sample.value is None
        assert sample.reason.startswith("cannot parse the exposition: ")


async def test_not_utf8_is_unknown(
    exposer: Exposer, both: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    exposer.body = b'http_requests_total{code="\xff"} 5\n'
    rate, _ = await both().collect(clock.time())
    assert rate.reason.startswith("cannot parse the exposition: 'utf-8' codec")


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_is_unknown(
    exposer: Exposer, both: Callable[..., ExpositionSource], clock: FakeClock, chunked: bool
) -> None:
    exposer.chunked = chunked
    exposer.body = GAUGES + "# padding\n" * 2000
    for sample in await both(max_body_bytes=10_000).collect(clock.time()):
        assert sample.value is None
        assert sample.reason == "exposition larger than 10000 bytes"


async def test_large_exposition_parses_in_a_thread(
    exposer: Exposer, both: Callable[..., ExpositionSource], clock: FakeClock
) -> None:
    padding = "".join(f'filler{{i="{i}"}} {i}\n' for i in range(THREAD_PARSE_BYTES // 16))
    exposer.chunked = True
    exposer.body = padding + GAUGES
    _, mem = await both().collect(clock.time())
    assert mem.value == pytest.approx(0.25)


async def test_credentials_stay_out_of_the_detail(
    exposer: Exposer, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    url = exposer.url.replace("http://", "http://scraper:hunter2@")
    exposer.body = GAUGES
    source = ExpositionSource(session, clock, memory=memory(url, limit="1GiB"))
    (sample,) = await source.collect(clock.time())
    assert sample.value == pytest.approx(0.25)
    assert "hunter2" not in sample.detail["url"]
    assert sample.detail["url"] == exposer.url.replace("http://", "http://scraper:***@")


async def test_closed_session_is_a_probe_error(exposer: Exposer, clock: FakeClock) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    source = ExpositionSource(session, clock, error_rate=error_rate(exposer.url))
    with pytest.raises(ProbeError, match="session is closed"):
        await source.collect(clock.time())


def test_a_source_needs_a_signal(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    with pytest.raises(ProbeError, match="needs error_rate, memory or latency"):
        ExpositionSource(session, clock)


async def test_against_the_sample_app(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    async with TestServer(create_app(clock=clock), host="127.0.0.1") as server:
        url = str(server.make_url("/metrics"))
        source = ExpositionSource(
            session,
            clock,
            error_rate=error_rate(url),
            memory=memory(url, limit_metric="app_memory_limit_bytes"),
        )
        async with session.post(
            server.make_url("/_control"),
            json={"error_ratio": 0.1, "memory_bytes": 384 * MIB},
        ) as response:
            assert response.status == 200
        for _ in range(5):
            async with session.get(server.make_url("/work")):
                pass
        await source.collect(clock.time())
        for _ in range(100):
            async with session.get(server.make_url("/work")):
                pass
        rate, mem = await source.collect(clock.time())
    assert rate.value == pytest.approx(0.1)
    assert rate.detail["requests"] == 100
    assert mem.value == pytest.approx(0.75)


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        (ExpositionErrorRate, {"url": "ftp://app/metrics"}, "http:// or https:// URL"),
        (ExpositionErrorRate, {"url": "app:8080/metrics"}, "http:// or https:// URL"),
        (ExpositionErrorRate, {"url": "http://[::1/"}, "http:// or https:// URL"),
        (ExpositionErrorRate, {"min_requests": 0}, "greater than or equal to 1"),
        (ExpositionErrorRate, {"timeout": "0s"}, "timeout must be more than 0s"),
        (ExpositionErrorRate, {"timeout": 5}, "durations are strings with a unit"),
        (ExpositionErrorRate, {"max_body_bytes": 0}, "greater than 0"),
        (ExpositionErrorRate, {"metric": "http-requests"}, "not a Prometheus metric name"),
        (ExpositionErrorRate, {"query": "x"}, "Extra inputs are not permitted"),
        (ExpositionErrorRate, {"source": "railway"}, "Input should be 'exposition'"),
        (ExpositionMemory, {"limit": "12 apples"}, "not a size: '12 apples'"),
        (ExpositionMemory, {"limit": "0MiB"}, "limit must be more than 0 bytes"),
        (ExpositionMemory, {}, "set exactly one of limit"),
        (
            ExpositionMemory,
            {"limit": "1GiB", "limit_metric": "app_memory_limit_bytes"},
            "set exactly one of limit",
        ),
        (ExpositionMemory, {"limit_metric": "9lives"}, "not a Prometheus metric name"),
    ],
)
def test_config_errors(model: type[Any], fields: dict[str, Any], message: str) -> None:
    data = {"source": "exposition", "url": "http://app:8080/metrics", **fields}
    with pytest.raises(ValidationError, match=message):
        model.model_validate(data, context=CTX)


def test_config_defaults_and_environment() -> None:
    rate = ExpositionErrorRate.model_validate(
        {"source": "exposition", "url": "${APP_URL}/metrics", "timeout": "2s"},
        context={"environ": {"APP_URL": "https://app:8443"}},
    )
    assert rate.url == "https://app:8443/metrics"
    assert (rate.metric, rate.status_label, rate.min_requests) == (
        "http_requests_total",
        "code",
        10,
    )
    assert (rate.timeout, rate.max_body_bytes, rate.labels) == (2.0, 4 * MIB, {})
    mem = ExpositionMemory.model_validate(
        {"source": "exposition", "url": "http://app/metrics", "limit": "${LIMIT:-256MiB}"},
        context={"environ": {}},
    )
    assert (mem.metric, mem.limit, mem.limit_metric) == (
        "process_resident_memory_bytes",
        256 * MIB,
        None,
    )
    built = ExpositionMemory(source="exposition", url="http://app/metrics", limit=1000, timeout=1)
    assert (built.limit, built.timeout) == (1000, 1.0)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (4096, 4096),
        (0, 0),
        ("4096", 4096),
        ("512MiB", 512 * MIB),
        ("512mib", 512 * MIB),
        ("512Mi", 512 * MIB),
        ("1GiB", 1024 * MIB),
        (" 1.5 GiB ", 1536 * MIB),
        ("500MB", 500_000_000),
        ("2kB", 2000),
        ("1TB", 10**12),
        ("1TiB", 2**40),
        ("100B", 100),
    ],
)
def test_parse_size(text: Any, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["12 apples", "", "MiB", "-1MiB", "1.5.0GiB", "5M", -1, True, 1.5, None]
)
def test_parse_size_refuses(text: Any) -> None:
    with pytest.raises(ValueError, match=r"^not a size: "):
        parse_size(text)
