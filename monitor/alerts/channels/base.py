"""What every channel is: a config model with filters, and something that sends."""

from __future__ import annotations

import hashlib
from typing import Protocol

from pydantic import Field

from monitor.alerts.model import Notification, Severity
from monitor.configtypes import Strict, Timeout


def idempotency_key(notification: Notification) -> str:
    """The message's idempotency key: 32 hex digits, the same on every retry and restart.

    Derived from the outbox's message id (``notification.id``, unique per channel in the
    outbox), with the incident key and the message's time: ids such as ``event-7`` start over
    with a new database, and a receiver must not drop a new message as a duplicate of an old
    one. Everything it is made of is stored in the outbox row, so a message re-sent after a
    kill (delivered, but not yet recorded as sent) carries the same key, and a receiver that
    honours it sees one message. The same notification has the same key in every channel.
    """
    n = notification
    return hashlib.sha256(f"{n.id}\0{n.key}\0{n.at!r}".encode()).hexdigest()[:32]


class ChannelConfig(Strict):
    """Keys every ``[[channels]]`` table has besides ``type`` and its own."""

    name: str | None = Field(None, min_length=1, max_length=64)
    """How logs and metrics call it (default: its type, numbered if there are several)."""
    min_severity: Severity = Severity.INFO
    """Only notifications at least this urgent."""
    tiers: tuple[str, ...] | None = None
    """Only notifications about services of these tiers (default: all)."""
    timeout: Timeout = 10.0

    def wants(self, notification: Notification) -> bool:
        """Whether this channel's filters let ``notification`` through."""
        if notification.severity.rank < self.min_severity.rank:
            return False
        return self.tiers is None or notification.tier is None or notification.tier in self.tiers


class Channel(Protocol):
    """Sends notifications somewhere. One file per channel type, registered by ``type``.

    ``send`` returns once the receiver accepted the notification. It raises
    :class:`~monitor.errors.ChannelError`: with ``permanent=True`` when retrying cannot help
    (a 4xx other than 408/429, a bad address), otherwise the outbox retries later, no sooner
    than ``retry_after`` seconds when the receiver said so (429 ``Retry-After``).

    A message is delivered at least once: killed between the receiver's answer and the
    outbox's record, the next run sends it again. Where the receiver allows it, the message
    carries :func:`idempotency_key` so the receiver drops the repeat (webhook header and body,
    email ``Message-ID``); PagerDuty and Alertmanager fold a repeat into the incident's alert
    by its ``dedup_key`` or labels; Slack and Discord have nothing of the kind.
    """

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver one notification."""
        ...
