"""The health source against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from monitor.clock import FakeClock, SystemClock
from monitor.errors import ProbeError
from monitor.model import Sample, Signal
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.sources.base import Source
from monitor.sources.health import HealthCheck, HealthSource

STATUS = {"status": "ok", "checks": {"db": {"ok": True}, "cache": {"ok": False}}}
DOCUMENT = {
    **STATUS,
    "count": 3,
    "version": "1.2",
    "items": [{"name": "a"}, {"name": "b"}],
    "notes": "n" * 100,
}


def _target() -> web.Application:
    """A service whose routes each show one thing a health check can meet."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status\n")

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="all systems go\n")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1000)

    async def stream(request: web.Request) -> web.StreamResponse:
        # Chunked, no Content-Length: only the bounded read can notice the size.
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"y" * 200)
        await response.write_eof()
        return response

    async def token(request: web.Request) -> web.Response:
        authorized = request.headers.get("X-Token") == "s3cret"
        return web.Response(status=200 if authorized else 401)

    async def only_head(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.match_info["to"].replace("_", "/"))

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/text", text)
    app.router.add_get("/big", big)
    app.router.add_get("/stream", stream)
    app.router.add_get("/token", token)
    app.router.add_route("HEAD", "/head", only_head)
    app.router.add_get("/redirect/{to}", redirect)
    return app


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def target() -> AsyncIterator[TestServer]:
    server = TestServer(_target(), host="127.0.0.1")
    async with server:
        yield server


Probe = Callable[..., Awaitable[Sample]]


@pytest.fixture
def probe(session: aiohttp.ClientSession, target: TestServer) -> Probe:
    """Probe a path on the target (or a full URL) once with the given check settings."""

    async def run(path: str, **settings: Any) -> Sample:
        url = path if "://" in path else f"http://127.0.0.1:{target.port}{path}"
        source = HealthSource(HealthCheck(url=url, **settings), session, SystemClock())
        samples = await source.collect(1234.5)
        assert len(samples) == 1
        return samples[0]

    return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_healthy_200(probe: Probe, target: TestServer) -> None:
    sample = await probe("/ok")
    assert sample.signal is Signal.HEALTH
    assert sample.at == 1234.5
    assert sample.value == 1.0
    assert sample.reason == ""
    assert sample.detail["status"] == 200
    assert sample.detail["error"] is None
    assert sample.detail["url"] == f"http://127.0.0.1:{target.port}/ok"
    assert sample.detail["latency_ms"] >= 0.0


def test_source_satisfies_protocol(session: aiohttp.ClientSession) -> None:
    source: Source = HealthSource(HealthCheck(url="http://x/"), session, SystemClock())
    assert source.signals == frozenset({Signal.HEALTH})


async def test_latency_comes_from_the_clock(
    session: aiohttp.ClientSession, target: TestServer
) -> None:
    check = HealthCheck(url=f"http://127.0.0.1:{target.port}/ok")
    [sample] = await HealthSource(check, session, FakeClock()).collect(7.0)
    assert sample.value == 1.0
    assert sample.detail["latency_ms"] == 0.0  # the fake clock did not move


async def test_5xx_is_failing_with_the_status(probe: Probe) -> None:
    sample = await probe("/status/503")
    assert sample.value == 0.0
    assert sample.reason == "status 503 (expected 2xx)"
    assert sample.detail["status"] == 503
    assert sample.detail["error"] is None


@pytest.mark.parametrize(
    ("path", "expected", "value", "reason"),
    [
        ("/status/204", [204], 1.0, ""),
        ("/status/301", [200, 301], 1.0, ""),
        ("/ok", [204], 0.0, "status 200 (expected 204)"),
        ("/status/404", [200, 204], 0.0, "status 404 (expected one of 200, 204)"),
    ],
)
async def test_expected_status(
    probe: Probe, path: str, expected: list[int], value: float, reason: str
) -> None:
    sample = await probe(path, expected_status=expected)
    assert (sample.value, sample.reason) == (value, reason)


