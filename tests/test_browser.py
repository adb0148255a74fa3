"""The test-side Chromium driver, against a page served on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from tests.browser import Browser, BrowserError, Page, needs_chromium

pytestmark = pytest.mark.asyncio(loop_scope="module")

RED, BLUE = (200, 0, 0), (0, 0, 200)
HTML = """<!doctype html>
<html><head><title>Fixture</title><style>
body { margin: 0; font: 16px sans-serif; }
#top { height: 300px; background: rgb(200, 0, 0); color: white; }
#bottom { height: 300px; background: rgb(0, 0, 200); }
</style></head><body>
<div id="top">Signals all green</div>
<div id="hidden" style="display: none">Secret rollback token</div>
<div id="ghost" style="visibility: hidden; position: absolute; top: 0">Ghost text</div>
<div id="away" style="position: absolute; left: -500px; width: 100px">Far away</div>
<div id="bottom"></div>
</body></html>"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[str]:
    async def index(_: web.Request) -> web.Response:
        return web.Response(text=HTML, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with Browser.launch() as browser:
        yield browser


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser, site: str) -> AsyncIterator[Page]:
    """The fixture page in a 320x240 viewport: the blocks run past the fold to 600px."""
    page = await browser.new_page(width=320, height=240)
    try:
        await page.goto(site)
        yield page
    finally:
        await page.close()


def decode_png(data: bytes) -> list[list[tuple[int, ...]]]:
    """Rows of (r, g, b) pixels of an 8-bit, non-interlaced truecolour PNG (alpha dropped)."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: dict[bytes, bytes] = {}
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, interlace) == (8, 0)
    bpp = {2: 3, 6: 4}[colour]
    raw, stride = zlib.decompress(chunks[b"IDAT"]), width * bpp
    rows, prior = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride if kind else 0):  # filter 0 (None) leaves bytes as they are
            a, b = line[i - bpp] if i >= bpp else 0, prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c  # Paeth: whichever neighbour is nearest p, ties to a, then b
            paeth = min((abs(p - a), 0, a), (abs(p - b), 1, b), (abs(p - c), 2, c))[2]
            line[i] = (line[i] + (0, a, b, (a + b) // 2, paeth)[kind]) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, bpp)])
        prior = bytes(line)
    return rows


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_chromium
async def test_text_is_what_a_person_sees(page: Page) -> None:
    text = await page.text()
    assert "Signals all green" in text
    assert "Secret rollback token" not in text  # display: none
    assert "Ghost text" not in text  # visibility: hidden


@needs_chromium
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("#top", True),
        ("#bottom", True),  # below the fold is still in the document
        ("#hidden", False),
        ("#ghost", False),
        ("#away", False),
        ("#missing", False),
    ],
)
async def test_visible(page: Page, selector: str, expected: bool) -> None:
    assert await page.visible(selector) is expected


@needs_chromium
async def test_evaluate_returns_values_and_raises_on_a_throw(page: Page) -> None:
    assert await page.evaluate("document.title") == "Fixture"
    assert await page.evaluate("({n: 1 + 2, xs: ['a', null]})") == {"n": 3, "xs": ["a", None]}
    assert await page.evaluate("Promise.resolve(7)") == 7
    with pytest.raises(BrowserError, match="TypeError"):
        await page.evaluate("null.x")


@needs_chromium
async def test_an_error_reply_names_the_method(page: Page) -> None:
    with pytest.raises(BrowserError, match=r"^Page\.noSuchMethod: .*wasn't found"):
        await page.send("Page.noSuchMethod")
    with pytest.raises(BrowserError, match=r"^Page\.navigate: Invalid parameters \(.*url"):
        await page.send("Page.navigate")


@needs_chromium
async def test_goto_a_closed_port_raises_naming_the_url(page: Page, site: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(BrowserError, match=f"{url} failed: net::ERR_CONNECTION_REFUSED"):
        await page.goto(url)
    await page.goto(site)  # the tab is still usable
    assert await page.evaluate("location.href") == site


@needs_chromium
async def test_goto_a_fragment_returns_without_a_load(page: Page, site: str) -> None:
    await page.goto(site + "#bottom")
    assert await page.evaluate("location.hash") == "#bottom"


@needs_chromium
async def test_screenshot_is_a_png_of_the_page(page: Page, tmp_path: Path) -> None:
    full = decode_png((await page.screenshot(tmp_path / "full.png")).read_bytes())
    assert (len(full[0]), len(full)) == (320, 600)
    assert full[150][300] == RED
    assert full[450][160] == BLUE

    shot = await page.screenshot(tmp_path / "viewport.png", full_page=False)
    viewport = decode_png(shot.read_bytes())
    assert (len(viewport[0]), len(viewport)) == (320, 240)
    assert BLUE not in {pixel for row in viewport for pixel in row}


def fake_chromium(tmp_path: Path, body: str) -> str:
    path = tmp_path / "chromium"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_launch_reports_an_early_exit_with_its_stderr(tmp_path: Path) -> None:
    executable = fake_chromium(tmp_path, "echo 'no display here' >&2; exit 3")
    with pytest.raises(BrowserError, match=r"exited \(3\) before listening.*\n.*no display here"):
        async with Browser.launch(executable=executable):
            pass


async def test_launch_gives_up_and_stops_a_silent_browser(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    body = f"echo $$ > {pid_file}; echo starting >&2; exec sleep 30"
    with pytest.raises(BrowserError, match=r"did not listen within 1s.*\n.*starting"):
        async with Browser.launch(executable=fake_chromium(tmp_path, body), ready_timeout=1):
            pass
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
