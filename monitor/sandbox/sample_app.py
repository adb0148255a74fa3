"""A small web service with switchable faults: what railguard's demo and end-to-end tests watch.

Routes: ``GET /health`` (200 ``{"status": "ok"}``), ``GET /`` and ``GET /work`` (traffic),
``GET /metrics`` (Prometheus text) and ``GET``/``POST /_control`` (the fault switches). Every
response carries the serving release in ``X-Release``.

Faults (``POST /_control`` with a JSON object; fields left out keep their value):

- ``mode``: ``ok``; ``error`` (health and traffic answer 500); ``slow`` (health answers after
  ``delay`` seconds); ``flap`` (health fails every other request, starting with a failure);
  ``hang`` (health never answers: the client gives up first).
- ``error_ratio`` (0..1): the fraction of traffic requests answered with 500, whatever the
  mode. Deterministic: the n-th request fails when ``floor(n * ratio)`` goes up, so 0.5 fails
  every second request.
- ``memory_bytes`` / ``memory_limit_bytes``: what /metrics reports as the process's resident
  memory and its limit. ``delay``: seconds for ``slow``. ``release``: the release label.
- ``asleep``: Railway has the service asleep (serverless). The next request on any route but
  ``/_control`` wakes it and, as Railway's edge does while the app starts, gets a 502; so does
  every request for ``cold_start`` seconds after that. Waking calls the app's wake hooks
  (``WAKE_KEY``), through which the sandbox tells the emulator the deployment runs again.

Run it alone with ``python -m monitor.sandbox.sample_app --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, cast, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from monitor.clock import Clock, SystemClock

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

Mode = Literal["ok", "error", "slow", "flap", "hang"]
MODES: tuple[str, ...] = get_args(Mode)
MIB = 1024 * 1024


class ControlError(ValueError):
    """A fault-control request named an unknown field or gave a bad value."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field = field
        self.value = value


@dataclass
class AppState:
    """What the sample app does now. Change it with :meth:`update` (or ``POST /_control``)."""

    release: str = "v1"
    mode: Mode = "ok"
    delay: float = 10.0
    error_ratio: float = 0.0
    memory_bytes: int = 100 * MIB
    memory_limit_bytes: int = 512 * MIB
    asleep: bool = False
    cold_start: float = 0.0
    _traffic: int = field(default=0, init=False, repr=False)
    _health: int = field(default=0, init=False, repr=False)
    _waking_until: float | None = field(default=None, init=False, repr=False)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Validate every change first, then apply them all (a bad field changes nothing)."""
        checked = {name: _check_field(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)
        # A new mode or ratio starts its pattern afresh, so tests can count on it.
        if "mode" in checked:
            self._health = 0
        if "error_ratio" in checked:
            self._traffic = 0
        if "asleep" in checked:
            self._waking_until = None

    def to_dict(self) -> dict[str, Any]:
        """The public state, as ``GET /_control`` returns it."""
        return {name: getattr(self, name) for name in _FIELDS}

    def next_traffic_fails(self) -> bool:
        """Count one traffic request; whether error_ratio makes it a 500."""
        self._traffic += 1
        ratio = Fraction(self.error_ratio).limit_denominator(10_000)
        n = self._traffic
        return (n * ratio.numerator) // ratio.denominator > (
            (n - 1) * ratio.numerator
        ) // ratio.denominator

    def wakes(self, now: float) -> bool:
        """Whether a request at ``now`` (monotonic) finds the app asleep: it starts waking."""
        if not self.asleep:
            return False
        self.asleep = False
        self._waking_until = now + self.cold_start
        return True

    def starting(self, now: float) -> bool:
        """Whether a request at ``now`` (monotonic) falls in the cold start of a wake."""
        if self._waking_until is not None and now >= self._waking_until:
            self._waking_until = None
        return self._waking_until is not None

    def next_flap_fails(self) -> bool:
        """Count one health request in ``flap`` mode; whether it fails."""
        self._health += 1
        return self._health % 2 == 1


def _mode(value: Any) -> Mode:
    if value not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return cast(Mode, value)


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if not (low <= value <= high and math.isfinite(value)):
            raise ValueError(f"must be between {low:g} and {high:g}")
        return float(value)

    return check


def _bytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number of bytes, 0 or more")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _label(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "mode": _mode,
    "delay": _number(0.0, 86_400.0),
    "error_ratio": _number(0.0, 1.0),
    "memory_bytes": _bytes,
    "memory_limit_bytes": _bytes,
    "release": _label,
    "asleep": _flag,
    "cold_start": _number(0.0, 3_600.0),
}


def _check_field(name: str, value: Any) -> Any:
    check = _FIELDS.get(name)
    if check is None:
        raise ControlError(name, value, f"unknown field (known: {', '.join(_FIELDS)})")
    try:
        return check(value)
    except ValueError as exc:
        raise ControlError(name, value, str(exc)) from None


STATE_KEY = web.AppKey("sample_app_state", AppState)
REGISTRY_KEY = web.AppKey("sample_app_registry", CollectorRegistry)
_CLOCK_KEY = web.AppKey("sample_app_clock", Clock)
_CLOSING_KEY = web.AppKey("sample_app_closing", asyncio.Event)
_REQUESTS_KEY = web.AppKey("sample_app_requests", Counter)
WAKE_KEY = web.AppKey("sample_app_wake_hooks", list[Callable[[], None]])


def create_app(*, release: str = "v1", clock: Clock | None = None) -> web.Application:
    """The sample app, with its own state and metrics registry (see the module docstring)."""
    app = web.Application(middlewares=[_sleeping])
    state = AppState(release=_label(release))
    registry = CollectorRegistry()
    app[STATE_KEY] = state
    app[REGISTRY_KEY] = registry
    app[_CLOCK_KEY] = clock or SystemClock()
    app[_CLOSING_KEY] = asyncio.Event()
    app[WAKE_KEY] = []
    app[_REQUESTS_KEY] = Counter(
        "http_requests", "Requests served, by status code.", ["code"], registry=registry
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


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    mode = state.mode
    if mode in ("hang", "slow"):
        if await _wait(request.app, None if mode == "hang" else state.delay):
            return web.json_response({"status": "shutting down"}, status=503)
    elif mode == "error" or (mode == "flap" and state.next_flap_fails()):
        body = {"status": "error", "mode": mode, "release": state.release}
        return _served(request, web.json_response(body, status=500))
    return _served(request, web.json_response({"status": "ok", "release": state.release}))


async def _traffic(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.mode == "error" or state.next_traffic_fails():
        return _served(request, web.Response(status=500, text="internal error\n"))
    return _served(request, web.Response(text=f"served by {state.release}\n"))


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
    response.headers["X-Release"] = request.app[STATE_KEY].release


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
