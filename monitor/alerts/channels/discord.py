"""The Discord channel: a webhook message with one embed.

Payload (https://discord.com/developers/docs/resources/webhook#execute-webhook and
https://discord.com/developers/docs/resources/message#embed-object)::

    {"content": "🚨 **CRITICAL** firing: <title>",           # ≤2000
     "username": <config.username, if set>,
     "allowed_mentions": {"parse": []},                     # an "@everyone" in text pings no one
     "embeds": [{"title": <≤256>, "description": <≤4096>, "url": <notification.url>,
                 "color": <int>, "timestamp": "2023-11-14T22:13:20+00:00",
                 "fields": [{"name": <≤256>, "value": <≤1024>, "inline": bool}, …≤25],
                 "footer": {"text": "railguard · <service> · tier <tier> · <kind>"}}]}

Colours: red critical, amber warning, blue info, green once resolved. Every text is cut to its
limit with "…", and the embed as a whole to Discord's 6000 characters (fields share what the
title, footer and the start of the description leave). Discord answers 204 (200 with
``?wait=true``); a 429 carries ``Retry-After`` and a JSON ``retry_after``.

No idempotency: a webhook execution takes no key (a message's ``nonce`` and
``enforce_nonce`` belong to the bot API, not to webhooks), so a message sent again after a
kill (Discord took it, railguard died before recording it as sent) is posted twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import Field

from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.alerts.channels.http import JsonWebhook, SecretUrl, clip
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import Clock
from monitor.configtypes import Text

CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
MAX_FIELDS = 25
FOOTER_LIMIT = 256  # Discord allows 2048; a footer this long would crowd out the facts
EMBED_LIMIT = 6000
DESCRIPTION_RESERVE = 2048  # what fields must leave for the description
INLINE_UP_TO = 60  # longer values get a line of their own

RED, AMBER, BLUE, GREEN = 0xE53935, 0xFFA000, 0x1E88E5, 0x43A047
_COLOR = {Severity.CRITICAL: RED, Severity.WARNING: AMBER, Severity.INFO: BLUE}
_EMOJI = {Severity.CRITICAL: "🚨", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}  # noqa: RUF001
RESOLVED = "✅"


class Config(ChannelConfig):
    """``[[channels]] type = "discord"``."""

    type: Literal["discord"]
    url: SecretUrl
    """The webhook URL (``${DISCORD_WEBHOOK_URL}``): its path holds the webhook's token."""
    username: Text | None = Field(None, min_length=1, max_length=80)
    """Overrides the webhook's default name."""


def _fields(fields: Mapping[str, str], budget: int) -> list[dict[str, Any]]:
    items = list(fields.items())
    if len(items) > MAX_FIELDS:
        rest = items[MAX_FIELDS - 1 :]
        items = items[: MAX_FIELDS - 1]
        items.append(("…", f"{len(rest)} more: " + ", ".join(key for key, _ in rest)))
    out = []
    for i, (key, value) in enumerate(items):
        # A fair share of what is left: short fields leave more for the long ones after them.
        share = budget // (len(items) - i)
        name = clip(key or "—", min(FIELD_NAME_LIMIT, share // 4))
        text = clip(value or "—", min(FIELD_VALUE_LIMIT, share - len(name)))
        budget -= len(name) + len(text)
        inline = len(text) <= INLINE_UP_TO and "\n" not in text
        out.append({"name": name, "value": text, "inline": inline})
    return out


def payload(notification: Notification, username: str | None = None) -> dict[str, Any]:
    """The webhook message for ``notification``."""
    n = notification
    resolved = n.status is Status.RESOLVED
    emoji = RESOLVED if resolved else _EMOJI[n.severity]
    title = clip(f"Resolved: {n.title}" if resolved else n.title, TITLE_LIMIT)
    about = [f"tier {n.tier}" if n.tier else "", n.kind]
    footer = clip(" · ".join(p for p in ["railguard", n.service or "", *about] if p), FOOTER_LIMIT)
    reserve = min(len(n.text), DESCRIPTION_RESERVE)
    fields = _fields(n.fields, EMBED_LIMIT - len(title) - len(footer) - reserve)
    used = len(title) + len(footer) + sum(len(f["name"]) + len(f["value"]) for f in fields)
    description = clip(n.text, min(DESCRIPTION_LIMIT, EMBED_LIMIT - used))
    embed: dict[str, Any] = {
        "title": title,
        "description": description,
        "color": GREEN if resolved else _COLOR[n.severity],
        "timestamp": datetime.fromtimestamp(n.at, UTC).isoformat(),
        "fields": fields,
        "footer": {"text": footer},
    }
    # Discord refuses empty strings where it expects text.
    embed = {key: value for key, value in embed.items() if value != ""}
    if n.url and n.url.startswith(("http://", "https://")):
        embed["url"] = n.url
    state = "resolved" if resolved else "firing"
    content = f"{emoji} **{n.severity.value.upper()}** {state}: {n.title}"
    message: dict[str, Any] = {
        "content": clip(content, CONTENT_LIMIT),
        "allowed_mentions": {"parse": []},
        "embeds": [embed],
    }
    if username is not None:
        message["username"] = username
    return message


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The Discord channel for ``config``."""
    return JsonWebhook(
        config.name or config.type,
        config.url,
        lambda n: payload(n, config.username),
        session=session,
        clock=clock,
        timeout=config.timeout,
    )
