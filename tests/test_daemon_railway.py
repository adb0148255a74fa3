"""The daemon on Railway's own signals: the emulator, one batched request per poll."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from monitor.cli import main
from monitor.clock import FakeClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.model import Phase, Signal
from monitor.planning import build_plan
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.telemetry import Metrics
from tests.helpers import until

TOKEN = "emulator-token"

CONFIG = """
[railway]
poll_interval = "10s"

[tiers.production]
rules = ["error-rate", "memory-high"]
auto_rollback = false  # this file is about signals and polling; tests/test_rollback.py acts

[[services]]
name = "web"
tier = "production"
service_id = "{web}"
environment_id = "{env}"
interval = "5s"  # ticks twice a poll: a poll answered after a tick is taken at the next
error_rate = {{ source = "railway", step = "10s", min_requests = 5 }}
memory = {{ source = "railway", sample_rate = "10s" }}

[services.rules.error-rate]
for = "30s"

[[services]]
name = "api"
tier = "production"
service_id = "{api}"
environment_id = "{env}"
interval = "10s"
error_rate = {{ source = "railway", step = "10s", min_requests = 5 }}
memory = {{ source = "railway", sample_rate = "10s" }}
"""


@pytest.fixture
async def emulator(clock: FakeClock) -> AsyncIterator[tuple[RailwayEmulator, TestServer]]:
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    server = TestServer(emu.app, host="127.0.0.1")
    await server.start_server()
    yield emu, server
    await server.close()


async def test_railway_error_rate_fires_from_one_request_per_poll(
    emulator: tuple[RailwayEmulator, TestServer], clock: FakeClock, write: Callable[..., Path]
) -> None:
    emu, server = emulator
    project = emu.add_project("shop")
    env = emu.add_environment(project.id, "production")
    ids = {}
    for name in ("web", "api"):
        service = emu.add_service(project.id, name)
        deployment = emu.add_deployment(service.id, env.id, created_at=clock.time() - 3600)
        emu.set_traffic(service.id, env.id, 2, at=clock.time() - 600)
        emu.set_memory(deployment.id, 0.2, 1.0, at=clock.time() - 600)
        ids[name] = service.id
    environ = {
        "RAILWAY_API_TOKEN": TOKEN,
        "RAILWAY_API_URL": str(server.make_url("/graphql/v2")),
    }
    path = write(CONFIG.format(web=ids["web"], api=ids["api"], env=env.id))
    plan = build_plan(path, load_environment(environ), environ)
    assert plan.services[0].rules[0].max_gap == 20.0  # 2 x the poll interval
    daemon = Daemon(plan, clock=clock, metrics=Metrics(CollectorRegistry()), serve_http=False)
    await daemon.startup()
    assert daemon.poller is not None
    assert daemon.scheduler is not None
    web = daemon.scheduler.workers[0]
    try:
        await until(lambda: daemon.poller.polls == 1, "first poll")  # type: ignore[union-attr]
        emu.set_traffic(ids["web"], env.id, 2, error_ratio=0.5)  # the bad release
        phases = []
        for n in range(2, 8):
            await clock.advance(10)
            await until(lambda n=n: daemon.poller.polls == n, f"poll {n}")  # type: ignore[misc,union-attr]
            await clock.advance(0)
            phases.append(web.states["error-rate"].phase)
        assert Phase.FIRING in phases
        assert web.latest[Signal.ERROR_RATE].value == pytest.approx(0.5)
        assert web.latest[Signal.MEMORY].value == pytest.approx(0.2)
        api = daemon.scheduler.workers[1]
        assert api.states["error-rate"].phase is Phase.INACTIVE
        # Two services, seven polls: seven requests, each asking about both services (and
        # about Railway itself: its incidents hold rollbacks).
        polls = [r for r in emu.requests if r.operation_name == "RailguardTick"]
        assert len(polls) == len(emu.requests) == 7
        assert sorted(polls[0].fields) == sorted(
            ["deployments", "httpMetricsGroupedByStatus", "metrics"] * 2 + ["platformStatus"]
        )
    finally:
        await daemon.shutdown()


def test_run_refuses_to_start_without_a_railway_token(
    write: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("RAILWAY_API_TOKEN", "RAILWAY_PROJECT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    path = write(CONFIG.format(web="s1", api="s2", env="e1"))
    out = io.StringIO()
    assert main(["check", "--config", str(path)], stdout=out) == 0
    assert "polling 360 requests/hour of 1000 (36%), 200/hour kept for rollbacks" in out.getvalue()
    assert "warning: services web, api are on Railway, but neither" in out.getvalue()
    assert main(["run", "--config", str(path)]) == 2
    assert "neither RAILWAY_API_TOKEN nor RAILWAY_PROJECT_TOKEN is set" in capsys.readouterr().err


def test_railway_signals_need_railway_ids(write: Callable[..., Path]) -> None:
    from monitor.errors import ConfigError

    text = CONFIG.format(web="s1", api="s2", env="e1").replace(
        'service_id = "s1"\nenvironment_id = "e1"\n', ""
    )
    with pytest.raises(ConfigError, match="from source 'railway' need the service's service_id"):
        build_plan(write(text), load_environment({}), {})


def test_check_says_where_latency_comes_from(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILWAY_API_TOKEN", TOKEN)
    text = CONFIG.format(web="s1", api="s2", env="e1").replace(
        'memory = { source = "railway", sample_rate = "10s" }\n\n[services.rules.error-rate]',
        'memory = { source = "railway", sample_rate = "10s" }\n'
        'latency = { source = "railway", step = "10s" }\n\n[services.rules.error-rate]',
    )
    out = io.StringIO()
    assert main(["check", "--config", str(write(text))], stdout=out) == 0
    web = out.getvalue().split("  web [production]")[1].split("  api [production]")[0]
    assert "    latency p95 from railway\n" in web
    api = out.getvalue().split("  api [production]")[1].split("warning:")[0]
    assert "latency" not in api
