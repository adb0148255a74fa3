"""A small headless Chromium driver for tests, over the DevTools Protocol (CDP) with aiohttp.

``async with Browser.launch() as browser: page = await browser.new_page()`` then ``goto``,
``text``, ``evaluate``, ``visible`` and ``screenshot``. Chromium runs with a throwaway profile
and with its own background traffic turned off, so a test reaches only the URLs it opens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM: str | None = shutil.which("chromium")

# CI installs chromium, so there a missing binary fails (in launch) rather than skips.
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="needs chromium (apt-get install chromium)",
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
Events = asyncio.Queue[dict[str, Any]]
READY_PREFIX = "DevTools listening on "
COMMAND_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

# A node counts as visible if it has a box, is not visibility:hidden and overlaps the document.
VISIBLE_JS = """(() => {
  const el = document.querySelector(%s);
  if (!el || getComputedStyle(el).visibility !== "visible") return false;
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) return false;
  const doc = document.documentElement, left = r.left + scrollX, top = r.top + scrollY;
  return left + r.width > 0 && top + r.height > 0
    && left < doc.scrollWidth && top < doc.scrollHeight;
})()"""


class BrowserError(Exception):
    """Chromium would not start, a command failed, a page did not load or a script threw."""


class Browser:
    """One Chromium process and the CDP websocket to it; make it with :meth:`launch`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = 0
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._listeners: dict[tuple[str | None, str], list[Events]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @asynccontextmanager
    async def launch(
        cls, *, executable: str | None = None, ready_timeout: float = 20.0
    ) -> AsyncIterator[Browser]:
        """Start Chromium, connect to it; on exit stop it and remove its profile."""
        executable = executable or CHROMIUM
        if executable is None:
            raise BrowserError("chromium not found on PATH (apt-get install chromium)")
        profile = tempfile.mkdtemp(prefix="railguard-chromium-")
        process = await asyncio.create_subprocess_exec(
            executable,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: stopping it reaches every child
            # Crash reports go under XDG_CONFIG_HOME whatever --user-data-dir says: not in $HOME.
            env={**os.environ, "XDG_CONFIG_HOME": profile, "XDG_CACHE_HOME": profile},
        )
        assert process.stderr is not None
        drain: asyncio.Task[None] | None = None
        try:
            seen: deque[str] = deque(maxlen=40)
            try:
                async with asyncio.timeout(ready_timeout):
                    url = await _devtools_url(process, seen)
            except TimeoutError as e:
                problem = f"did not listen within {ready_timeout:g}s"
                raise BrowserError(_failed(problem, seen)) from e
            drain = asyncio.create_task(_drain(process.stderr))
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(url, max_msg_size=0) as ws,
            ):
                browser = cls(ws)
                try:
                    yield browser
                finally:
                    await ws.close()
                    await browser._reader
        finally:
            await _stop(process, drain or asyncio.create_task(_drain(process.stderr)))
            shutil.rmtree(profile, ignore_errors=True)

    async def send(self, method: str, /, **params: Any) -> dict[str, Any]:
        """Run a browser-level CDP command and return its result."""
        return await self._call(method, params, None)

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A fresh tab at about:blank with a ``width`` x ``height`` CSS-pixel viewport."""
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, target["targetId"], attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Page.setLifecycleEventsEnabled", enabled=True)
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    async def _call(
        self, method: str, params: dict[str, Any], session: str | None
    ) -> dict[str, Any]:
        if self._reader.done():
            raise BrowserError(f"{method}: the connection to Chromium is closed")
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = (method, reply)
        try:
            await self._ws.send_json(message)
            async with asyncio.timeout(COMMAND_TIMEOUT):
                return await reply
        except TimeoutError as e:
            raise BrowserError(f"{method}: no reply within {COMMAND_TIMEOUT:g}s") from e
        finally:
            self._pending.pop(message["id"], None)

    @contextmanager
    def listen(self, event: str, session: str | None = None) -> Iterator[Events]:
        """Queue the params of every ``event`` (of one ``session``) while inside the block."""
        queue: Events = asyncio.Queue()
        listeners = self._listeners.setdefault((session, event), [])
        listeners.append(queue)
        try:
            yield queue
        finally:
            listeners.remove(queue)

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                method, reply = self._pending.get(data["id"], ("", None))
                if reply is None or reply.done():
                    continue
                if error := data.get("error"):
                    detail = f" ({error['data']})" if "data" in error else ""
                    reply.set_exception(BrowserError(f"{method}: {error.get('message')}{detail}"))
                else:
                    reply.set_result(data.get("result", {}))
            else:
                key = (data.get("sessionId"), data.get("method", ""))
                for queue in self._listeners.get(key, []):
                    queue.put_nowait(data.get("params", {}))
        for _, reply in self._pending.values():
            if not reply.done():
                reply.set_exception(BrowserError("the connection to Chromium is closed"))


class Page:
    """One tab, driven over its own flattened CDP session."""

    def __init__(self, browser: Browser, target_id: str, session_id: str) -> None:
        self._browser = browser
        self.target_id = target_id
        self.session_id = session_id

    async def send(self, method: str, /, **params: Any) -> dict[str, Any]:
        """Run a CDP command in this tab; an error reply raises :class:`BrowserError`."""
        return await self._browser._call(method, params, self.session_id)

    def listen(self, event: str) -> AbstractContextManager[Events]:
        """Queue the params of every ``event`` in this tab while inside the block."""
        return self._browser.listen(event, self.session_id)

    async def goto(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event."""
        # This navigation's own load, by its loader: a late one from an earlier page is not it.
        with self.listen("Page.lifecycleEvent") as events:
            result = await self.send("Page.navigate", url=url)
            if error := result.get("errorText"):
                raise BrowserError(f"navigation to {url} failed: {error}")
            if "loaderId" not in result:
                return  # a same-document navigation (a #fragment) loads nothing
            loader = result["loaderId"]
            event: dict[str, Any] = {}
            try:
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    while (event.get("name"), event.get("loaderId")) != ("load", loader):
                        event = await events.get()
            except TimeoutError as e:
                raise BrowserError(f"{url} did not load within {COMMAND_TIMEOUT:g}s") from e

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); a throw raises."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if details := result.get("exceptionDetails"):
            thrown = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression[:80]!r} threw: {thrown}")
        return result["result"].get("value")

    async def text(self) -> str:
        """The page's text as a person sees it (``innerText``: no display:none content)."""
        return str(await self.evaluate("document.body.innerText"))

    async def visible(self, selector: str) -> bool:
        """Whether an element matching the CSS ``selector`` exists and can be seen."""
        return bool(await self.evaluate(VISIBLE_JS % json.dumps(selector)))

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Write a PNG of the viewport, or of the whole document, to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
            width, height = math.ceil(size["width"]), math.ceil(size["height"])
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
        shot = await self.send("Page.captureScreenshot", **params)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        """Close the tab."""
        await self._browser.send("Target.closeTarget", targetId=self.target_id)


