"""The supervisor: a loop that fails is logged, counted, restarted with backoff; /healthz says so.

The daemon's loops (the Railway poller, the alert router, the digest, the outbox workers) are
each killed with an injected exception and seen restarted, counted in
``railguard_task_restarts_total{task}``, with /healthz red while the loop waits to restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.clock import FakeClock
from monitor.daemon import Daemon
from monitor.supervisor import Supervisor
from monitor.telemetry import Metrics
from tests.helpers import until
from tests.stage import Stage


def restarts(metrics: Metrics, task: str) -> float:
    value = metrics.registry.get_sample_value("railguard_task_restarts_total", {"task": task})
    return value or 0.0


async def test_a_failing_loop_is_restarted_with_backoff_and_counted(clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    supervisor = Supervisor(clock, metrics, backoff_min=1.0, backoff_max=4.0)
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(clock.monotonic())
        if len(runs) <= 3:
            raise RuntimeError(f"boom {len(runs)}")
        await clock.sleep(3600)

    supervisor.start("flaky", flaky)
    await until(lambda: len(runs) == 1, "the first run")
    assert supervisor.problems()["flaky"] == "down: RuntimeError: boom 1 (restarting in 1s)"
    for _ in range(8):
        await clock.advance(1)
    assert runs == [0.0, 1.0, 3.0, 7.0]  # 1s, 2s, 4s between the restarts
    assert restarts(metrics, "flaky") == 3
    assert supervisor.problems() == {}
    await supervisor.stop()


async def test_a_loop_that_returns_is_restarted_too(clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    supervisor = Supervisor(clock, metrics)
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1

    supervisor.start("quits", returns)
    await until(lambda: runs == 1, "the first run")
    assert supervisor.problems()["quits"].startswith("down: it returned")
    await clock.advance(1)
    assert runs == 2
    await supervisor.stop()


async def test_a_stalled_loop_turns_problems_red_and_progress_clears_it(clock: FakeClock) -> None:
    supervisor = Supervisor(clock, Metrics(CollectorRegistry()))
    beat: dict[str, float | None] = {"at": None}

    async def stuck() -> None:
        beat["at"] = clock.monotonic()
        await clock.sleep(3600)

    supervisor.start("stuck", stuck, alive=lambda: beat["at"], stall_after=30.0)
    await until(lambda: beat["at"] is not None, "the first beat")
    await clock.advance(30)
    assert supervisor.problems() == {}
    await clock.advance(1)
    assert supervisor.problems() == {"stuck": "stalled: no progress for 31s"}
    beat["at"] = clock.monotonic()
    assert supervisor.problems() == {}
    await supervisor.stop()


async def test_backoff_starts_over_after_a_long_good_run(clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    supervisor = Supervisor(clock, metrics, backoff_min=1.0, backoff_max=2.0)
    runs: list[float] = []

    async def fails_later() -> None:
        runs.append(clock.monotonic())
        await clock.sleep(5.0 if len(runs) < 3 else 30.0)
        raise RuntimeError("late")

    supervisor.start("late", fails_later)
    await until(lambda: bool(runs), "the first run")
    for _ in range(50):
        await clock.advance(1)
    # 5s run, 1s wait; 5s run, 2s wait; 30s run (> 10 x backoff_max): the wait is 1s again.
    assert runs[:4] == [0.0, 6.0, 13.0, 44.0]
    await supervisor.stop()


# -- the daemon's own loops --------------------------------------------------------------------

ALERTS = """
[[channels]]
type = "console"
"""


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    stage.extra_config = ALERTS
    stage.deploy("v1", ago=3600)
    yield stage
    await stage.close()


def break_once(obj: Any, method: str) -> list[int]:
    """Make ``obj.method`` raise on its next call, then behave again; returns a call counter."""
    real = getattr(obj, method)
    calls = [0]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError(f"injected into {method}")
        return await real(*args, **kwargs)

    setattr(obj, method, broken)
    return calls


@pytest.mark.parametrize(
    ("task", "target", "method"),
    [
        ("railway-poller", "poller", "poll"),
        ("alert-router", "router", "route_new"),
        ("alert-digest", "digest", "send_due"),
        ("outbox:console-0", "outbox", "outbox_head"),
    ],
)
async def test_each_daemon_loop_is_restarted_counted_and_healthz_red_meanwhile(
    stage: Stage, task: str, target: str, method: str
) -> None:
    daemon: Daemon = await stage.start_daemon()
    await stage.run_for(2)
    assert daemon.liveness()[0] is True
    obj: Any = getattr(daemon, target)
    if target == "outbox":
        obj = obj.store  # the worker's first call: the store's queue head
    calls = break_once(obj, method)
    if target == "outbox":
        daemon.outbox._wake["console-0"].set()  # type: ignore[union-attr]  # look now
    if task == "alert-digest":
        await stage.run_for(56, step=2)  # it looks once a minute
    for _ in range(20):
        await stage.run_for(0.5)
        if calls[0] >= 1:
            break
    ok, detail = daemon.liveness()
    assert not ok
    assert task in detail["loops"]  # type: ignore[operator]
    assert "injected into" in str(detail["loops"])
    await stage.run_for(2)  # the backoff (1s) passes: it runs again
    assert calls[0] >= 2
    assert daemon.liveness()[0] is True
    assert restarts(daemon.metrics, task) == 1
