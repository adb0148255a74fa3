"""The generic webhook channel: the notification as JSON, optionally signed with HMAC-SHA256.

The body is :meth:`Notification.to_dict` plus ``"idempotency_key"`` and
``"source": "railguard"``, e.g.::

    {"id": "event-7", "key": "checkout/error_rate", "kind": "rule_firing", "status": "firing",
     "severity": "critical", "title": "…", "text": "…", "at": 1700000000.0,
     "started_at": 1699999900.0, "service": "checkout", "tier": "critical",
     "fields": {"error rate": "7.1%"}, "url": "https://…/status",
     "idempotency_key": "3f1c…(32 hex digits)", "source": "railguard"}

Every request carries ``Idempotency-Key: <key>``, the body's ``idempotency_key``: the same on
every retry of a message and after a restart (see
:func:`~monitor.alerts.channels.base.idempotency_key`). railguard delivers at least once: killed
after the receiver took a message but before recording it as sent, the next run sends it
again, with the same key. A receiver that keeps the keys it has seen (for a day, say) and
answers 2xx to a repeat without acting on it sees every message exactly once. Deduplicate by
the key, not by ``id``: ids such as ``event-7`` start over with a new railguard database.

With ``secret`` set, two more headers come along:

- ``X-Railguard-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the secret, of the exact
  body bytes (the key in the body is signed with the rest);
- ``X-Railguard-Timestamp: <unix seconds>``: when this attempt was sent.

A receiver verifies the signature over the raw body, before parsing it::

    expected = "sha256=" + hmac.new(key, raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers["X-Railguard-Signature"]):
        reject()

The signature covers the body only, so a retry of the same message carries the same
signature. Against replays, a receiver drops an ``idempotency_key`` it has seen and may refuse
an old ``at``; the timestamp header is for its logs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Literal

import aiohttp

from monitor.alerts.channels.base import Channel, ChannelConfig, idempotency_key
from monitor.alerts.channels.http import SecretUrl, post_json
from monitor.alerts.model import Notification
from monitor.clock import Clock
from monitor.configtypes import Secret, Text

SIGNATURE_HEADER = "X-Railguard-Signature"
TIMESTAMP_HEADER = "X-Railguard-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Config(ChannelConfig):
    """``[[channels]] type = "webhook"``."""

    type: Literal["webhook"]
    url: SecretUrl
    """Where to POST; a ``${VAR}`` reference, as the URL may carry a token."""
    secret: Secret | None = None
    """The HMAC-SHA256 key; without it, requests are not signed."""
    headers: dict[str, Text] = {}
    """Extra request headers (``Authorization = "Bearer ${TOKEN}"``)."""


def body(notification: Notification) -> bytes:
    """The exact bytes posted (and signed) for ``notification``."""
    payload = {
        **notification.to_dict(),
        "idempotency_key": idempotency_key(notification),
        "source": "railguard",
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sign(key: str, data: bytes) -> str:
    """The ``X-Railguard-Signature`` value for ``data``."""
    return "sha256=" + hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs each notification as JSON to one URL."""

    def __init__(self, config: Config, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.name = config.name or config.type
        self._config = config
        self._session = session
        self._clock = clock

    async def send(self, notification: Notification) -> None:
        """POST ``notification``; raises ChannelError as the Channel protocol says."""
        config = self._config
        data = body(notification)
        headers = dict(config.headers)
        # After the configured headers: the key is railguard's, one per message.
        headers[IDEMPOTENCY_HEADER] = idempotency_key(notification)
        if config.secret is not None:
            headers[SIGNATURE_HEADER] = sign(config.secret.get_secret_value(), data)
            headers[TIMESTAMP_HEADER] = str(int(self._clock.time()))
        await post_json(
            self._session,
            config.url.get_secret_value(),
            None,
            data=data,
            headers=headers,
            timeout=config.timeout,
            clock=self._clock,
        )


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The webhook channel for ``config``."""
    return WebhookChannel(config, session, clock)
