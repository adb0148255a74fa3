"""railguard's own HTTP server: /healthz, /readyz, /metrics, /status, and (from
:mod:`monitor.admin`) the admin API under /api/v1/ and /webhooks/railway/<secret>."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor.admin import AdminAPI, Administered
from monitor.telemetry import Metrics
from monitor.webhook import WEBHOOK_MAX_BYTES, WebhookReceiver


class Watched(Protocol):
    """What the server asks of the daemon."""

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Whether the scheduler ticks, with details."""
        ...

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether railguard is started and not stopping."""
        ...

    def status(self) -> dict[str, object]:
        """Every service's state, JSON-ready."""
        ...

    async def status_document(self) -> dict[str, Any]:
        """The /status document (:mod:`monitor.status`)."""
        ...

    async def refresh_gauges(self) -> None:
        """Bring the gauges that describe stored state up to date (before a scrape)."""
        ...


class Served(Watched, Administered, Protocol):
    """Everything the server asks of the daemon, the admin API included."""


DAEMON_KEY = web.AppKey("daemon", Watched)
METRICS_KEY = web.AppKey("metrics", Metrics)


async def _healthz(request: web.Request) -> web.Response:
    ok, detail = request.app[DAEMON_KEY].liveness()
    return web.json_response({"ok": ok, **detail}, status=200 if ok else 503)


async def _readyz(request: web.Request) -> web.Response:
    ok, detail = request.app[DAEMON_KEY].readiness()
    return web.json_response({"ok": ok, **detail}, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.Response:
    # Stored state (a freeze that expired, one set by a previous run) as it is now.
    await request.app[DAEMON_KEY].refresh_gauges()
    # Rendered on the loop in slices of a few milliseconds: tens of thousands of series take
    # longer than a tick may wait, and a thread would hold the GIL as long.
    body = await request.app[METRICS_KEY].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a probe's odd detail) made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def wants_html(request: web.Request) -> bool:
    """``?format=html|json`` decides; else a browser (text/html before JSON) gets the page."""
    chosen = request.query.get("format")
    if chosen in ("html", "json"):
        return chosen == "html"
    accept = request.headers.get("Accept", "")
    html, json = accept.find("text/html"), accept.find("application/json")
    return html != -1 and (json == -1 or html < json)


async def _status(request: web.Request) -> web.Response:
    document = await request.app[DAEMON_KEY].status_document()
    headers = {"Vary": "Accept", "Cache-Control": "no-store"}
    document = finite(document)  # strict JSON, and no page fails on an infinite time
    if not wants_html(request):
        body = await asyncio.to_thread(json.dumps, document, allow_nan=False)
        return web.Response(text=body, content_type="application/json", headers=headers)
    from monitor.statuspage import render

    page = await asyncio.to_thread(render, document)
    return web.Response(text=page, content_type="text/html", headers=headers)


def create_app(daemon: Served, metrics: Metrics) -> web.Application:
    """The aiohttp application serving railguard's endpoints."""
    # Bodies are read with their own limits (admin, webhook); this caps any other reader.
    app = web.Application(client_max_size=WEBHOOK_MAX_BYTES)
    app[DAEMON_KEY] = daemon
    app[METRICS_KEY] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    AdminAPI(daemon).mount(app)
    WebhookReceiver(daemon.plan.env.webhook_secret, lambda: daemon.poller).mount(app)
    return app
