"""Garbage in Railway's answers: an error of that request or an UNKNOWN sample for that one
service (an unknown platform status), never an exception out of the client or the poller
(property-based with hypothesis, derandomized for CI)."""

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
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from monitor.clock import FakeClock
from monitor.errors import RailwayError, RailwayProtocolError
from monitor.model import Sample, Signal
from monitor.railway.budget import RequestBudget
from monitor.railway.client import Deployment, RailwayClient
from monitor.railway.document import Target
from monitor.railway.metrics import error_rate_sample, memory_sample
from monitor.railway.poller import RailwayPoller
from monitor.sources.exposition_checks import MAX_MEMORY_RATIO
from monitor.sources.railway import RailwayErrorRate, RailwayMemory

ERROR_RATE = RailwayErrorRate(source="railway", min_requests=1, step=60)
MEMORY = RailwayMemory(source="railway", sample_rate=30)
AT = 1_700_000_000.0
ACTIVE = Deployment("dep", "SUCCESS", AT - 3600, None, True, "s", "e")
FAST = settings(
    max_examples=100,
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
NUMBER = st.one_of(st.integers(0, 10**4), st.floats(0, 1e4), ODD)
TS = st.one_of(st.integers(int(AT) - 600, int(AT)), ODD)
JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=10,
)


POINTS = st.one_of(st.lists(st.fixed_dictionaries({"ts": TS, "value": NUMBER}), max_size=3), JSON)


HTTP = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "statusCode": st.one_of(st.sampled_from([200, 404, 500, 503]), ODD),
                "samples": POINTS,
            }
        ),
        JSON,
    ),
    max_size=4,
)
MEMORY_GROUPS = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "measurement": st.one_of(
                    st.sampled_from(["MEMORY_USAGE_GB", "MEMORY_LIMIT_GB"]), ODD
                ),
                "tags": st.one_of(
                    st.fixed_dictionaries({"deploymentId": st.sampled_from(["dep", "other"])}),
                    JSON,
                ),
                "values": POINTS,
            }
        ),
        JSON,
    ),
    max_size=4,
)


def assert_sane(sample: Sample) -> None:
    if sample.value is None:
        assert sample.reason.strip(), sample
        return
    low, high = sample.signal.bounds
    assert math.isfinite(sample.value), sample
    assert low <= sample.value <= high, sample
    if sample.signal is Signal.MEMORY:
        assert sample.value <= MAX_MEMORY_RATIO, sample


@FAST
@given(st.one_of(HTTP, JSON))
def test_any_http_metrics_answer_gives_a_sane_error_rate(answer: Any) -> None:
    assert_sane(error_rate_sample(answer, ERROR_RATE, AT, "h0"))


@FAST
@given(st.one_of(MEMORY_GROUPS, JSON), st.booleans())
def test_any_metrics_answer_gives_a_sane_memory_ratio(answer: Any, active: bool) -> None:
    assert_sane(memory_sample(answer, ACTIVE if active else None, AT, "m0"))


def http(*groups: tuple[Any, list[tuple[Any, Any]]]) -> list[dict[str, Any]]:
    return [
        {"statusCode": code, "samples": [{"ts": ts, "value": v} for ts, v in samples]}
        for code, samples in groups
    ]


STEP = AT - 120  # a complete step


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (http((200, [(STEP, math.nan)]), (500, [(STEP, 5)])), "h0: a request count that is not"),
        (http((200, [(STEP, math.inf)]), (500, [(STEP, 5)])), "h0: a request count that is not"),
        (http((200, [(STEP, -3)]), (500, [(STEP, 5)])), "h0: a request count that is not"),
        (http((200, [(STEP, 10**400)])), "h0: a request count that is not"),
        (http((200, [(STEP, True)])), "h0: a request count that is not"),
        (http((200, [(STEP, "90")])), "h0: a request count that is not"),
        (http((200, [("yesterday", 90)])), "h0: a timestamp that is not a time"),
        (http((200, [(True, 90)])), "h0: a timestamp that is not a time"),
        (http((200, [(math.nan, 90)])), "h0: a timestamp that is not a time"),
        (http((True, [(STEP, 90)])), "h0: unexpected entry"),
        (http(("500", [(STEP, 90)])), "h0: unexpected entry"),
        ([{"statusCode": 200, "samples": {"ts": 1}}], "h0: unexpected entry"),
        ([[[[[]]]]], "h0: unexpected entry"),
    ],
)
def test_each_kind_of_http_garbage_is_unknown(answer: Any, reason: str) -> None:
    sample = error_rate_sample(answer, ERROR_RATE, AT, "h0")
    assert sample.value is None
    assert sample.reason.startswith(reason)


def mem(usage: Any, limit: Any) -> list[dict[str, Any]]:
    return [
        {"measurement": name, "tags": {"deploymentId": "dep"}, "values": [{"ts": AT, "value": v}]}
        for name, v in (("MEMORY_USAGE_GB", usage), ("MEMORY_LIMIT_GB", limit))
    ]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (mem(0.5, 0), "memory limit 0 GB for deployment dep"),
        (mem(0.5, math.nan), "m0: a memory size that is not a measurement"),
        (mem(math.inf, 1), "m0: a memory size that is not a measurement"),
        (mem(-0.5, 1), "m0: a memory size that is not a measurement"),
        (mem("0.5", 1), "m0: a memory size that is not a measurement"),
        (mem(1e9, 1e-9), "memory would be 1e+18, outside 0..1000"),
        ([{"measurement": 5, "tags": {}, "values": []}], "m0: unexpected entry"),
    ],
)
def test_each_kind_of_memory_garbage_is_unknown(answer: Any, reason: str) -> None:
    sample = memory_sample(answer, ACTIVE, AT, "m0")
    assert sample.value is None
    assert sample.reason.startswith(reason)


