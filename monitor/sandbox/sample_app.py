"""A small web service with switchable faults: what railguard's demo and end-to-end tests watch.

Routes: ``GET /health`` (200 ``{"status": "ok"}``), ``GET /`` and ``GET /work`` (traffic),
``GET /metrics`` (Prometheus text) and ``GET``/``POST /_control`` (the fault switches). Every
response carries the serving release in ``X-Release``; like an app that echoes Railway's
``RAILWAY_DEPLOYMENT_ID`` and ``RAILWAY_GIT_COMMIT_SHA``, the app's own answers also carry
the deployment it plays in ``X-Railway-Deployment-Id`` and its commit in
``X-Railway-Git-Commit-Sha`` (when set), and ``/health`` says both in its JSON
(``deployment``, ``commit``).

Faults (``POST /_control`` with a JSON object; fields left out keep their value):

- ``mode``: ``ok``; ``error`` (health and traffic answer 500); ``slow`` (health answers after
  ``delay`` seconds); ``flap`` (health fails every other request, starting with a failure);
  ``hang`` (health never answers: the client gives up first).
- ``error_ratio`` (0..1): the fraction of traffic requests answered with 500, whatever the
  mode. Deterministic: the n-th request fails when ``floor(n * ratio)`` goes up, so 0.5 fails
  every second request.
- ``latency`` (seconds): how long each traffic request is recorded as taking in the
  ``http_request_duration_seconds`` histogram (simulated: the app answers at once).
- ``memory_bytes`` / ``memory_limit_bytes``: what /metrics reports as the process's resident
  memory and its limit. ``delay``: seconds for ``slow``. ``release``: the release label.
- ``asleep``: Railway has the service asleep (serverless). The next request on any route but
  ``/_control`` wakes it and, as Railway's edge does while the app starts, gets a 502; so does
  every request for ``cold_start`` seconds after that. Waking calls the app's wake hooks
  (``WAKE_KEY``), through which the sandbox tells the emulator the deployment runs again.
- ``deployment_id`` / ``commit``: the deployment the app plays and its commit ("": none).
- ``overlap`` (seconds): a deploy's overlap (``RAILWAY_DEPLOYMENT_OVERLAP_SECONDS``). When the
  release or deployment changes, the one replaced keeps answering ``/health`` and traffic
  for this long, as it behaved then (its mode, error ratio, release, deployment); it answers
  ``overlap_ratio`` (0..1, default all) of them, deterministically as ``error_ratio``.

Run it alone with ``python -m monitor.sandbox.sample_app --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from monitor.clock import Clock, SystemClock
from monitor.sandbox.app_state import MIB, MODES, AppState, ControlError, Mode, Persona, label

__all__ = [
    "MIB",
    "MODES",
    "STATE_KEY",
    "WAKE_KEY",
    "AppState",
    "ControlError",
    "Mode",
    "create_app",
]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STATE_KEY = web.AppKey("sample_app_state", AppState)
REGISTRY_KEY = web.AppKey("sample_app_registry", CollectorRegistry)
_CLOCK_KEY = web.AppKey("sample_app_clock", Clock)
_CLOSING_KEY = web.AppKey("sample_app_closing", asyncio.Event)
_REQUESTS_KEY = web.AppKey("sample_app_requests", Counter)
_DURATION_KEY = web.AppKey("sample_app_durations", Histogram)
WAKE_KEY = web.AppKey("sample_app_wake_hooks", list[Callable[[], None]])
_PERSONA_KEY = web.RequestKey("sample_app_persona", Persona)


def create_app(*, release: str = "v1", clock: Clock | None = None) -> web.Application:
    """The sample app, with its own state and metrics registry (see the module docstring)."""
    app = web.Application(middlewares=[_sleeping])
    clock = clock or SystemClock()
    state = AppState(release=label(release), clock=clock)
    registry = CollectorRegistry()
    app[STATE_KEY] = state
    app[REGISTRY_KEY] = registry
    app[_CLOCK_KEY] = clock
    app[_CLOSING_KEY] = asyncio.Event()
    app[WAKE_KEY] = []
    app[_REQUESTS_KEY] = Counter(
        "http_requests", "Requests served, by status code.", ["code"], registry=registry
    )
    app[_DURATION_KEY] = Histogram(
        "http_request_duration_seconds",
        "Traffic requests' duration as the app records it (see the latency switch).",
        registry=registry,
    )
    Gauge(
        "process_resident_memory_bytes", "Simulated resident memory.", registry=registry
    ).set_function(lambda: state.memory_bytes)
    Gauge("app_memory_limit_bytes", "Simulated memory limit.", registry=registry).set_function(
        lambda: state.memory_limit_bytes
    )
    app.router.add_get("/health", _health)
    app.router.add_get("/", _traffic)
    app.router.add_get("/work", _traffic)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/_control", _get_control)
    app.router.add_post("/_control", _post_control)
    app.on_response_prepare.append(_stamp_release)
    app.on_shutdown.append(_release_waiters)
    return app


@web.middleware
async def _sleeping(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """A sleeping app wakes on its first request, which gets a 502, as do those during the
    cold start (Railway's edge answers them; the app never sees them, so they are not counted).
    """
    state, clock = request.app[STATE_KEY], request.app[_CLOCK_KEY]
    if request.path == "/_control":
        return await handler(request)
    if state.wakes(clock.monotonic()):
        for wake in request.app[WAKE_KEY]:
            wake()
    elif not state.starting(clock.monotonic()):
        return await handler(request)
    return web.Response(status=502, text="Application failed to respond\n")


def _served(request: web.Request, response: web.Response) -> web.Response:
    request.app[_REQUESTS_KEY].labels(code=str(response.status)).inc()
    return response


def _answering(request: web.Request) -> Persona:
    persona = request[_PERSONA_KEY] = request.app[STATE_KEY].answering()
    return persona


def _said(persona: Persona, status: str, **more: Any) -> dict[str, Any]:
    """A health answer's JSON: how it is, and which release and deployment say so."""
    said = {"status": status, **more, "release": persona.release}
    if persona.deployment_id:
        said["deployment"] = persona.deployment_id
    if persona.commit:
        said["commit"] = persona.commit
    return said


async def _health(request: web.Request) -> web.Response:
    state, persona = request.app[STATE_KEY], _answering(request)
    mode = persona.mode
    if mode in ("hang", "slow"):
        if await _wait(request.app, None if mode == "hang" else persona.delay):
            return web.json_response({"status": "shutting down"}, status=503)
    elif mode == "error" or (mode == "flap" and state.next_flap_fails()):
        body = _said(persona, "error", mode=mode)
        return _served(request, web.json_response(body, status=500))
    return _served(request, web.json_response(_said(persona, "ok")))


async def _traffic(request: web.Request) -> web.Response:
    state, persona = request.app[STATE_KEY], _answering(request)
    request.app[_DURATION_KEY].observe(persona.latency)
    if persona.mode == "error" or state.next_traffic_fails(persona.error_ratio):
        return _served(request, web.Response(status=500, text="internal error\n"))
    return _served(request, web.Response(text=f"served by {persona.release}\n"))


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _get_control(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE_KEY].to_dict())


