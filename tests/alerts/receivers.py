"""A real HTTP receiver for channel tests: records what arrives, answers as scripted.

Usage::

    async with Receiver() as rx:
        rx.reply(429, headers={"Retry-After": "7"}, body="slow down")  # every later answer
        channel = build(config_for(rx.url("/hook")), session, clock)
        ...
        (request,) = rx.requests
        request.json(), request.body, request.headers["Content-Type"], request.path

:func:`notification` builds a Notification with sensible values and any overrides.

``rx.hold()`` makes the receiver keep every later request waiting (until ``rx.release()`` or
the end of the ``async with``), for timeout tests. :data:`NOWHERE` refuses connections.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from monitor.alerts.model import Notification, Severity, Status

NOWHERE = "http://127.0.0.1:1/hook"
"""An address where nothing listens: connecting is refused at once."""


def notification(**changes: Any) -> Notification:
    """A firing critical notification about ``checkout``; keyword arguments replace fields."""
    values: dict[str, Any] = {
        "id": "n-1",
        "key": "checkout/error_rate",
        "kind": "rule_firing",
        "status": Status.FIRING,
        "severity": Severity.CRITICAL,
        "title": "checkout: error rate above 5%",
        "text": "Error rate 7.1% over 5m (threshold 5%).\nRolling back to the last good release.",
        "at": 1_700_000_000.0,
        "started_at": 1_699_999_900.0,
        "service": "checkout",
        "tier": "critical",
        "fields": {"error rate": "7.1%", "threshold": "5%"},
        "url": "http://127.0.0.1:8080/status",
    }
    values.update(changes)
    return Notification(**values)


@dataclass(frozen=True)
class Received:
    """One request as it arrived: the raw body bytes, so signatures can be checked."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Receiver:
    """An aiohttp server on 127.0.0.1 and a free port; see the module docstring."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._reply = _Reply()
        self._released = asyncio.Event()
        self._released.set()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1")

    def url(self, path: str = "/hook") -> str:
        """The receiver's address with ``path`` (which may carry a query)."""
        return str(self._server.make_url("/")).rstrip("/") + path

    def reply(
        self, status: int = 200, body: str | bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Answer every later request with ``status``, ``body`` and ``headers``."""
        data = body.encode() if isinstance(body, str) else body
        self._reply = _Reply(status, data, dict(headers or {}))

    def hold(self) -> None:
        """Keep every later request waiting, without answering, until :meth:`release`."""
        self._released.clear()

    def release(self) -> None:
        """Let held requests be answered."""
        self._released.set()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            Received(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDict(request.headers),
                body=await request.read(),
            )
        )
        await self._released.wait()
        reply = self._reply
        return web.Response(status=reply.status, body=reply.body, headers=reply.headers)

    async def __aenter__(self) -> Receiver:
        await self._server.start_server()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
        await self._server.close()
