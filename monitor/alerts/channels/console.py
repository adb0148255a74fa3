"""The console channel: one readable block per notification on stdout or stderr.

What the demo shows, and a channel that cannot fail: a closed or broken stream loses the
message rather than making the outbox retry it forever. No idempotency key: a block printed
again after a kill (before the outbox recorded it) is printed twice, which harms no one.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Literal

import aiohttp

from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.alerts.model import Notification, Status
from monitor.clock import Clock


class Config(ChannelConfig):
    """``[[channels]] type = "console"``."""

    type: Literal["console"]
    stream: Literal["stdout", "stderr"] = "stderr"


def render(notification: Notification) -> str:
    """The block printed for ``notification`` (ends with a blank line)."""
    n = notification
    state = "RESOLVED" if n.status is Status.RESOLVED else "FIRING"
    when = datetime.fromtimestamp(n.at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    lines = [f"[{n.severity.value.upper()}] {state}: {n.title}"]
    about = [f"service {n.service}" if n.service else "", f"tier {n.tier}" if n.tier else ""]
    lines.append("  " + ", ".join([a for a in about if a] + [when]))
    lines += [f"  {line}" for line in n.text.splitlines() if line.strip()]
    lines += [f"  {key}: {value}" for key, value in n.fields.items()]
    if n.url:
        lines.append(f"  {n.url}")
    return "\n".join(lines) + "\n\n"


class ConsoleChannel:
    """Prints notifications; never raises."""

    def __init__(self, config: Config) -> None:
        self.name = config.name or config.type
        self._stream = config.stream

    async def send(self, notification: Notification) -> None:
        """Print ``notification``; a failing stream drops it (there is nowhere to report to)."""
        # Looked up at each send: tests and the demo swap sys.stdout/sys.stderr.
        stream = sys.stdout if self._stream == "stdout" else sys.stderr
        try:
            stream.write(render(notification))
            stream.flush()
        except (OSError, ValueError):
            pass


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The console channel for ``config`` (``session`` and ``clock`` are not needed)."""
    return ConsoleChannel(config)
