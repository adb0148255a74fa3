"""`railguard demo` plays its whole story (on a FakeClock, so it takes a second or two)."""

from __future__ import annotations

import asyncio
import io

from monitor.clock import FakeClock
from monitor.sandbox.demo import run_demo


async def drive(clock: FakeClock, task: asyncio.Future[int], step: float = 0.05) -> int:
    """Advance fake time in small steps, letting real I/O (probes, traffic) complete between."""
    for _ in range(20_000):
        if task.done():
            break
        await clock.advance(step)
        await asyncio.sleep(0.001)  # loopback I/O completes; no time is being waited for
    return await task


async def test_demo_story_runs_to_the_end(clock: FakeClock) -> None:
    out = io.StringIO()
    assert await drive(clock, asyncio.ensure_future(run_demo(clock=clock, out=out))) == 0
    text = out.getvalue()
    lines = text.splitlines()
    assert all(line.startswith("[") and "s] " in line for line in lines)
    story = [
        "all three tiers are healthy",
        "production: release v2 goes out and fails half of its requests",
        "web-production: error-rate pending",
        "web-production: error-rate firing",
        "-> production: page now (critical)",
        "production: healthy again on v1",
        "staging: its health check starts failing",
        "-> staging: kept for the daily digest (warning)",
        "web-preview: health-failing firing",
        "-> preview: no alert: logs and metrics only",
        "summary:",
    ]
    positions = [text.find(step) for step in story]
    assert -1 not in positions, [s for s, p in zip(story, positions, strict=True) if p == -1]
    assert positions == sorted(positions)
    assert "web-staging: health-failing firing" in text
    assert "web-production [production]: " in text
    assert "fired error-rate" in text
    # Production was broken only through its error rate: its health rule never fired.
    assert "web-production: health-failing firing" not in text
