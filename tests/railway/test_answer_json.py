"""A large answer decoded a piece at a time: exactly what json.loads gives, or the same error,
and the event loop runs in between (property-based with hypothesis, derandomized for CI)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr

from monitor.clock import FakeClock
from monitor.errors import RailwayGraphQLError, RailwayProtocolError
from monitor.railway import answer_json
from monitor.railway.budget import RequestBudget
from monitor.railway.client import RailwayClient

FAST = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SPACE = st.sampled_from(["", "", " ", "\n", "\t ", "\r\n  "])
KEYS = st.sampled_from(["data", "errors", "d0", "h0", "a", "", "é", "\\u0064ata"])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
).map(json.dumps) | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "1.0"])


@st.composite
def members(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    """An object's text, with repeated keys likely and any whitespace JSON allows."""
    pairs = draw(st.lists(st.tuples(KEYS, values), max_size=4))
    parts = []
    for key, value in pairs:
        key_text = f'"{key}"' if key.startswith("\\") else json.dumps(key)
        parts.append(f"{draw(SPACE)}{key_text}{draw(SPACE)}:{draw(SPACE)}{value}{draw(SPACE)}")
    return "{" + ",".join(parts) + draw(SPACE) + "}"


VALUES = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
        | members(children)
    ),
    max_leaves=12,
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    """An answer's bytes: an object with data and errors (or any value), maybe garbled."""
    errors = st.lists(members(VALUES), max_size=2).map(lambda e: "[" + ",".join(e) + "]")
    top = draw(
        st.one_of(
            st.builds(
                lambda data, errs, extra: "{" + f'"data": {data}, "errors": {errs}{extra}' + "}",
                members(VALUES),
                st.one_of(st.just("null"), errors, VALUES),
                st.sampled_from(["", ', "data": {"x": 1}', ', "data": null', ', "x": 2']),
            ),
            members(members(VALUES)),
            VALUES,
        )
    )
    text = draw(SPACE) + top + draw(SPACE)
    how = draw(st.sampled_from(["as is", "as is", "truncated", "inserted", "comma", "trailing"]))
    if how == "truncated":
        text = text[: draw(st.integers(0, len(text)))]
    elif how == "inserted":
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from([",", ":", "}", "{", '"', "]", "x", "\x01"]))
            + text[at:]
        )
    elif how == "comma" and "}" in text:  # a trailing comma in an object
        at = draw(st.sampled_from([i for i, c in enumerate(text) if c == "}"]))
        text = text[:at] + "," + text[at:]
    elif how == "trailing":
        text += draw(st.sampled_from(["x", "{}", ",", " 1"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    return text.encode(encoding)


def outcome(decode: Any) -> tuple[str, str]:
    """What decoding gave: the value's repr (ints stay ints, keys in order) or the error."""
    try:
        return "value", repr(decode())
    except (ValueError, RecursionError) as e:
        return type(e).__name__, str(e)


@FAST
@given(answers(), st.sampled_from([0, 1, 7, 64]))
def test_decoding_a_piece_at_a_time_gives_what_json_loads_gives(raw: bytes, chunk: int) -> None:
    expected = outcome(lambda: answer_json.loads(raw))
    assert outcome(lambda: asyncio.run(answer_json.decode(raw, chunk))) == expected


def big_answer(services: int = 2000) -> bytes:
    """A poll's answer with its data an object per alias, over CHUNK bytes."""
    data = {
        f"h{i}": [{"statusCode": 200, "samples": [{"ts": 1_700_000_000 + i, "value": 1.5}]}]
        for i in range(services)
    }
    raw = json.dumps({"data": data}).encode()
    assert len(raw) > 2 * answer_json.CHUNK
    return raw


async def test_a_large_answer_lets_other_tasks_run_while_it_is_decoded() -> None:
    raw = big_answer()
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    try:
        assert await answer_json.decode(raw) == json.loads(raw)
        during = turns
        assert during >= len(raw) // answer_json.CHUNK - 1  # a turn after every chunk
        assert await answer_json.decode(b'{"data": {"x": 1}}') == {"data": {"x": 1}}
        assert turns == during  # a small one is decoded in one go
    finally:
        task.cancel()


@pytest.fixture
async def client() -> AsyncIterator[RailwayClient]:
    clock = FakeClock(1_700_000_000.0)
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
PAD = b'"pad": "' + b"x" * answer_json.CHUNK + b'", '  # makes an answer large


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"data": {' + PAD + b'"x": NaN}}', r"not a JSON object \(NaN is not a JSON value\)"),
        (b'{"data": {' + PAD + b'"x": -Infinity}}', r"\(-Infinity is not a JSON value\)"),
        (b'{"data": {' + PAD + b'"x": [' + b"[" * 100_000 + b"]]}}", "nested too deeply"),
        (b'{"data": {' + PAD + b'"x": 1}', r"not a JSON object \(HTTP 200\)"),
        (b'{"data": {' + PAD + b'"x": 1}} x', r"not a JSON object \(HTTP 200\)"),
        (b'{"data": {' + PAD + b'"x": \xff}}', r"not a JSON object \(HTTP 200\)"),
        (b'{"data": {' + PAD + b'"x": 1}, "data": 5}', "neither data nor errors"),
    ],
)
async def test_a_large_garbled_answer_is_the_same_protocol_error(
    client: RailwayClient, raw: bytes, match: str
) -> None:
    with pytest.raises(RailwayProtocolError, match=match):
        await client._interpret("Q", 200, NO_HEADERS, raw)


async def test_a_large_answer_with_errors_keeps_its_data_and_paths(
    client: RailwayClient,
) -> None:
    body = json.loads(big_answer())
    body["data"]["h3"] = None
    body["errors"] = [{"message": "Service not found", "path": ["h3"]}]
    with pytest.raises(RailwayGraphQLError) as caught:
        await client._interpret("Q", 200, NO_HEADERS, json.dumps(body).encode())
    assert caught.value.data == body["data"]
    assert caught.value.paths == {"h3": "Service not found"}


async def test_a_large_answer_with_duplicate_keys_keeps_the_last(client: RailwayClient) -> None:
    raw = big_answer()[:-2] + b', "h0": "last"}, "data": ' + big_answer()[9:-1] + b"}"
    assert await client._interpret("Q", 200, NO_HEADERS, raw) == json.loads(raw)["data"]