async def test_redirects_are_followed(probe: Probe) -> None:
    assert (await probe("/redirect/_ok")).value == 1.0


async def test_redirect_loop_is_failing(probe: Probe) -> None:
    sample = await probe("/redirect/_redirect_x")
    assert sample.value == 0.0
    assert sample.reason == "too many redirects (more than 5)"


async def test_redirect_to_another_scheme_is_failing(probe: Probe) -> None:
    sample = await probe("/redirect/ftp:__example_")
    assert sample.value == 0.0
    assert sample.reason.startswith("request failed: NonHttpUrlRedirectClientError")


async def test_body_contains(probe: Probe) -> None:
    assert (await probe("/text", body_contains="systems go")).value == 1.0
    sample = await probe("/text", body_contains="all clear")
    assert sample.value == 0.0
    assert sample.reason == "body does not contain 'all clear'"
    assert sample.detail["status"] == 200


@pytest.mark.parametrize(
    ("path", "equals", "value", "reason"),
    [
        ("status", None, 1.0, ""),
        ("checks.db.ok", None, 1.0, ""),
        ("checks.cache.ok", None, 0.0, "json path checks.cache.ok is false"),
        ("status", "ok", 1.0, ""),
        ("status", "degraded", 0.0, 'json path status is "ok" (expected "degraded")'),
        ("count", 3, 1.0, ""),
        ("count", 3.0, 1.0, ""),
        ("count", 4, 0.0, "json path count is 3 (expected 4)"),
        ("checks.db.ok", True, 1.0, ""),
        ("checks.db.ok", 1, 0.0, "json path checks.db.ok is true (expected 1)"),
        ("version", 1.2, 0.0, 'json path version is "1.2" (expected 1.2)'),
        ("items.1.name", "b", 1.0, ""),
        ("items.0", None, 1.0, ""),
        ("items.2.name", None, 0.0, "json path items.2.name not found (no '2')"),
        ("items.first", None, 0.0, "json path items.first not found (no 'first')"),
        ("checks.queue.ok", None, 0.0, "json path checks.queue.ok not found (no 'queue')"),
        ("status.code", None, 0.0, "json path status.code not found (no 'code')"),
    ],
)
async def test_json_path(
    probe: Probe, path: str, equals: str | float | bool | None, value: float, reason: str
) -> None:
    sample = await probe("/ok", json_path=path, json_equals=equals)
    assert (sample.value, sample.reason) == (value, reason)


async def test_json_value_shown_in_the_reason_is_shortened(probe: Probe) -> None:
    sample = await probe("/ok", json_path="items", json_equals="a list")
    assert sample.value == 0.0
    assert sample.reason.startswith('json path items is [{"name": "a"}, {"name": "b"}] (expected')
    long = await probe("/ok", json_path="notes", json_equals="short")
    assert long.reason == f'json path notes is "{"n" * 76}... (expected "short")'


async def test_json_path_on_a_body_that_is_not_json(probe: Probe) -> None:
    sample = await probe("/text", json_path="status")
    assert sample.value == 0.0
    assert sample.reason == "body is not valid JSON (Expecting value: line 1 column 1 (char 0))"


async def test_body_and_json_conditions_together(probe: Probe) -> None:
    assert (await probe("/ok", body_contains='"db"', json_path="checks.db.ok")).value == 1.0
    sample = await probe("/ok", body_contains="nope", json_path="checks.db.ok")
    assert sample.reason == "body does not contain 'nope'"


async def test_body_over_the_limit_by_content_length(probe: Probe) -> None:
    sample = await probe("/big", body_contains="x", max_body_bytes=999)
    assert sample.value == 0.0
    assert sample.reason == "body is 1000 bytes, over max_body_bytes 999"
    assert (await probe("/big", body_contains="x", max_body_bytes=1000)).value == 1.0


