"""The sample app as its users see it: over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from monitor.clock import FakeClock
from monitor.sandbox.sample_app import (
    MIB,
    REGISTRY_KEY,
    STATE_KEY,
    WAKE_KEY,
    create_app,
    parse_args,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        yield session


@pytest.fixture
async def app() -> web.Application:
    return create_app(release="v7")


@pytest.fixture
async def server(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app, host="127.0.0.1")
    async with server:
        yield server


class Client:
    """A few HTTP calls against one running sample app."""

    def __init__(self, session: aiohttp.ClientSession, port: int | None) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, str, str]:
        async with self.session.get(self.base + path) as response:
            return response.status, await response.text(), response.headers["X-Release"]

    async def control(self, changes: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + "/_control", json=changes) as response:
            return response.status, await response.json()

    async def statuses(self, path: str, count: int) -> list[int]:
        return [(await self.get(path))[0] for _ in range(count)]

    async def metrics(self) -> dict[str, float]:
        """Every sample in /metrics, keyed by ``name{labels}``."""
        _, text, _ = await self.get("/metrics")
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] = sample.value
        return found


@pytest.fixture
def client(session: aiohttp.ClientSession, server: TestServer) -> Client:
    return Client(session, server.port)


async def test_health_ok(client: Client) -> None:
    status, body, release = await client.get("/health")
    assert status == 200
    assert body == '{"status": "ok", "release": "v7"}'
    assert release == "v7"


@pytest.mark.parametrize("path", ["/", "/work"])
async def test_traffic(client: Client, path: str) -> None:
    status, body, release = await client.get(path)
    assert (status, body, release) == (200, "served by v7\n", "v7")


async def test_error_mode(client: Client) -> None:
    await client.control({"mode": "error"})
    status, body, _ = await client.get("/health")
    assert status == 500
    assert '"status": "error"' in body
    assert await client.statuses("/work", 3) == [500, 500, 500]


async def test_flap_mode_alternates_starting_with_a_failure(client: Client) -> None:
    await client.control({"mode": "flap"})
    assert await client.statuses("/health", 5) == [500, 200, 500, 200, 500]
    assert await client.statuses("/", 2) == [200, 200]  # traffic is not affected
    await client.control({"mode": "flap"})  # choosing the mode again restarts the pattern
    assert await client.statuses("/health", 2) == [500, 200]


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a request reached its handler)."""
    # FakeClock has no hook for "someone started sleeping", so yield until it shows.
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0)


async def test_slow_mode_answers_after_the_delay(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    app = create_app(clock=clock)
    app[STATE_KEY].update({"mode": "slow", "delay": 30})
    async with TestServer(app, host="127.0.0.1") as server:
        client = Client(session, server.port)
        request = asyncio.create_task(client.get("/health"))
        await asyncio.wait_for(_until(lambda: clock.sleepers == 1), 5)
        await clock.advance(29.9)
        assert not request.done()
        await clock.advance(0.1)
        status, _, _ = await asyncio.wait_for(request, 5)
    assert status == 200


async def test_slow_health_does_not_hold_up_shutdown(session: aiohttp.ClientSession) -> None:
    # A plain AppRunner does not cancel handlers when the client leaves; shutdown must
    # still release a waiting /health at once rather than after shutdown_timeout.
    clock = FakeClock()
    app = create_app(clock=clock)
    app[STATE_KEY].update({"mode": "slow", "delay": 3600})
    runner = web.AppRunner(app, shutdown_timeout=60)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    request = asyncio.create_task(Client(session, port).get("/health"))
    await asyncio.wait_for(_until(lambda: clock.sleepers == 1), 5)
    await asyncio.wait_for(runner.cleanup(), 5)
    status, body, _ = await asyncio.wait_for(request, 5)
    assert (status, body) == (503, '{"status": "shutting down"}')
    assert clock.sleepers == 0


async def test_hang_mode_never_answers(client: Client) -> None:
    await client.control({"mode": "hang"})
    timeout = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(TimeoutError):
        async with client.session.get(client.base + "/health", timeout=timeout):
            pass
    assert (await client.get("/work"))[0] == 200  # traffic still flows


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        (0.0, [200] * 8),
        (0.5, [200, 500] * 4),
        (0.25, [200, 200, 200, 500] * 2),
        (1.0, [500] * 8),
    ],
)
async def test_error_ratio_is_exact(client: Client, ratio: float, expected: list[int]) -> None:
    await client.control({"error_ratio": ratio})
    assert await client.statuses("/work", 8) == expected
    assert (await client.get("/health"))[0] == 200  # health is not traffic


