"""Garbage at the HTTP boundary: any body, header or path is a 4xx ``{"error"}``, never a 500.

One real aiohttp server on 127.0.0.1 per module (the real routes of monitor.server, a real
SQLite store, a fake executor that refuses), driven by hypothesis: random bytes, random JSON
(deeply nested too), odd charsets, lone surrogates, absurd rollback ids.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.executor import RollbackRefused
from monitor.plan import Plan
from monitor.planning import build_plan
from monitor.server import create_app
from monitor.store import Store, open_store
from monitor.telemetry import Metrics

TOKEN = "admin-token-0123456789"
HOOK = "hook-secret-abcdef"
CONFIG = """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
service_id = "svc"
environment_id = "env"
"""
FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ADMIN_POSTS = ("services/web/rollback", "services/web/freeze", "services/web/unfreeze")


class RefusingExecutor:
    """Every manual rollback is refused: the routes' input handling is what is tested."""

    async def rollback(self, name: str, *, reason: str, actor: str, to: str | None = None) -> Any:
        raise RollbackRefused(f"{name}: refused by the test")


@dataclass
class FakeDaemon:
    """What the server asks of a daemon, with a real store."""

    plan: Plan
    store: Store
    clock: FakeClock
    metrics: Metrics
    executor: Any = None
    poller: Any = None

    def status(self) -> dict[str, object]:
        return {"services": []}

    def liveness(self) -> tuple[bool, dict[str, object]]:
        return True, {}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return True, {}

    async def status_document(self) -> dict[str, Any]:
        return {}