async def test_body_over_the_limit_without_content_length(probe: Probe) -> None:
    sample = await probe("/stream", body_contains="y", max_body_bytes=1999)
    assert sample.value == 0.0
    assert sample.reason == "body is over max_body_bytes 1999"
    assert (await probe("/stream", body_contains="y", max_body_bytes=2000)).value == 1.0


async def test_body_is_ignored_without_a_body_condition(probe: Probe) -> None:
    assert (await probe("/big", max_body_bytes=10)).value == 1.0


async def test_head_method(probe: Probe) -> None:
    assert (await probe("/head", method="HEAD")).value == 1.0
    assert (await probe("/head")).reason == "status 405 (expected 2xx)"


async def test_headers_are_sent(probe: Probe) -> None:
    assert (await probe("/token")).reason == "status 401 (expected 2xx)"
    assert (await probe("/token", headers={"X-Token": "s3cret"})).value == 1.0


async def test_password_is_kept_out_of_the_detail(probe: Probe, target: TestServer) -> None:
    sample = await probe(f"http://probe:pw@127.0.0.1:{target.port}/ok")
    assert sample.value == 1.0
    assert sample.detail["url"] == f"http://probe:***@127.0.0.1:{target.port}/ok"


@pytest.mark.parametrize("mode", ["hang", "slow"])
async def test_timeout(session: aiohttp.ClientSession, mode: str) -> None:
    app = create_app()
    app[STATE_KEY].update({"mode": mode, "delay": 30})
    async with TestServer(app, host="127.0.0.1") as server:
        check = HealthCheck.model_validate(
            {"url": f"http://127.0.0.1:{server.port}/health", "timeout": "200ms"},
            context={"environ": {}},
        )
        [sample] = await HealthSource(check, session, SystemClock()).collect(0.0)
    assert sample.value == 0.0
    assert sample.reason == "timeout after 200ms"
    assert sample.detail["status"] is None
    assert sample.detail["error"] == "TimeoutError"
    assert sample.detail["latency_ms"] >= 200.0


async def test_connection_refused(probe: Probe) -> None:
    port = _free_port()
    sample = await probe(f"http://127.0.0.1:{port}/health")
    assert sample.value == 0.0
    assert sample.reason == f"connection refused: 127.0.0.1:{port}"
    assert sample.detail["status"] is None
    assert sample.detail["error"].startswith("ClientConnectorError: Cannot connect")


