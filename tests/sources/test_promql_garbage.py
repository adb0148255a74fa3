"""Garbage in PromQL answers: never a traceback, always UNKNOWN with a reason or a finite value
within the signal's bounds (property-based with hypothesis, derandomized for CI)."""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.clock import FakeClock
from monitor.model import Sample, Signal
from monitor.sources.exposition_checks import MAX_LATENCY, MAX_MEMORY_RATIO
from monitor.sources.promql import (
    PromQLErrorRate,
    PromQLLatency,
    PromQLMemory,
    PromQLSource,
    _LatencyReader,
    _Reader,
)
from monitor.sources.promql_answer import Result, interpret

URL = "http://127.0.0.1:9"
RATE = PromQLErrorRate(source="promql", url=URL, query="sum(a)/sum(b)")
RATE_WITH_TRAFFIC = PromQLErrorRate(
    source="promql", url=URL, query="sum(a)/sum(b)", traffic_query="sum(b)", min_traffic=1
)
MEMORY = PromQLMemory(source="promql", url=URL, query="a/b")
LATENCY = PromQLLatency(source="promql", url=URL)
QUANTILES = (Signal.LATENCY_P50, Signal.LATENCY_P99)
FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

VALUES = st.one_of(
    st.sampled_from(
        ["NaN", "+Inf", "-Inf", "Inf", "inf", "1e400", "-1", "0.05", "0.5", "1", "2", "1e300"]
    ),
    st.sampled_from(["", "abc", " 1", "1_0", "0x10", "nan ", "1e", "--1", "\u0661"]),
    st.floats().map(repr),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(),
    st.lists(st.integers(), max_size=2),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["status", "data", "result", "resultType", "value", "metric", "error"])
            | st.text(max_size=5),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """A /api/v1/query answer: well-shaped with odd values, odd shapes, or odd JSON."""
    point = [draw(st.one_of(st.floats(), st.integers(), st.text(max_size=3))), draw(VALUES)]
    series = {
        "metric": draw(st.dictionaries(st.text(max_size=3), st.text(max_size=3))),
        "value": point,
    }
    kind = draw(st.sampled_from(["vector", "scalar", "matrix", "string", "odd"]))
    if kind == "vector":
        result: Any = [series] * draw(st.integers(0, 3))
    elif kind == "scalar":
        result = point
    else:
        result = draw(JSON)
    document: Any = {
        "status": draw(st.sampled_from(["success", "success", "error", None])),
        "data": {"resultType": kind, "result": result},
    }
    if draw(st.booleans()):
        document = draw(
            st.sampled_from([document, draw(JSON), {"status": "success", "data": draw(JSON)}])
        )
    text = json.dumps(document)  # NaN and Infinity as bare (invalid) JSON words too
    how = draw(st.sampled_from(["json", "json", "deep", "truncated", "bytes"]))
    if how == "deep":
        depth = draw(st.sampled_from([50, 5000, 200_000]))
        return b'{"status":"success","data":' + b"[" * depth + b"]" * depth + b"}"
    if how == "truncated":
        return text[: draw(st.integers(0, len(text)))].encode()
    if how == "bytes":
        return draw(st.binary(max_size=40))
    return text.encode()


def assert_sane(sample: Sample) -> None:
    if sample.value is None:
        assert sample.reason.strip(), sample
        return
    low, high = sample.signal.bounds
    assert math.isfinite(sample.value), sample
    assert low <= sample.value <= high, sample
    if sample.signal is Signal.MEMORY:
        assert sample.value <= MAX_MEMORY_RATIO, sample
    if sample.signal.quantile is not None:
        assert sample.value <= MAX_LATENCY, sample
        requests = sample.detail["requests"]
        assert math.isfinite(requests), sample
        assert requests >= LATENCY.min_requests, sample


@FAST
@given(answers(), answers(), st.sampled_from([200, 200, 400, 422, 503]))
def test_any_answer_gives_a_sane_sample(main: bytes, traffic: bytes, status: int) -> None:
    main_result = interpret(status, main, "q")
    traffic_result = interpret(200, traffic, "t")
    for result in (main_result, traffic_result):
        assert isinstance(result.outcome, float | str)
    for signal, config in [
        (Signal.ERROR_RATE, RATE),
        (Signal.ERROR_RATE, RATE_WITH_TRAFFIC),
        (Signal.MEMORY, MEMORY),
    ]:
        reader = _Reader(signal, config)
        extra = traffic_result if reader.traffic is not None else None
        assert_sane(reader.read(1.0, main_result, extra))
    # A latency's requests count and quantiles, whichever of them the garbage is in.
    latency = _LatencyReader(LATENCY, QUANTILES)
    for results in [
        (traffic_result, main_result, main_result),
        (Result(100.0), main_result, traffic_result),
    ]:
        samples = latency.samples(1.0, results)
        assert [s.signal for s in samples] == list(QUANTILES)
        for sample in samples:
            assert_sane(sample)


def vector(*values: Any) -> bytes:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    data = {"resultType": "vector", "result": result}
    return json.dumps({"status": "success", "data": data}).encode()