def test_valid_answers_still_give_their_values() -> None:
    rate = error_rate_sample(
        http((200, [(int(STEP), 90)]), (503, [(int(STEP), 10.0)])), ERROR_RATE, AT, "h0"
    )
    assert rate.value == pytest.approx(0.1)
    assert memory_sample(mem(0.25, 1), ACTIVE, AT, "m0").value == pytest.approx(0.25)


# -- the client's reading of a whole answer ---------------------------------------------------


@pytest.fixture
async def client() -> Any:
    clock = FakeClock(AT)
    async with aiohttp.ClientSession() as session:
        yield RailwayClient(
            session,
            url="http://127.0.0.1:9/graphql/v2",
            token=SecretStr("t"),
            clock=clock,
            budget=RequestBudget(clock, per_hour=1000, per_second=10),
            max_attempts=1,
        )


NO_HEADERS = CIMultiDictProxy(CIMultiDict[str]())


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"data": {"x": NaN}}', r"not a JSON object \(NaN is not a JSON value\)"),
        (b'{"data": {"x": Infinity}}', r"\(Infinity is not a JSON value\)"),
        (b'{"data": {"x": -Infinity}}', r"\(-Infinity is not a JSON value\)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"data": {"x": 1' + b"0" * 5000 + b"}}", "not a JSON object"),
        (b"\xff\xfe", "not a JSON object"),
    ],
)
async def test_garbage_json_is_a_protocol_error(client: Any, raw: bytes, match: str) -> None:
    with pytest.raises(RailwayProtocolError, match=match):
        await client._interpret("Q", 200, NO_HEADERS, raw)


# The client is only read by _interpret for these statuses: sharing it across examples is safe.
@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(JSON, st.sampled_from([200, 400, 401, 403, 404]), st.booleans())
async def test_any_json_answer_is_data_or_a_railway_error(
    client: Any, document: Any, status: int, wrap: bool
) -> None:
    if wrap:
        document = {"data": document, "errors": document}
    raw = json.dumps(document).encode()  # NaN and Infinity written as bare words too
    try:
        data = await client._interpret("Q", status, NO_HEADERS, raw)
    except RailwayError:
        return
    assert isinstance(data, dict)


# -- the poller against a real server ----------------------------------------------------------


@st.composite
def tick_answers(draw: st.DrawFn) -> bytes:
    """A RailguardTick answer for one service: odd metrics, odd deployments, odd JSON."""
    node = {
        "id": "dep",
        "status": draw(st.sampled_from(["SUCCESS", "CRASHED", 5, None])),
        "createdAt": draw(st.sampled_from(["2023-11-14T20:00:00Z", "yesterday", 1.5, None])),
        "canRollback": draw(st.sampled_from([True, "yes"])),
        "environmentId": "e",
        "instances": draw(st.one_of(st.just([{"id": "i", "status": "RUNNING"}]), JSON)),
    }
    incident = {"id": "i", "message": "down", "status": draw(st.sampled_from(["IDENTIFIED", 5]))}
    data = {
        "d0": draw(st.one_of(st.just({"edges": [{"node": node}]}), JSON)),
        "h0": draw(st.one_of(HTTP, JSON)),
        "m0": draw(st.one_of(MEMORY_GROUPS, JSON)),
        "platform": draw(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "isStable": st.one_of(st.booleans(), JSON),
                        "incident": st.one_of(st.just(incident | {"url": "u"}), JSON),
                    }
                ),
                JSON,
            )
        ),
    }
    body: Any = {"data": data}
    if draw(st.booleans()):
        paths = st.sampled_from(["h0", "d9", "platform"])
        body["errors"] = [{"message": draw(JSON), "path": [draw(paths)]}]
    text = json.dumps(body)
    how = draw(st.sampled_from(["json", "json", "json", "deep", "truncated"]))
    if how == "deep":
        return b'{"data": {"h0": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}"
    if how == "truncated":
        return text[: draw(st.integers(0, len(text)))].encode()
    return text.encode()


@settings(max_examples=15, deadline=None, derandomize=True)
@given(tick_answers())
async def test_garbage_never_escapes_a_poll(body: bytes) -> None:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/graphql/v2", answer)
    clock = FakeClock(AT)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        client = RailwayClient(
            session,
            url=str(server.make_url("/graphql/v2")),
            token=SecretStr("t"),
            clock=clock,
            budget=RequestBudget(clock, per_hour=1000, per_second=10),
            max_attempts=1,
        )
        target = Target("web", "s", "e", error_rate=ERROR_RATE, memory=MEMORY, deployment=True)
        poller = RailwayPoller(client, [target], clock=clock, interval=30)
        await poller.poll()  # never raises
        assert poller.platform is None or poller.platform.at == AT
        assert poller.platform is not None or poller.platform_problem or poller.last_failure
        snapshot = poller.latest("web")
        if snapshot is None:
            assert poller.last_failure
        else:
            for sample in snapshot.samples.values():
                assert_sane(sample)