async def _serve(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> Any:
    return await asyncio.start_server(handler, "127.0.0.1", 0)


async def test_connection_reset(probe: Probe) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # Linger 0: close with RST rather than FIN.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with await _serve(reset) as server:
        port = server.sockets[0].getsockname()[1]
        sample = await probe(f"http://127.0.0.1:{port}/health")
    assert sample.value == 0.0
    assert sample.reason == "connection reset: [Errno 104] Connection reset by peer"


async def test_connection_closed_before_an_answer(probe: Probe) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    async with await _serve(hang_up) as server:
        port = server.sockets[0].getsockname()[1]
        sample = await probe(f"http://127.0.0.1:{port}/health")
    assert sample.value == 0.0
    assert sample.reason == "connection closed by the server before a complete response"


async def test_truncated_body(probe: Probe) -> None:
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        await writer.drain()
        writer.close()

    async with await _serve(truncate) as server:
        port = server.sockets[0].getsockname()[1]
        sample = await probe(f"http://127.0.0.1:{port}/", body_contains="abc")
    assert sample.value == 0.0
    assert sample.detail["status"] == 200
    assert sample.reason.startswith("body read failed: Response payload is not completed")


async def test_tls_error(probe: Probe, target: TestServer) -> None:
    sample = await probe(f"https://127.0.0.1:{target.port}/ok")
    assert sample.value == 0.0
    assert sample.reason.startswith("tls error: Cannot connect to host 127.0.0.1")


class _NoSuchHost(AbstractResolver):
    """A resolver that knows no names, as DNS does for a deleted service."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise OSError(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_dns_failure() -> None:
    connector = aiohttp.TCPConnector(resolver=_NoSuchHost())
    async with aiohttp.ClientSession(connector=connector) as session:
        check = HealthCheck(url="http://web.railway.internal/health")
        [sample] = await HealthSource(check, session, SystemClock()).collect(0.0)
    assert sample.value == 0.0
    assert sample.reason == "dns lookup failed: web.railway.internal"


async def test_other_connect_failure(target: TestServer) -> None:
    # Binding to an address this host does not have fails before any packet is sent.
    connector = aiohttp.TCPConnector(local_addr=("203.0.113.7", 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        check = HealthCheck(url=f"http://127.0.0.1:{target.port}/ok")
        [sample] = await HealthSource(check, session, SystemClock()).collect(0.0)
    assert sample.value == 0.0
    assert sample.reason.startswith(f"cannot connect: 127.0.0.1:{target.port}: ")


async def test_closed_session_is_a_probe_error(target: TestServer) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    source = HealthSource(
        HealthCheck(url=f"http://127.0.0.1:{target.port}/ok"), session, SystemClock()
    )
    with pytest.raises(ProbeError, match="session is closed"):
        await source.collect(0.0)


# -- configuration -----------------------------------------------------------------------


def _load(data: dict[str, Any], environ: dict[str, str] | None = None) -> HealthCheck:
    return HealthCheck.model_validate(data, context={"environ": environ or {}})


def test_defaults() -> None:
    check = _load({"url": "https://web.up.railway.app/health"})
    assert check.method == "GET"
    assert check.timeout == 5.0
    assert check.expected_status is None
    assert check.max_body_bytes == 65536
    assert check.headers == {}
    assert _load({"url": "http://x/", "expected_status": None}).expected_status is None


def test_durations_and_environment_are_expanded() -> None:
    check = _load(
        {
            "url": "${BASE}/health",
            "timeout": "1.5s",
            "headers": {"Authorization": "Bearer ${TOKEN}"},
        },
        {"BASE": "https://web.up.railway.app", "TOKEN": "abc"},
    )
    assert check.url == "https://web.up.railway.app/health"
    assert check.timeout == 1.5
    assert check.headers == {"Authorization": "Bearer abc"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "ftp://example.com/"}, "must be an http:// or https:// URL with a host"),
        ({"url": "example.com/health"}, "must be an http:// or https:// URL"),
        ({"url": "http://[::1/health"}, "must be an http:// or https:// URL"),
        ({"url": "${NOPE}/health"}, "environment variable NOPE is not set"),
        ({"url": "http://x/", "timeout": "0s"}, "timeout must be more than 0s"),
        ({"url": "http://x/", "timeout": 5}, "durations are strings with a unit"),
        ({"url": "http://x/", "expected_status": [200, 42]}, "expected_status 42 is not an"),
        ({"url": "http://x/", "expected_status": []}, "must list at least one status"),
        ({"url": "http://x/", "json_path": "checks..ok"}, "has an empty segment"),
        ({"url": "http://x/", "max_body_bytes": 0}, "max_body_bytes must be more than 0"),
        ({"url": "http://x/", "json_equals": "ok"}, "json_equals needs json_path"),
        ({"url": "http://x/", "method": "HEAD", "body_contains": "ok"}, "HEAD response"),
        ({"url": "http://x/", "method": "HEAD", "json_path": "status"}, "HEAD response"),
        ({"url": "http://x/", "method": "POST"}, "Input should be 'GET' or 'HEAD'"),
        ({"url": "http://x/", "interval": "10s"}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_config(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        _load(data)


def test_json_equals_keeps_its_type() -> None:
    def equals(value: object) -> object:
        return _load({"url": "http://x/", "json_path": "a", "json_equals": value}).json_equals

    assert equals(True) is True
    assert type(equals(1)) is int
    assert equals(1.5) == 1.5
    assert equals("ok") == "ok"
