"""The status page after the demo's story, as a person sees it in a real browser.

The demo plays on a FakeClock (a few seconds); then headless Chromium opens /status on the
daemon that is still running, the screenshot is kept in test-artifacts/ (or
$RAILGUARD_TEST_ARTIFACTS), and the assertions read the page's visible text and elements.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from monitor.clock import FakeClock
from monitor.sandbox.demo import Demo
from tests.browser import Browser, needs_chromium
from tests.test_demo import drive

ARTIFACTS = Path(
    os.environ.get("RAILGUARD_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)

pytestmark = needs_chromium


@pytest.fixture
async def demo(clock: FakeClock) -> AsyncIterator[Demo]:
    """The demo's daemon, still serving, after the whole story."""
    played = Demo(clock=clock, out=io.StringIO())
    try:
        await drive(clock, played.start())
        await drive(clock, played.play())
        yield played
    finally:
        await played.stop()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots are kept after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


async def test_status_page_shows_the_demo_rollback_in_its_timeline(
    demo: Demo, artifacts: Path
) -> None:
    async with Browser.launch() as browser:
        page = await browser.new_page(width=1280, height=900)
        await page.goto(demo.status_url)
        shot = await page.screenshot(artifacts / "status-page.png")
        text = await page.text()

        # Three tiers, production first, each service with its releases.
        tiers = await page.evaluate("[...document.querySelectorAll('section.tier')].map(s => s.id)")
        assert tiers == ["tier-production", "tier-staging", "tier-preview"]
        for name in ("web-production", "web-staging", "web-preview"):
            assert await page.visible(f"#service-{name} .release.active"), name
        releases = await page.evaluate(
            "[...document.querySelectorAll('article.service')].map(s => [s.id, "
            "s.querySelector('.release.active .label').innerText, "
            "s.querySelector('.release.known-good .label').innerText])"
        )
        assert releases == [
            ["service-web-production", "v1", "v1"],
            ["service-web-staging", "v1", "v1"],
            ["service-web-preview", "pr-8", "v1"],
        ]

        # The rollbacks, in words, in the timeline a person reads.
        assert await page.visible('#timeline tr.event[data-kind="rollback_succeeded"]')
        assert "rollback #1 succeeded: v2 → v1" in text
        assert "rollback #2 succeeded: v3-rc1 → v1" in text
        assert "error-rate firing" in text
        kinds = await page.evaluate(
            "[...document.querySelectorAll('#timeline tr.event')].map(r => r.dataset.kind)"
        )
        assert kinds.index("rollback_succeeded") < kinds.index("rollback_started")  # newest first

        # Each rule with its chart; production's error rate shows the breach that was rolled back.
        rows = await page.evaluate(
            "[...document.querySelectorAll('#service-web-production tr.rule')]"
            ".map(r => [r.dataset.rule, r.dataset.phase])"
        )
        assert rows == [
            ["health-failing", "inactive"],
            ["error-rate", "inactive"],
            ["memory-high", "inactive"],
            ["deployment-crashed", "inactive"],
        ]
        breaches = await page.evaluate(
            "document.querySelectorAll("
            "'#service-web-production tr[data-rule=\"error-rate\"] svg.chart circle.breach').length"
        )
        assert breaches >= 3  # the samples that made the rule fire
        assert await page.visible('#service-web-production tr[data-rule="error-rate"] svg.chart')

    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


async def test_status_is_json_for_machines_at_the_same_path(demo: Demo) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(demo.status_url) as response:  # no Accept: JSON
            assert response.content_type == "application/json"
            document = await response.json()
        async with session.get(demo.status_url, headers={"Accept": "text/html"}) as response:
            assert response.content_type == "text/html"
            assert "<svg" in await response.text()
        async with session.get(
            demo.status_url + "?format=json", headers={"Accept": "text/html"}
        ) as r:
            assert r.content_type == "application/json"
    services = {s["name"]: s for s in document["services"]}
    production = services["web-production"]
    assert production["railway"]["active"]["release"] == "v1"
    assert production["railway"]["known_good"]["release"] == "v1"
    assert production["policy"] == {
        "auto_rollback": True,
        "severity": "critical",
        "delivery": "immediate",
    }
    rule = production["rules"]["error-rate"]
    assert rule["threshold"] == 0.05
    assert rule["op"] == ">"
    assert any(value is not None and value > 0.05 for _, value in rule["history"])
    assert services["web-preview"]["policy"]["delivery"] == "off"
    succeeded = [e for e in document["timeline"] if e["kind"] == "rollback_succeeded"]
    assert [e["service"] for e in succeeded] == ["web-staging", "web-production"]
    assert succeeded[1]["title"] == "rollback #1 succeeded: v2 → v1"
    json.dumps(document, allow_nan=False)  # strict JSON: no NaN for unknown samples
