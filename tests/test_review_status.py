"""Review of /status, /metrics and RAILGUARD_READ_TOKEN: what hostile or careless requests
and settings did to them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor import status_routes
from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.errors import ConfigError
from tests.stage import Stage, served

TOKEN = "read-6f1c0d9e2b7a4c58"


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    yield stage
    await stage.close()


async def exchange(port: int, request: bytes) -> bytes:
    """Raw bytes out, every byte back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    data = await reader.read()
    writer.close()
    return data


async def test_a_bearer_token_that_is_no_utf8_gets_a_401_not_a_500(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    async for port in served(stage, {"RAILGUARD_READ_TOKEN": TOKEN}):
        for header in (b"Bearer \xff\xfe", b"Basic \xff", b"Bearer " + TOKEN.encode() + b"\xff"):
            got = await exchange(
                port,
                b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Authorization: " + header + b"\r\n\r\n",
            )
            assert got.startswith(b"HTTP/1.1 401 "), (header, got[:200])
            assert b'"error"' in got
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


@pytest.mark.parametrize("value", ["", "  ", "\n"])
def test_an_empty_read_token_is_refused_at_startup(value: str) -> None:
    # Set but empty, "Authorization: Bearer" (nothing after it) read every page.
    with pytest.raises(ConfigError, match="RAILGUARD_READ_TOKEN"):
        load_environment({"RAILGUARD_READ_TOKEN": value})


def test_a_pasted_read_tokens_newline_is_not_part_of_it() -> None:
    # A header cannot carry the newline: nobody could have presented the token.
    env = load_environment({"RAILGUARD_READ_TOKEN": TOKEN + "\n"})
    assert env.read_token is not None
    assert env.read_token.get_secret_value() == TOKEN


async def test_head_on_the_summary_sends_no_body(stage: Stage) -> None:
    # A body after a HEAD's headers is read by the client as the next response.
    async for port in served(stage, {}):
        for accept in (b"application/json", b"text/html"):
            got = await exchange(
                port,
                b"HEAD /status HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            head, _, rest = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert rest.startswith(b"HTTP/1.1 200 "), rest[:200]


async def test_a_client_leaving_mid_stream_is_no_error(
    stage: Stage, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_routes, "PIECE", 8)  # many pieces: the client leaves between
    caplog.set_level(logging.DEBUG)
    async for port in served(stage, {}):
        for accept in (b"text/html", b"application/json"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"GET /status?history=1 HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n"
            )
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.abort()
            for _ in range(50):  # the handler's remaining pieces, each a turn of the loop
                await asyncio.sleep(0)
        assert await exchange(
            port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_format_neither_html_nor_json_or_given_twice_is_a_400(stage: Stage) -> None:
    # README: a parameter given twice is a 400; format=xml was answered as JSON, and
    # format=html&format=json as the page.
    async for port in served(stage, {}):
        for path in (
            b"/status?format=xml",
            b"/status?format=html&format=json",
            b"/status/web?format=",
            b"/status/web?format=json&format=json",
        ):
            got = await exchange(
                port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert got.startswith(b"HTTP/1.1 400 "), (path, got[:200])
            assert b'{"error": "' in got, got
            assert b"format" in got.partition(b'{"error": "')[2], got
        got = await exchange(
            port, b"GET /status?format=html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert got.startswith(b"HTTP/1.1 200 ")
        assert b"<!DOCTYPE html>" in got


async def test_a_path_under_status_that_names_no_page_gets_a_json_404(stage: Stage) -> None:
    # A trailing slash (/status/, /status/web/) or a deeper path was aiohttp's text 404.
    async for port in served(stage, {}):
        for path in (b"/status/", b"/status/web/", b"/status/web/x", b"/status//web"):
            got = await exchange(
                port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404 "), (path, got[:200])
            assert b"Content-Type: application/json" in head, (path, head)
            assert body.startswith(b'{"error": "'), (path, body)


async def test_a_client_leaving_before_the_answer_is_no_error(
    stage: Stage, caplog: pytest.LogCaptureFixture
) -> None:
    # Gone while the summary was built: the headers had nowhere to go.
    caplog.set_level(logging.DEBUG)
    async for port in served(stage, {}):
        for accept in (b"text/html", b"application/json"):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n")
            await writer.drain()
            writer.transport.abort()
            for _ in range(100):  # the handler's steps, each a turn of the loop
                await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