async def _devtools_url(process: asyncio.subprocess.Process, seen: deque[str]) -> str:
    """The websocket URL Chromium prints on stderr once it listens; lines go to ``seen``."""
    assert process.stderr is not None
    while line := (await process.stderr.readline()).decode(errors="replace"):
        seen.append(line.rstrip())
        if line.startswith(READY_PREFIX):
            return line.removeprefix(READY_PREFIX).strip()
    raise BrowserError(_failed(f"exited ({await process.wait()}) before listening", seen))


def _failed(problem: str, stderr: deque[str]) -> str:
    return f"chromium {problem}; its stderr:\n" + "\n".join(stderr)


async def _drain(stream: asyncio.StreamReader) -> None:
    # Read to EOF so Chromium never blocks on a full pipe and the transport closes cleanly.
    while await stream.read(65536):
        pass


async def _stop(process: asyncio.subprocess.Process, drain: asyncio.Task[None]) -> None:
    """SIGTERM the browser, SIGKILL its process group if it lingers; reap it, read stderr to EOF."""
    # EOF on stderr means every process that inherited it (the renderers too) has gone.
    done = asyncio.gather(process.wait(), drain)
    with suppress(ProcessLookupError):
        process.terminate()  # the browser alone, for a clean exit: its children follow it
    with suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(done), STOP_TIMEOUT)
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await done
