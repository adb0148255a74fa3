"""What every channel is: a config model with filters, and something that sends."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from monitor.alerts.model import Notification, Severity
from monitor.configtypes import Strict, Timeout


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
    """

    name: str

    async def send(self, notification: Notification) -> None:
        """Deliver one notification."""
        ...