async def _post_control(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        changes = json.loads(await request.read())
    except ValueError:
        changes = None
    if not isinstance(changes, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    try:
        state.update(changes)
    except ControlError as exc:
        body = {"error": str(exc), "field": exc.field, "value": exc.value}
        return web.json_response(body, status=400)
    return web.json_response(state.to_dict())


async def _stamp_release(request: web.Request, response: web.StreamResponse) -> None:
    state = request.app[STATE_KEY]
    persona = request.get(_PERSONA_KEY) or state.persona()
    response.headers["X-Release"] = persona.release
    if response.status == 502 and _PERSONA_KEY not in request:
        return  # Railway's edge answered (the app is starting): no app headers
    if persona.deployment_id:
        response.headers["X-Railway-Deployment-Id"] = persona.deployment_id
    if persona.commit:
        response.headers["X-Railway-Git-Commit-Sha"] = persona.commit


async def _release_waiters(app: web.Application) -> None:
    # Without this, a slow or hanging /health would hold up shutdown for the runner's
    # whole shutdown_timeout when handler cancellation is off.
    app[_CLOSING_KEY].set()


async def _wait(app: web.Application, seconds: float | None) -> bool:
    """Wait ``seconds`` (None: for ever) or until the app shuts down; True if it shut down."""
    closing = app[_CLOSING_KEY]
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(closing.wait())}
    if seconds is not None:
        waiters.add(asyncio.ensure_future(app[_CLOCK_KEY].sleep(seconds)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return closing.is_set()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m monitor.sandbox.sample_app``."""
    parser = argparse.ArgumentParser(
        prog="python -m monitor.sandbox.sample_app",
        description="A sample service with switchable faults, for railguard's demo and tests.",
    )
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--release", default="v1", help="release label (v1)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the sample app until interrupted."""
    args = parse_args(argv)
    app = create_app(release=args.release)
    web.run_app(app, host=args.host, port=args.port, handler_cancellation=True)


if __name__ == "__main__":  # pragma: no cover
    main()
