"""railguard's own HTTP server: /healthz, /readyz, /metrics, /status, and (from
:mod:`monitor.admin`) the admin API under /api/v1/ and /webhooks/railway/<secret>."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor import status_routes
from monitor.admin import AdminAPI, Administered
from monitor.readauth import read_guard
from monitor.status import Observed
from monitor.status_routes import wants_html
from monitor.status_summary import finite
from monitor.telemetry import Metrics
from monitor.webhook import WEBHOOK_MAX_BYTES, WebhookReceiver

__all__ = ["create_app", "finite", "wants_html"]  # the last two for older importers


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

    async def refresh_gauges(self) -> None:
        """Bring the gauges that describe stored state up to date (before a scrape)."""
        ...


class Served(Watched, Administered, Observed, Protocol):
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


def create_app(daemon: Served, metrics: Metrics) -> web.Application:
    """The aiohttp application serving railguard's endpoints."""
    # Bodies are read with their own limits (admin, webhook); this caps any other reader.
    app = web.Application(
        client_max_size=WEBHOOK_MAX_BYTES,
        middlewares=[read_guard(daemon.plan.env.read_token)],
    )
    app[DAEMON_KEY] = daemon
    app[METRICS_KEY] = metrics
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    status_routes.mount(app, daemon)
    AdminAPI(daemon).mount(app)
    WebhookReceiver(daemon.plan.env.webhook_secret, lambda: daemon.poller).mount(app)
    return app
