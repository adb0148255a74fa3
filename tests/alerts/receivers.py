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
the end of the ``async with``), for timeout tests; ``rx.stall_body()`` sends the status line and
headers of every later answer but holds its body back until ``rx.release()``.
:data:`NOWHERE` refuses connections.

A receiver that honours idempotency keys: ``Receiver(dedup=lambda r: r.headers.get(...))``;
``rx.events`` are then the requests it acted on (answered 2xx, first of their key), while
``rx.requests`` still has every one. :class:`PagerDuty` applies Events API v2 requests the
way PagerDuty does (by ``dedup_key``); :class:`Mailbox` is an SMTP server's mailbox that
keeps one message per ``Message-ID``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
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

    def __init__(self, dedup: Callable[[Received], str | None] | None = None) -> None:
        self.requests: list[Received] = []
        self.events: list[Received] = []
        self._dedup = dedup
        self._seen: set[str] = set()
        self._reply = _Reply()
        self._released = asyncio.Event()
        self._released.set()
        self._stall_body = False
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

    def stall_body(self) -> None:
        """Send every later answer's status and headers at once, its body after :meth:`release`."""
        self._stall_body = True
        self._released.clear()

    def release(self) -> None:
        """Let held requests be answered (and stalled bodies be sent)."""
        self._released.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=await request.read(),
        )
        self.requests.append(received)
        reply = self._reply
        if 200 <= reply.status < 300:
            # Acted on before answering, as a receiver does: an answer lost on the way back
            # (railguard killed) leaves the event done.
            key = self._dedup(received) if self._dedup is not None else None
            if key is None or key not in self._seen:
                self.events.append(received)
            if key is not None:
                self._seen.add(key)
        if self._stall_body:
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            response.content_length = len(reply.body) + 1
            await response.prepare(request)
            await response.write(reply.body)
            await self._released.wait()
            await response.write(b"\n")
            await response.write_eof()
            return response
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


class PagerDuty:
    """Events API v2 requests applied as PagerDuty applies them, by ``dedup_key``.

    A trigger whose ``dedup_key`` has no open alert opens one (a page); a trigger for an open
    alert is deduplicated into it (a log entry, no page); a resolve closes the open alert and
    is ignored when there is none.
    """

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.pages: list[str] = []
        self.deduplicated: list[str] = []
        self.resolved: list[str] = []

    def apply(self, requests: list[Received]) -> PagerDuty:
        """Apply ``requests`` in order; returns self."""
        for request in requests:
            body = request.json()
            key, action = body["dedup_key"], body["event_action"]
            if action == "trigger" and key in self.open:
                self.deduplicated.append(key)
            elif action == "trigger":
                self.open.add(key)
                self.pages.append(key)
            elif action == "resolve" and key in self.open:
                self.open.discard(key)
                self.resolved.append(key)
        return self


class Mailbox:
    """An aiosmtpd handler: takes every message, keeps one per ``Message-ID`` in ``inbox``."""

    def __init__(self) -> None:
        self.delivered: list[EmailMessage] = []
        self.inbox: dict[str, EmailMessage] = {}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.delivered.append(message)
        self.inbox.setdefault(str(message["Message-ID"]), message)
        return "250 accepted"


@contextmanager
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    """A plain SMTP server on 127.0.0.1 (its port and mailbox) for the ``with`` block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()