@dataclass
class Server:
    loop: asyncio.AbstractEventLoop
    session: aiohttp.ClientSession
    url: str

    def send(
        self, method: str, path: str, data: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """(status, content type, body text) of one request."""

        async def go() -> tuple[int, str, str]:
            async with self.session.request(
                method, self.url + path, data=data, headers=headers or {}
            ) as response:
                return response.status, response.content_type, await response.text()

        return self.loop.run_until_complete(go())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, on its own event loop (hypothesis tests are synchronous)."""
    tmp = tmp_path_factory.mktemp("http")
    path = tmp / "railguard.toml"
    path.write_text(CONFIG)
    environ = {"RAILGUARD_ADMIN_TOKEN": TOKEN, "RAILGUARD_WEBHOOK_SECRET": HOOK}
    plan = build_plan(path, load_environment(environ), environ)
    loop = asyncio.new_event_loop()

    async def start() -> tuple[aiohttp.web.AppRunner, Server, Store]:
        store = await open_store(Path(tmp / "state.db"))
        clock = FakeClock()
        daemon = FakeDaemon(plan, store, clock, Metrics(CollectorRegistry()), RefusingExecutor())
        runner = aiohttp.web.AppRunner(create_app(daemon, daemon.metrics))
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        return runner, Server(loop, session, f"http://127.0.0.1:{port}"), store

    runner, srv, store = loop.run_until_complete(start())
    try:
        yield srv
    finally:
        loop.run_until_complete(srv.session.close())
        loop.run_until_complete(runner.cleanup())
        loop.run_until_complete(store.close())
        loop.close()


def assert_refused_or_served(status: int, kind: str, text: str) -> None:
    """Below 500; an error is JSON ``{"error": "..."}`` that says something."""
    assert status < 500, text
    if status >= 400:
        assert kind == "application/json", (status, text)
        message = json.loads(text)["error"]
        assert isinstance(message, str)
        assert message
        assert "Traceback" not in message


def auth(**more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **more}


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(["reason", "confirm", "to", "until"]) | st.text(max_size=10)
field_values = (
    json_values
    | st.sampled_from(["CONFIRM", "2h", "1e400s", "99999999999999999999d", "\ud800", "r\udfff"])
    | st.text(max_size=30)
)
objects = st.dictionaries(field_names, field_values, max_size=4)


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def encoded(value: Any) -> bytes:
    """JSON as a client might send it: lone surrogates escaped, NaN as the bare word."""
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    objects.map(encoded),
    json_values.map(encoded),
    st.tuples(st.integers(1, 200_000), st.sampled_from(["list", "dict"])).map(lambda a: deep(*a)),
    st.sampled_from(
        [
            b"",
            b"\xff\xfe\x00",
            b'{"reason": "\\ud800", "confirm": "CONFIRM"}',
            b'{"reason": "x", "until": NaN}',
            b'{"reason": Infinity}',
            b'{"reason": "r"}',
            b'"just a string"',
            b"[1, 2]",
            b"\xef\xbb\xbf{}",
        ]
    ),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=bogus",
        "application/json; charset=utf-16",
        "application/json; charset=",
        "text/plain; charset=latin-1",
        "application/json; charset=UTF-8",
        "garbage;;;=",
    ]
)


@FAST
@given(path=st.sampled_from(ADMIN_POSTS), body=bodies, content_type=content_types)
def test_admin_posts_refuse_garbage_with_a_4xx(
    server: Server, path: str, body: bytes, content_type: str | None
) -> None:
    headers = auth() if content_type is None else auth(**{"Content-Type": content_type})
    assert_refused_or_served(*server.send("POST", f"/api/v1/{path}", body, headers))


@FAST
@given(body=bodies, content_type=content_types)
def test_the_webhook_refuses_garbage_with_a_4xx(
    server: Server, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert_refused_or_served(*server.send("POST", f"/webhooks/railway/{HOOK}", body, headers))


rollback_ids = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=25),
    st.text(min_size=1, max_size=20).filter(lambda t: "/" not in t and t not in (".", "..")),
    st.sampled_from(["99999999999999999999999", "١٢٣", "9" * 5000, "00", "0x10", "1e3"]),
)


@FAST
@given(rollback_id=rollback_ids, actor=st.text(max_size=30))
def test_rollback_ids_that_cannot_exist_are_4xx(
    server: Server, rollback_id: str, actor: str
) -> None:
    from urllib.parse import quote

    path = "/api/v1/rollbacks/" + quote(rollback_id.encode("utf-8", "surrogatepass"), safe="")
    headers = auth()
    if actor.isascii() and actor.isprintable():
        headers["X-Railguard-Actor"] = actor
    status, kind, text = server.send("GET", path, headers=headers)
    assert_refused_or_served(status, kind, text)
    assert status in (400, 404), text


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("services/web/freeze", deep(30_000, "list"), {}, 400, "body: JSON nested too deeply"),
        ("services/web/freeze", b'{"reason": "\\ud800"}', {}, 400, "reason: not valid Unicode"),
        ("services/web/freeze", b"\xff", {}, 400, "body: not valid UTF-8"),
        ("services/web/freeze", b'{"reason": NaN}', {}, 400, "body: not valid JSON"),
        ("services/web/freeze", b"[]", {}, 400, "body: expected a JSON object"),
        (
            "services/web/freeze",
            b"{}",
            {"Content-Type": "application/json; charset=bogus"},
            415,
            "Content-Type: charset 'bogus'",
        ),
        ("services/web/freeze", b" " * (64 * 1024 + 1), {}, 413, "body: larger than"),
        (
            "services/web/freeze",
            b'{"reason": "r", "until": "9999999999d"}',
            {},
            400,
            "until: '9999999999d' is too far away",
        ),
        ("rollbacks/99999999999999999999999", b"", {}, 404, "too large to be a rollback id"),
        ("rollbacks/%D9%A1%D9%A2%D9%A3", b"", {}, 400, "id: not a rollback number: '١٢٣'"),
    ],
)
def test_named_garbage(
    server: Server, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    method = "GET" if path.startswith("rollbacks/") else "POST"
    got, kind, text = server.send(method, f"/api/v1/{path}", body, auth(**headers))
    assert (got, kind) == (status, "application/json"), text
    assert message in json.loads(text)["error"]


def test_the_webhook_names_what_is_wrong(server: Server) -> None:
    for body, message in [
        (deep(10_000, "dict"), "body: JSON nested too deeply"),
        (b"\xc3\x28", "body: not valid UTF-8"),
        (b"Infinity", "body: not valid JSON"),
        (b'"x"', "body: expected a JSON object"),
    ]:
        status, _, text = server.send("POST", f"/webhooks/railway/{HOOK}", body)
        assert status == 400, text
        assert message in json.loads(text)["error"]
    status, _, text = server.send("POST", f"/webhooks/railway/{HOOK}", b'{"type": "\\ud800"}')
    assert status == 202, text  # a lone surrogate in a hint is logged replaced, not a 500
