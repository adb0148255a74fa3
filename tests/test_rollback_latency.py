"""Latency from Railway's own httpDurationMetrics rolls a slow release back: the emulator's
traffic gets slow while v2 serves, railguard sees p95 above 500ms for 2m and rolls back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.clock import FakeClock
from monitor.model import Signal
from monitor.rules import builtin_rules_path
from tests.stage import CONFIG, Stage, known_good, store_of, worker

RULES = """
[[rules]]
name = "latency-slow"
description = "Railway has measured p95 request latency above 500ms for 2 minutes."
signal = "latency_p95"
op = ">"
threshold = "500ms"
for = "2m"
"""
FAST_MS, SLOW_MS = 100.0, 2000.0  # medians: p95 is 228ms and 4.6s with the default spread


def latency_config(tmp: Path) -> str:
    """The stage's config with Railway latency (10 s steps) and only the latency rule."""
    (tmp / "latency.toml").write_text(RULES)
    head = f'rule_files = ["{builtin_rules_path()}", "latency.toml"]\n'
    service = CONFIG.split("[[services]]")[1].split("error_rate =")[0]
    return (
        head
        + CONFIG.split("[[services]]")[0].replace("{tier_extra}", 'rules = ["latency-slow"]')
        + "[[services]]"
        + service
        + 'latency = {{ source = "railway", step = "10s", min_requests = 5 }}\n'
    )


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    stage.config_template = latency_config(tmp_path)
    stage.traffic_per_second = 2  # to the app (health); Railway's traffic is the emulator's
    await stage.start_servers()
    yield stage
    await stage.close()


async def run(stage: Stage, seconds: int, slow: str | None) -> None:
    """Run the stage while Railway serves 5 requests a second, slow while ``slow`` is active."""
    current: float | None = None
    for _ in range(seconds):
        wanted = SLOW_MS if slow is not None and stage.active_release() == slow else FAST_MS
        if wanted != current:
            stage.emu.set_traffic(stage.service, stage.env, 5, latency_ms=wanted)
            current = wanted
        await stage.run_for(1)


async def test_a_slow_release_is_rolled_back_on_railways_p95(stage: Stage) -> None:
    stage.emu.set_traffic(stage.service, stage.env, 5, at=stage.clock.time() - 600)
    good = await known_good(stage)
    bad = stage.deploy("v2").id
    await run(stage, 100, slow="v2")
    p95 = worker(stage).latest[Signal.LATENCY_P95]
    assert p95.value is not None
    assert p95.value > 4  # seconds: Railway's milliseconds, converted
    assert p95.detail["requests"] == pytest.approx(50)  # 5/s over a 10 s step
    assert stage.rollbacks_sent() == []  # not yet 2 minutes
    await run(stage, 60, slow="v2")
    assert stage.rollbacks_sent() == [good]
    await run(stage, 20, slow="v2")
    assert stage.active_release() == "v1.1"
    (rollback,) = await store_of(stage).rollbacks("web")
    assert (rollback.rule, rollback.from_deployment, rollback.to_deployment) == (
        "latency-slow",
        bad,
        good,
    )
    assert rollback.state == "succeeded", rollback.error
    assert worker(stage).latest[Signal.LATENCY_P95].value == pytest.approx(0.228, rel=0.01)


async def test_a_release_that_stays_fast_is_left_alone(stage: Stage) -> None:
    stage.emu.set_traffic(stage.service, stage.env, 5, at=stage.clock.time() - 600)
    await known_good(stage)
    stage.deploy("v2")
    await run(stage, 160, slow=None)
    assert stage.rollbacks_sent() == []
    p95 = worker(stage).latest[Signal.LATENCY_P95]
    assert p95.value == pytest.approx(0.228, rel=0.01)
    assert worker(stage).states["latency-slow"].phase.value == "inactive"
