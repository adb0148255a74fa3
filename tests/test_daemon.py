"""The daemon end to end: a real sample app, real HTTP, rule transitions in logs and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from monitor.clock import FakeClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.model import Signal
from monitor.planning import build_plan
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.telemetry import Metrics
from tests.helpers import until

CONFIG = """
[tiers.preview]
rules = ["health-failing"]

[daemon]
shutdown_timeout = "2s"

[[services]]
name = "web"
tier = "preview"
health = {{ url = "{url}/health", timeout = "1s" }}
interval = "10s"

[services.rules.health-failing]
for = "30s"
"""


@pytest.fixture
async def app_server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(release="v1"), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_daemon_detects_a_failing_service(
    app_server: TestServer, clock: FakeClock, write: Callable[..., Path]
) -> None:
    url = str(app_server.make_url("")).rstrip("/")
    environ = {"PORT": "0", "RAILGUARD_HOST": "127.0.0.1"}
    plan = build_plan(write(CONFIG.format(url=url)), load_environment(environ), environ)
    daemon = Daemon(plan, clock=clock, metrics=Metrics(CollectorRegistry()))
    async with aiohttp.ClientSession() as http:

        async def get(path: str) -> tuple[int, str]:
            async with http.get(f"http://127.0.0.1:{daemon.port}{path}") as r:
                return r.status, await r.text()

        with capture_logs() as logs:
            await daemon.startup()
            assert daemon.scheduler is not None
            (worker,) = daemon.scheduler.workers
            await until(lambda: worker.ticks == 1, "first tick")
            status, text = await get("/metrics")
            assert status == 200
            labels = {"service": "web", "tier": "preview"}
            assert metric(text, "railguard_signal_value", signal="health", **labels) == 1.0
            assert (await get("/healthz"))[0] == 200
            assert (await get("/readyz"))[0] == 200

            app_server.app[STATE_KEY].update({"mode": "error"})
            phases = []
            for n in range(2, 7):  # ticks at 10, 20, 30, 40, 50
                await clock.advance(10)
                await until(lambda n=n: worker.ticks == n, f"tick {n}")  # type: ignore[misc]
                phases.append(worker.states["health-failing"].phase.value)
            assert phases == ["pending", "pending", "pending", "firing", "firing"]
            sample = worker.latest[Signal.HEALTH]
            assert sample.value == 0.0
            assert "500" in sample.reason

            _, text = await get("/metrics")
            rule = {**labels, "rule": "health-failing"}
            assert metric(text, "railguard_rule_state", **rule) == 2
            assert (
                metric(text, "railguard_rule_transitions_total", transition="firing", **rule) == 1
            )
            assert (
                metric(text, "railguard_probes_total", outcome="failing", signal="health", **labels)
                == 5
            )
            status, body = await get("/status")
            assert status == 200
            (summary,) = json.loads(body)["services"]
            assert (summary["name"], summary["state"]) == ("web", "firing")
            assert summary["firing"] == ["health-failing"]
            status, body = await get("/status/web")
            assert status == 200
            document = json.loads(body)
            web = document["service"]
            assert web["rules"]["health-failing"]["phase"] == "firing"
            assert [v for _, v in web["rules"]["health-failing"]["history"]] == [1.0] + [0.0] * 5
            assert web["railway"] is None  # watched only: no Railway ids
            assert document["timeline"] == []  # no store: nothing recorded

            daemon.request_stop()
            await daemon.main_loop()
            await daemon.shutdown()
            assert daemon.readiness() == (False, {"reason": "stopping"})

    events = [e["event"] for e in logs]
    assert events[0] == "railguard started"
    assert events.count("rule pending") == 1
    firing = next(e for e in logs if e["event"] == "rule firing")
    assert firing["log_level"] == "warning"
    assert firing["service"] == "web"
    assert len(firing["evidence"]) == 4  # samples at 10, 20, 30, 40
    assert events[-1] == "railguard stopped"


async def test_liveness_fails_when_ticks_stall(
    app_server: TestServer, clock: FakeClock, write: Callable[..., Path]
) -> None:
    url = str(app_server.make_url("")).rstrip("/")
    app_server.app[STATE_KEY].update({"mode": "hang"})
    config = CONFIG.format(url=url).replace('timeout = "1s"', 'timeout = "60s"')
    plan = build_plan(write(config), load_environment({}), {})
    daemon = Daemon(plan, clock=clock, metrics=Metrics(CollectorRegistry()), serve_http=False)
    assert daemon.liveness() == (False, {"reason": "not started"})
    assert daemon.readiness() == (False, {"reason": "starting"})
    await daemon.startup()
    assert daemon.liveness()[0] is True
    await clock.advance(31)  # the tick hangs at the app: no timeout fires on a fake clock
    ok, detail = daemon.liveness()
    assert (ok, detail["stalled"]) == (False, ["web"])
    assert daemon.status()["services"]
    stopping = asyncio.ensure_future(daemon.shutdown())
    await clock.advance(1.9)
    assert not stopping.done()  # shutdown_timeout is 2s: the hung tick still has time
    await clock.advance(0.2)
    await until(stopping.done, "bounded shutdown")
    await stopping


async def test_run_exits_cleanly_on_sigterm(
    app_server: TestServer, write: Callable[..., Path]
) -> None:
    url = str(app_server.make_url("")).rstrip("/")
    path = write(CONFIG.format(url=url))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAILGUARD_")},
        "PORT": str(port),
        "RAILGUARD_HOST": "127.0.0.1",
        "RAILGUARD_LOG_FORMAT": "json",
        "RAILGUARD_STATE": str(path.parent / "state.db"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitor",
        "run",
        "--config",
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def healthy() -> bool:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            for _ in range(500):
                if await healthy():
                    break
                await asyncio.sleep(0.02)  # waiting for the process to start, not for time
            else:
                pytest.fail("railguard did not start")
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    log = stderr.decode()
    assert '"event": "railguard started"' in log
    assert '"event": "railguard stopped"' in log
