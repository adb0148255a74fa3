"""RAILGUARD_READ_TOKEN: /status and /metrics for whoever presents it; health stays open."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.clock import FakeClock
from monitor.readauth import presented
from tests.stage import Stage, served

TOKEN = "read-6f1c0d9e2b7a4c58"


async def serve(stage: Stage, environ: dict[str, str]) -> AsyncIterator[str]:
    async for port in served(stage, environ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    yield stage
    await stage.close()


async def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_with_the_token_set_the_pages_want_it_and_health_does_not(stage: Stage) -> None:
    async for url in serve(stage, {"RAILGUARD_READ_TOKEN": TOKEN}):
        for path in ("/status", "/status/web", "/status?tier=production", "/metrics"):
            assert await status_of(url + path) == 401, path
            assert await status_of(url + path, {"Authorization": "Bearer wrong"}) == 401
            assert await status_of(url + path, {"Authorization": f"Bearer {TOKEN}"}) == 200
            assert await status_of(url + path, {"Authorization": basic("sre", TOKEN)}) == 200
            assert await status_of(url + path, {"Authorization": basic(TOKEN, "x")}) == 401
        for path in ("/healthz", "/readyz"):
            assert await status_of(url + path) == 200, path
        async with aiohttp.ClientSession() as session, session.get(url + "/status") as r:
            assert r.headers["WWW-Authenticate"].startswith('Basic realm="railguard"')
            assert TOKEN not in await r.text()


async def test_without_the_token_the_pages_are_open(stage: Stage) -> None:
    async for url in serve(stage, {}):
        assert await status_of(url + "/status") == 200
        assert await status_of(url + "/metrics") == 200


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", b"abc"),
        ("bearer  abc ", b"abc"),
        (basic("u", "p:q"), b"p:q"),
        ("Basic !!!not-base64", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), b""),
        ("Digest abc", None),
        ("", None),
    ],
)
def test_what_an_authorization_header_presents(header: str, token: bytes | None) -> None:
    assert presented(header) == token
