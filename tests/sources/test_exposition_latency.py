"""The exposition source's latency: quantiles of a histogram's growth between two scrapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.model import Signal
from monitor.sandbox.sample_app import create_app
from monitor.sources.exposition import ExpositionSource, _parse
from monitor.sources.exposition_config import ExpositionLatency
from monitor.sources.exposition_readers import LatencyReader
from monitor.sources.quantile import bucket_quantile

CTX = {"environ": {}}
URL = "http://127.0.0.1:9/metrics"
QUANTILES = (Signal.LATENCY_P50, Signal.LATENCY_P99)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def config(**fields: object) -> ExpositionLatency:
    return ExpositionLatency.model_validate(
        {"source": "exposition", "url": URL, "min_requests": 5, **fields}, context=CTX
    )


def histogram(counts: Mapping[str, float], labels: str = "") -> str:
    lines = ["# TYPE http_request_duration_seconds histogram"]
    for le, count in counts.items():
        sep = "," if labels else ""
        lines.append(f'http_request_duration_seconds_bucket{{{labels}{sep}le="{le}"}} {count}')
    return "\n".join(lines) + "\n"


def read(reader: LatencyReader, text: str | None, now: float) -> list[tuple[float | None, str]]:
    found = "status 500 (expected 2xx)" if text is None else _parse(text, reader.names)
    return [(s.value, s.reason) for s in reader.samples(1000.0 + now, URL, found, now)]


def test_quantiles_between_two_scrapes() -> None:
    reader = LatencyReader(config(), QUANTILES)
    assert (
        read(reader, histogram({"0.1": 0, "0.5": 0, "+Inf": 0}), 0.0)
        == [(None, "first scrape: no quantile yet")] * 2
    )
    samples = reader.samples(
        1010.0, URL, _parse(histogram({"0.1": 10, "0.5": 18, "+Inf": 20}), reader.names), 10.0
    )
    growth = {0.1: 10.0, 0.5: 18.0, float("inf"): 20.0}
    assert [s.value for s in samples] == [
        bucket_quantile(0.5, growth).value,
        bucket_quantile(0.99, growth).value,
    ]
    assert samples[0].detail == {"url": URL, "requests": 20.0, "span_s": 10.0}
    assert samples[1].value == 0.5  # the rank falls in +Inf: the highest finite bound


def test_what_keeps_a_quantile_unknown() -> None:
    reader = LatencyReader(config(), QUANTILES)
    first = histogram({"0.1": 5, "+Inf": 10})
    read(reader, first, 0.0)
    # A failed scrape keeps the earlier one: the next step measures the longer span.
    assert read(reader, None, 10.0)[0] == (None, "status 500 (expected 2xx)")
    garbage = histogram({"soon": 7, "+Inf": 12})
    assert "has an le that is not a bound: 'soon'" in read(reader, garbage, 15.0)[0][1]
    assert read(reader, "# nothing here\n", 16.0)[0] == (
        None,
        "no http_request_duration_seconds_bucket series in the exposition",
    )
    values = read(reader, histogram({"0.1": 15, "+Inf": 30}), 20.0)
    assert values[0][0] == pytest.approx(0.1 * (10 / 10))  # 20 new: rank 10 of 10 in le=0.1
    # A restart (a bucket went down): UNKNOWN, and the next step measures from it.
    assert "counter reset" in read(reader, histogram({"0.1": 1, "+Inf": 2}), 30.0)[0][1]
    assert read(reader, histogram({"0.1": 2, "+Inf": 4}), 40.0)[0][1].startswith("too little")
    assert read(reader, histogram({"0.1": 20, "+Inf": 40}), 50.0)[0][0] is not None


def test_too_little_traffic_and_nothing_to_interpolate() -> None:
    reader = LatencyReader(config(min_requests=10), QUANTILES)
    read(reader, histogram({"+Inf": 0}), 0.0)
    reasons = read(reader, histogram({"+Inf": 3}), 10.0)
    assert reasons[0] == (None, "too little traffic: 3 requests < min_requests 10")
    reasons = read(reader, histogram({"+Inf": 30}), 20.0)
    assert reasons[0] == (None, "only a +Inf bucket: nothing to interpolate in")


def test_a_latency_past_a_day_is_garbage() -> None:
    reader = LatencyReader(config(), (Signal.LATENCY_P50,))
    read(reader, histogram({"1e9": 0, "+Inf": 0}), 0.0)
    ((value, reason),) = read(reader, histogram({"1e9": 100, "+Inf": 100}), 10.0)
    assert value is None
    assert reason == "latency_p50 would be 5e+08, outside 0..86400"


def test_labels_select_the_series() -> None:
    reader = LatencyReader(config(labels={"handler": "/api"}), (Signal.LATENCY_P50,))
    both = histogram({"0.1": 0, "+Inf": 0}, 'handler="/api"') + histogram(
        {"0.1": 0, "+Inf": 0}, 'handler="/admin"'
    ).replace("# TYPE http_request_duration_seconds histogram\n", "")
    read(reader, both, 0.0)
    later = histogram({"0.1": 10, "+Inf": 10}, 'handler="/api"') + histogram(
        {"0.1": 0, "+Inf": 90}, 'handler="/admin"'
    ).replace("# TYPE http_request_duration_seconds histogram\n", "")
    ((value, _),) = read(reader, later, 10.0)
    assert value == pytest.approx(0.05)  # the /admin requests (all slow) are not counted


async def test_against_the_sample_app(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    async with TestServer(create_app(clock=clock), host="127.0.0.1") as server:
        url = str(server.make_url("/metrics"))
        latency = ExpositionLatency.model_validate(
            {"source": "exposition", "url": url}, context=CTX
        )
        source = ExpositionSource(
            session, clock, latency=latency, quantiles=(Signal.LATENCY_P95, Signal.LATENCY_P50)
        )
        assert source.signals == {Signal.LATENCY_P95, Signal.LATENCY_P50}
        async with session.post(server.make_url("/_control"), json={"latency": 0.08}):
            pass
        await source.collect(clock.time())
        for _ in range(40):
            async with session.get(server.make_url("/work")):
                pass
        p50, p95 = await source.collect(clock.time())
    # Every request took 80ms: the default buckets put them in (0.075, 0.1].
    assert (p50.signal, p95.signal) == (Signal.LATENCY_P50, Signal.LATENCY_P95)
    assert p50.value == pytest.approx(0.075 + 0.025 * 0.5)
    assert p95.value == pytest.approx(0.075 + 0.025 * 0.95)
    assert p95.detail["requests"] == 40
