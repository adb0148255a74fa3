"""The status pages as a person sees them in a real browser, healthy and mid-rollback.

Playwright drives the system's Chromium (``executable_path``; nothing is downloaded). The
screenshots, light and dark, are kept in ``$RAILGUARD_TEST_ARTIFACTS`` when it is set (CI keeps
that directory), else in the test's own temporary directory; pytest prints where.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from monitor.clock import FakeClock
from monitor.sandbox.demo import Demo
from tests.stage import Stage, serving
from tests.test_demo import drive

# Many seconds of wall time: started first (conftest), so the wait overlaps other tests.
pytestmark = pytest.mark.long_running

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs chromium (apt-get install chromium)",
)
SCHEMES = ("light", "dark")


@pytest.fixture
async def demo(clock: FakeClock) -> AsyncIterator[Demo]:
    """The demo's daemon, still serving, after the whole story: every service healthy."""
    played = Demo(clock=clock, out=io.StringIO())
    try:
        await drive(clock, played.start(), demo=played)
        await drive(clock, played.play(), demo=played)
        yield played
    finally:
        await played.stop()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the screenshots are kept after the run."""
    chosen = os.environ.get("RAILGUARD_TEST_ARTIFACTS")
    where = Path(chosen) if chosen else tmp_path / "artifacts"
    where.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {where}")
    return where


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield launched
        finally:
            await launched.close()


async def shoot(browser: Browser, url: str, artifacts: Path, name: str) -> dict[str, Path]:
    """Screenshots of the page at ``url`` in light and in dark; each scheme's body colour
    is checked to be its own (a page that ignored the scheme would look the same)."""
    shots, backgrounds = {}, set()
    for scheme in SCHEMES:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        await page.goto(url)
        path = artifacts / f"{name}-{scheme}.png"
        await page.screenshot(path=str(path), full_page=True)
        backgrounds.add(await page.evaluate("getComputedStyle(document.body).backgroundColor"))
        await page.close()
        assert path.stat().st_size > 10_000  # a rendered page, not a blank one
        shots[scheme] = path
    assert len(backgrounds) == 2, backgrounds
    return shots


async def texts(page: Page, selector: str) -> list[str]:
    return [t.strip() for t in await page.locator(selector).all_inner_texts()]


@needs_chromium
async def test_healthy_pages_after_the_demo(demo: Demo, browser: Browser, artifacts: Path) -> None:
    await shoot(browser, demo.status_url, artifacts, "status-healthy")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(demo.status_url)
    assert (await page.locator("#summary").inner_text()) == "3 services · all clear"
    rows = page.locator("table.services tr.service")
    assert await rows.evaluate_all("rs => rs.map(r => [r.id, r.dataset.state])") == [
        ["service-web-production", "ok"],
        ["service-web-staging", "ok"],
        ["service-web-preview", "ok"],
    ]
    assert await texts(page, "table.services td.release") == [
        "v1 verified good",
        "v1 verified good",
        "pr-8 not verified yet",
    ]
    # The rollbacks, in words, newest first, in the timeline a person reads.
    events = page.locator("#timeline tr.event")
    kinds = await events.evaluate_all("rs => rs.map(r => r.dataset.kind)")
    assert kinds.index("rollback_succeeded") < kinds.index("rollback_started")
    assert await page.get_by_text("rollback #1 succeeded: v2 → v1").is_visible()

    # One click to a service's page, which explains it.
    await page.get_by_role("link", name="web-production", exact=True).first.click()
    await page.wait_for_url("**/status/web-production")
    await shoot(browser, page.url, artifacts, "service-healthy")
    releases = page.locator("section.releases")
    assert "verified good" in await releases.locator(".release.active").inner_text()
    known = await releases.locator(".release.known-good").inner_text()
    assert known.startswith("v1")
    assert "(the active release)" in known
    assert "none verified yet" not in await page.content()
    assert (await releases.locator(".release.bad").inner_text()).startswith("v2")
    guards = page.locator("#guards")
    assert "2 of 3 left" in await guards.locator(".budget-left").inner_text()
    row = page.locator('tr.rule[data-rule="error-rate"]')
    assert await texts(row, "td.value, td.threshold") == ["0%", "> 5%"]
    assert await row.locator("circle.breach").count() >= 3  # the samples that made it fire
    assert await row.locator("svg.chart text.limit").text_content() == "5%"
    assert await page.locator("#railway-budget").is_visible()


@pytest.fixture
async def rolling(clock: FakeClock, tmp_path: Path) -> AsyncIterator[tuple[Stage, str]]:
    """The rollback stage mid-rollback: v1.1 baked, v2 failed, the rollback under way."""
    stage = Stage(clock, tmp_path / "stage", {"v2": {"error_ratio": 0.5}})
    (tmp_path / "stage").mkdir()
    await stage.start_servers()
    try:
        stage.deploy("v1", ago=7200)
        stage.deploy("v1.1", ago=3600)
        daemon = await stage.start_daemon()
        await stage.run_for(12)
        async with serving(daemon) as port:
            url = f"http://127.0.0.1:{port}/status"
            stage.deploy("v2")
            async with aiohttp.ClientSession() as http:
                for _ in range(60):
                    await stage.run_for(0.5)
                    async with http.get(url) as response:
                        (web_,) = json.loads(await response.text())["services"]
                    if web_["rollback_in_progress"]:
                        break
            assert web_["rollback_in_progress"]
            yield stage, url
    finally:
        await stage.close()


@needs_chromium
async def test_pages_during_a_rollback(
    rolling: tuple[Stage, str], browser: Browser, artifacts: Path
) -> None:
    _, url = rolling
    await shoot(browser, url, artifacts, "status-rollback")
    await shoot(browser, url + "/web", artifacts, "service-rollback")
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(url)
    assert "1 rollback in progress" in await page.locator("#summary").inner_text()
    row = page.locator("#service-web")
    assert await row.get_attribute("data-state") == "firing"
    assert await row.locator("td.firing").inner_text() == "error-rate"
    assert await row.locator(".badge.rollback").is_visible()
    await page.goto(url + "/web")
    notice = await page.locator("#rollback").inner_text()
    assert notice.startswith("rollback #1")
    assert "v2 → v1.1" in notice
    state = page.locator('tr.rule[data-rule="error-rate"]')
    assert await state.get_attribute("data-state") == "firing"
    assert (await state.locator("td.value").inner_text()).endswith("%")


async def test_status_is_json_for_machines_at_the_same_path(demo: Demo) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(demo.status_url) as response:  # no Accept: JSON
            assert response.content_type == "application/json"
            summary = await response.json()
        async with session.get(demo.status_url, headers={"Accept": "text/html"}) as response:
            assert response.content_type == "text/html"
            assert "<table" in await response.text()
        detail_url = demo.status_url + "/web-production"
        async with session.get(detail_url + "?format=json", headers={"Accept": "text/html"}) as r:
            assert r.content_type == "application/json"
            detail = await r.json()
        async with session.get(detail_url, headers={"Accept": "text/html"}) as response:
            assert "<svg" in await response.text()
    assert [s["name"] for s in summary["services"]] == [
        "web-production",
        "web-staging",
        "web-preview",
    ]
    succeeded = [e for e in summary["timeline"] if e["kind"] == "rollback_succeeded"]
    assert [e["service"] for e in succeeded] == ["web-staging", "web-production"]
    assert succeeded[1]["title"] == "rollback #1 succeeded: v2 → v1"
    production = detail["service"]
    assert production["railway"]["active"]["release"] == "v1"
    assert production["railway"]["known_good"]["release"] == "v1"
    assert production["policy"]["delivery"] == "immediate"
    rule = production["rules"]["error-rate"]
    assert (rule["threshold"], rule["threshold_shown"], rule["op"]) == (0.05, "5%", ">")
    assert any(value is not None and value > 0.05 for _, value in rule["history"])
    assert [t["service"] for t in detail["timeline"]] == ["web-production"] * len(
        detail["timeline"]
    )