async def test_error_ratio_over_many_requests(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.update({"error_ratio": 0.1})
    assert sum(state.next_traffic_fails() for _ in range(1000)) == 100


async def test_metrics(client: Client) -> None:
    await client.control({"error_ratio": 0.5})
    await client.statuses("/", 4)
    await client.get("/health")
    metrics = await client.metrics()
    assert metrics['http_requests_total{code="200"}'] == 3.0
    assert metrics['http_requests_total{code="500"}'] == 2.0
    assert metrics["process_resident_memory_bytes{}"] == 100 * MIB
    assert metrics["app_memory_limit_bytes{}"] == 512 * MIB

    await client.control({"memory_bytes": 480 * MIB, "memory_limit_bytes": 1024 * MIB})
    metrics = await client.metrics()
    assert metrics["process_resident_memory_bytes{}"] == 480 * MIB
    assert metrics["app_memory_limit_bytes{}"] == 1024 * MIB


async def test_each_app_has_its_own_registry() -> None:
    first, second = create_app(), create_app()
    assert first[REGISTRY_KEY] is not second[REGISTRY_KEY]
    second[STATE_KEY].update({"memory_bytes": 1})
    assert first[REGISTRY_KEY].get_sample_value("process_resident_memory_bytes") == 100 * MIB
    assert second[REGISTRY_KEY].get_sample_value("process_resident_memory_bytes") == 1


async def test_control_state_round_trip(client: Client) -> None:
    status, state = await client.control({"mode": "slow", "delay": 2.5, "release": "v8"})
    assert status == 200
    assert state == {
        "mode": "slow",
        "delay": 2.5,
        "error_ratio": 0.0,
        "latency": 0.0,
        "memory_bytes": 100 * MIB,
        "memory_limit_bytes": 512 * MIB,
        "release": "v8",
        "asleep": False,
        "cold_start": 0.0,
        "deployment_id": "",
        "commit": "",
        "overlap": 0.0,
        "overlap_ratio": 1.0,
    }
    async with client.session.get(client.base + "/_control") as response:
        assert await response.json() == state
        assert response.headers["X-Release"] == "v8"


async def test_a_sleeping_app_answers_its_first_request_502_and_wakes(
    client: Client, app: web.Application
) -> None:
    woken: list[str] = []
    app[WAKE_KEY].append(lambda: woken.append("woken"))
    await client.control({"asleep": True})
    assert woken == []  # the control route does not wake it
    assert await client.statuses("/health", 3) == [502, 200, 200]
    assert woken == ["woken"]
    assert (await client.control({}))[1]["asleep"] is False
    metrics = await client.metrics()
    assert 'http_requests_total{code="502"}' not in metrics  # Railway's edge answered it


async def test_a_cold_start_answers_502_until_it_is_over(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    app = create_app(clock=clock)
    app[STATE_KEY].update({"asleep": True, "cold_start": 5})
    async with TestServer(app, host="127.0.0.1") as server:
        client = Client(session, server.port)
        assert await client.statuses("/work", 2) == [502, 502]  # any route wakes it
        await clock.advance(4.9)
        assert await client.statuses("/health", 1) == [502]
        await clock.advance(0.1)
        assert await client.statuses("/health", 2) == [200, 200]


async def test_release_header_on_every_response(client: Client) -> None:
    await client.control({"release": "v9"})
    status, body, release = await client.get("/health")
    assert (status, release) == (200, "v9")
    assert '"release": "v9"' in body
    status, _, release = await client.get("/no-such-page")
    assert (status, release) == (404, "v9")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"mode": "sideways"}, "mode", "mode: must be one of ok, error, slow, flap, hang"),
        ({"error_ratio": 1.5}, "error_ratio", "error_ratio: must be between 0 and 1 (got 1.5)"),
        ({"error_ratio": "half"}, "error_ratio", "error_ratio: must be a number (got 'half')"),
        ({"delay": True}, "delay", "delay: must be a number (got True)"),
        ({"delay": -1}, "delay", "delay: must be between 0 and 86400 (got -1)"),
        ({"memory_bytes": -1}, "memory_bytes", "memory_bytes: must be a whole number"),
        ({"memory_bytes": 1.5}, "memory_bytes", "memory_bytes: must be a whole number"),
        ({"release": ""}, "release", "release: must be a non-empty string (got '')"),
        ({"asleep": "yes"}, "asleep", "asleep: must be true or false (got 'yes')"),
        ({"cold_start": -1}, "cold_start", "cold_start: must be between 0 and 3600 (got -1)"),
        ({"colour": "red"}, "colour", "colour: unknown field (known: mode, delay, error_ratio"),
    ],
)
async def test_bad_control_input(
    client: Client, changes: dict[str, Any], field: str, message: str
) -> None:
    status, body = await client.control(changes)
    assert status == 400
    assert body["field"] == field
    assert body["value"] == changes[field]
    assert body["error"].startswith(message)


async def test_bad_control_input_changes_nothing(client: Client) -> None:
    status, _ = await client.control({"mode": "error", "error_ratio": 2})
    assert status == 400
    async with client.session.get(client.base + "/_control") as response:
        state = await response.json()
    assert (state["mode"], state["error_ratio"]) == ("ok", 0.0)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b""])
async def test_control_body_must_be_a_json_object(client: Client, body: bytes) -> None:
    async with client.session.post(client.base + "/_control", data=body) as response:
        assert response.status == 400
        assert await response.json() == {"error": "the body must be a JSON object"}


def test_parse_args() -> None:
    args = parse_args(["--port", "8001"])
    assert (args.port, args.host, args.release) == (8001, "127.0.0.1", "v1")
    args = parse_args(["--port", "9", "--host", "0.0.0.0", "--release", "v2"])
    assert (args.port, args.host, args.release) == (9, "0.0.0.0", "v2")
    with pytest.raises(SystemExit) as exit_info:
        parse_args([])
    assert exit_info.value.code == 2


async def test_runs_standalone(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        "-m",
        "monitor.sandbox.sample_app",
        "--port",
        str(port),
        "--release",
        "v3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert f"http://127.0.0.1:{port}" in line.decode()
        status, _, release = await Client(session, port).get("/health")
        assert (status, release) == (200, "v3")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0
