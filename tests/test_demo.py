"""`railguard demo` plays its whole story (on a FakeClock, so it takes a few seconds)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from monitor.clock import FakeClock
from monitor.sandbox import demo as demo_module
from monitor.sandbox.demo import Demo, DemoError, run_demo

# Many seconds of wall time: started first (conftest), so the wait overlaps other tests.
pytestmark = pytest.mark.long_running

T = TypeVar("T")
ALERT = re.compile(r"\[(INFO|WARNING|CRITICAL)\] (FIRING|RESOLVED): ")


async def drive(
    clock: FakeClock, work: Awaitable[T], step: float = 0.05, demo: Demo | None = None
) -> T:
    """Advance fake time in small steps, letting real I/O (probes, traffic) complete between
    and, with ``demo``, its store finish what the step started: on PostgreSQL a write is a
    network away, and fake time running on meanwhile would reorder the story."""
    task = asyncio.ensure_future(work)
    for _ in range(40_000):
        if task.done():
            break
        await clock.advance(step)
        quiet = 0
        while quiet < 3:  # loopback I/O completes; no time is being waited for
            await asyncio.sleep(0.001)
            daemon = demo.daemon if demo is not None else None
            busy = daemon is not None and daemon.store is not None and daemon.store.busy
            quiet = 0 if busy else quiet + 1
    return await task


STORY = [
    "all three tiers serve v1",
    "web-production: deployment v1 verified healthy",
    "production: v2 is pushed",
    "production: v2 is live",
    "web-production: error-rate pending",
    "web-production: error-rate firing",
    "web-production: rollback #1 started: v2 → v1: by rule error-rate",
    "web-production: rollback #1 succeeded: v2 → v1",
    "production: serving v1 again, verified",
    "staging: v3-rc1 is pushed",
    "web-staging: health-failing firing",
    "web-staging: rollback #2 started: v3-rc1 → v1",
    "web-staging: rollback #2 succeeded: v3-rc1 → v1",
    "nobody was paged",
    "preview: pr-7 is pushed",
    "web-preview: health-failing firing",
    "preview: recorded only: no rollback, no alert",
    "web-preview: health-failing resolved",
    "the demo sends it now",
    "summary:",
    "the status page shows it all: http://127.0.0.1:",
]


async def test_demo_story_runs_to_the_end(clock: FakeClock) -> None:
    out = io.StringIO()
    demo = Demo(clock=clock, out=out)
    assert await drive(clock, demo.run(), demo=demo) == 0
    text = out.getvalue()
    positions = [text.find(step) for step in STORY]
    assert -1 not in positions, [s for s, p in zip(STORY, positions, strict=True) if p == -1]
    assert positions == sorted(positions), text
    story = [line for line in text.splitlines() if line.startswith("[ ")]
    assert all("s] " in line for line in story)
    # The console channel's alerts (printed as they are delivered, between story lines):
    # production's right away; staging's incident waited for its digest; preview's, never.
    production = text[
        text.find("production: v2 is pushed") : text.find("staging: v3-rc1 is pushed")
    ]
    assert "[CRITICAL] FIRING: web-production: rollback #1 started: v2 → v1" in production
    assert "[CRITICAL] RESOLVED: web-production: rollback #1 succeeded: v2 → v1" in production
    alerts = text[: text.find("the demo sends it now")]
    assert "tier staging" not in alerts
    assert "[WARNING] FIRING: staging daily summary" in text[len(alerts) : text.find("summary:")]
    assert "tier preview" not in text
    digest = text[text.find("staging daily summary") :]
    assert "web-staging: 1 rollbacks" in digest
    summary = text[text.find("summary:") :]
    assert "production web-production: fired error-rate; rolled back in" in summary
    assert "preview    web-preview: fired health-failing; no rollback; now serving pr-8" in summary
    assert "railway: 2 rollback mutation(s) sent" in summary
    assert printed_alerts(text) == readme_alerts()


def printed_alerts(text: str) -> list[str]:
    """The console channel's headlines, dates made ``<date>`` (README's form)."""
    lines = [line for line in text.splitlines() if ALERT.match(line)]
    return [re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", line) for line in lines]


def readme_alerts() -> list[str]:
    """The list README gives after ``<!-- demo-alerts -->``."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- demo-alerts -->\n```\n", 1)[1].split("```", 1)[0]
    return block.splitlines()


async def test_demo_step_that_never_happens_fails_with_its_name(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo_module, "STEP_LIMIT", 2.0)  # shorter than the 4s bake
    demo = Demo(clock=clock, out=io.StringIO())
    try:
        await drive(clock, demo.start(), demo=demo)
        with pytest.raises(DemoError, match="waited 2s for v1 to be known-good on production"):
            await drive(clock, demo.play())
    finally:
        await demo.stop()


async def test_demo_keep_serves_the_status_page_until_stopped(clock: FakeClock) -> None:
    out = io.StringIO()
    task = asyncio.ensure_future(run_demo(clock=clock, out=out, keep=True))
    for _ in range(40_000):
        if "--keep: still running" in out.getvalue() or task.done():
            break
        await clock.advance(0.05)
        await asyncio.sleep(0.001)
    assert not task.done()
    url = out.getvalue().split("the status page shows it all: ")[1].split()[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            assert len((await response.json())["services"]) == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):  # everything was stopped
            await session.get(url)


async def test_a_narrator_that_fails_stops_the_story_with_its_error(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: object) -> dict[str, str]:
        raise RuntimeError("the trail is unreadable")

    monkeypatch.setattr(demo_module, "words", broken)
    demo = Demo(clock=clock, out=io.StringIO())
    try:
        await drive(clock, demo.start())
        with pytest.raises(RuntimeError, match="the trail is unreadable"):
            await drive(clock, demo.play())
    finally:
        await demo.stop()