@pytest.mark.parametrize(
    ("signal", "body", "reason"),
    [
        ("error_rate", vector("NaN"), "no traffic (the query is NaN)"),
        ("error_rate", vector("+Inf"), "no traffic (the query is +Inf)"),
        ("error_rate", vector("1e400"), "no traffic (the query is +Inf)"),
        ("error_rate", vector("-Inf"), "no traffic (the query is -Inf)"),
        ("error_rate", vector("1.5"), "the query returned 1.5, outside the error_rate range"),
        ("error_rate", vector("-0.1"), "the query returned -0.1, outside the error_rate range"),
        ("memory", vector("5000"), "the query returned 5000, outside the memory range 0..1000"),
        ("error_rate", vector("0.1", "0.2"), "query returned 2 series; it must return one"),
        ("error_rate", vector("abc"), "the query's value 'abc' is not a number"),
        ("error_rate", vector(0.5), "the query's value 0.5 is not a number"),
        ("error_rate", vector(True), "the query's value True is not a number"),
        ("error_rate", vector("1_0"), "the query's value '1_0' is not a number"),
        ("error_rate", vector("\u0661"), "the query's value '\u0661' is not a number"),
        (
            "error_rate",
            b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1,NaN]}]}}',
            "response is not JSON (NaN is not JSON)",
        ),
        ("error_rate", b"[" * 100_000 + b"]" * 100_000, "response is nested too deeply"),
        (
            "error_rate",
            b'{"status":"success","data":{"resultType":"vector","result":{"0":1}}}',
            "unexpected response",
        ),
        (
            "error_rate",
            b'{"status":"success","data":{"resultType":"scalar","result":[true,"0.1"]}}',
            "unexpected response",
        ),
    ],
)
def test_each_kind_of_garbage_is_unknown_with_its_reason(
    signal: str, body: bytes, reason: str
) -> None:
    config = RATE if signal == "error_rate" else MEMORY
    sample = _Reader(Signal(signal), config).read(1.0, interpret(200, body, "q"), None)
    assert sample.value is None
    assert sample.reason.startswith(reason)


@pytest.mark.parametrize(
    ("volume", "reason"),
    [
        ("+Inf", "traffic_query returned +Inf: not a count of requests"),
        ("-5", "traffic_query returned -5: not a count of requests"),
        ("NaN", "too little traffic: NaN < min_traffic 1"),
    ],
)
def test_garbage_traffic_is_unknown(volume: str, reason: str) -> None:
    reader = _Reader(Signal.ERROR_RATE, RATE_WITH_TRAFFIC)
    sample = reader.read(1.0, Result(0.5, 1), interpret(200, vector(volume), "t"))
    assert sample.value is None
    assert sample.reason == reason


@pytest.mark.parametrize(
    ("requests", "body", "reason"),
    [
        (vector("100"), vector("NaN"), "no observations in the histogram's buckets (the query"),
        (vector("100"), vector("+Inf"), "the query returned +Inf: not a latency in seconds"),
        (vector("100"), vector("-Inf"), "the query returned -Inf: not a latency in seconds"),
        (vector("100"), vector("-0.1"), "latency_p50 would be -0.1, outside 0..86400"),
        (vector("100"), vector("1e6"), "latency_p50 would be 1e+06, outside 0..86400"),
        (vector("100"), vector("0.1", "0.2"), "query returned 2 series; it must return one"),
        (vector("100"), vector("fast"), "the query's value 'fast' is not a number"),
        (vector("100"), b"<html>", "response is not JSON ("),
        (vector("100"), vector(), "query returned no series: q"),
        (vector("+Inf"), vector("0.1"), "requests_query returned +Inf: not a count of requests"),
        (vector("-5"), vector("0.1"), "requests_query returned -5: not a count of requests"),
        (vector("NaN"), vector("0.1"), "too little traffic: NaN requests < min_requests 10"),
        (vector("9.5"), vector("0.1"), "too little traffic: 9.5 requests < min_requests 10"),
        (vector("1", "2"), vector("0.1"), "requests_query: query returned 2 series"),
        (b"[" * 100_000, vector("0.1"), "requests_query: response is nested too deeply"),
    ],
)
def test_each_kind_of_latency_garbage_is_unknown_with_its_reason(
    requests: bytes, body: bytes, reason: str
) -> None:
    reader = _LatencyReader(LATENCY, [Signal.LATENCY_P50])
    (sample,) = reader.samples(1.0, [interpret(200, requests, "r"), interpret(200, body, "q")])
    assert sample.value is None
    assert sample.reason.startswith(reason)
    assert sample.detail["span_s"] == 120.0


@settings(max_examples=10, deadline=None, derandomize=True)
@given(answers())
async def test_garbage_through_a_real_server(body: bytes) -> None:
    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/query", handle)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/"))
        source = PromQLSource(
            session,
            FakeClock(),
            error_rate=PromQLErrorRate(source="promql", url=url, query="q"),
            memory=PromQLMemory(source="promql", url=url, query="q"),
            latency=PromQLLatency(source="promql", url=url),
            quantiles=QUANTILES,
        )
        for sample in await source.collect(1.0):
            assert_sane(sample)
