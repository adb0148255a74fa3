"""Logging formats: JSON lines for machines, key=value for people."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import structlog
from aiohttp import web

from monitor.telemetry import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream)
    structlog.get_logger("t").info("rule firing", service="web", value=0.5)
    structlog.get_logger("t").debug("not shown")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "rule firing"
    assert record["service"] == "web"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_key_value_on_a_terminal() -> None:
    stream = Terminal()
    configure_logging("auto", "debug", stream)
    structlog.get_logger("t").debug("probe", service="web")
    text = stream.getvalue()
    assert "probe" in text
    assert "service" in text
    assert "web" in text
    assert not text.lstrip().startswith("{")


def test_console_format_forced() -> None:
    stream = io.StringIO()
    configure_logging("console", "warning", stream)
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").warning("shown", service="web")
    assert "hidden" not in stream.getvalue()
    assert "service=web" in stream.getvalue()


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a request line over 8 KB
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\x00\r\n\r\n",  # a NUL
    ],
    ids=["long-line", "nul-header"],
)
async def test_a_request_aiohttps_parser_refuses_is_one_warning_not_a_traceback(
    request_bytes: bytes,
) -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/boom", boom)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        assert b" 400 " in (await _raw(port, request_bytes)).split(b"\r\n")[0]
        (line,) = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["event"] == "bad HTTP request refused"
        assert (record["level"], record["status"]) == ("warning", 400)
        assert record["error"]
        assert "Traceback" not in line
        assert "s3cret" not in line  # the refused bytes are not quoted
        # A bug of railguard's own, by contrast, keeps its traceback: in one JSON line.
        answer = await _raw(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b" 500 " in answer.split(b"\r\n")[0]
        (_, bug) = stream.getvalue().splitlines()
        record = json.loads(bug)
        assert record["level"] == "error"
        assert "RuntimeError: a bug" in record["exception"]
    finally:
        await runner.cleanup()
