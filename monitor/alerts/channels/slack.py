"""The Slack channel: an incoming webhook, a Block Kit message.

Payload (https://api.slack.com/messaging/webhooks, https://api.slack.com/reference/block-kit)::

    {"text": ":rotating_light: [CRITICAL] firing: <title>",     # notification fallback
     "blocks": [
       {"type": "header", "text": {"type": "plain_text", "text": <≤150>, "emoji": true}},
       {"type": "section", "text": {"type": "mrkdwn", "text": <status, text, link; ≤3000>}},
       {"type": "section", "fields": [{"type": "mrkdwn", "text": "*key*\\nvalue"}, …≤10]},
       {"type": "context", "elements": [<service>, <tier>, <time>]}]}

The fields section is left out when there are no fields. Text is escaped (``&``, ``<``, ``>``)
as Slack asks and cut to each limit with "…" rather than refused. Slack answers 200 ``ok``;
its errors (400 ``invalid_payload``, 403 ``action_prohibited``, 404 ``no_service``, 410
``channel_is_archived``) are permanent.

No idempotency: an incoming webhook takes no key and Slack does not drop a repeated message.
railguard delivers at least once, so a message sent again after a kill (Slack took it,
railguard died before recording it as sent) is posted twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp

from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.alerts.channels.http import JsonWebhook, SecretUrl, clip
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import Clock

HEADER_LIMIT = 150
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
MAX_FIELDS = 10

_EMOJI = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
RESOLVED = ":white_check_mark:"


class Config(ChannelConfig):
    """``[[channels]] type = "slack"``."""

    type: Literal["slack"]
    url: SecretUrl
    """The incoming webhook URL (``${SLACK_WEBHOOK_URL}``): the URL is the credential."""


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves for its own markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str, limit: int) -> str:
    """``text`` escaped, then cut to ``limit`` without splitting an ``&amp;``-style entity."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    # An entity is at most 5 characters, so a split one starts in the last 4.
    amp = cut.rfind("&", len(cut) - 4)
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _text(value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": value}


def _fields(fields: dict[str, str]) -> list[dict[str, str]]:
    items = list(fields.items())
    if len(items) > MAX_FIELDS:
        # Keep room for one field that says what was left out.
        rest = items[MAX_FIELDS - 1 :]
        items = items[: MAX_FIELDS - 1]
        more = f"{len(rest)} more: " + ", ".join(key for key, _ in rest)
        items.append(("…", more))
    out = []
    for key, value in items:
        name = f"*{mrkdwn(key, 200)}*\n"
        out.append(_text(name + mrkdwn(value, FIELD_LIMIT - len(name))))
    return out


def payload(notification: Notification) -> dict[str, Any]:
    """The Block Kit message for ``notification``."""
    n = notification
    resolved = n.status is Status.RESOLVED
    emoji = RESOLVED if resolved else _EMOJI[n.severity]
    header = f"{emoji} Resolved: {n.title}" if resolved else f"{emoji} {n.title}"
    state = f"{RESOLVED} *Resolved*" if resolved else f"{_EMOJI[n.severity]} *Firing*"
    lead = f"{state} · *{n.severity.value.upper()}*\n"
    link = f"\n<{escape(n.url).replace('|', '%7C')}|Open in railguard>" if n.url else ""
    body = lead + mrkdwn(n.text, TEXT_LIMIT - len(lead) - len(link)) + link
    title = {"type": "plain_text", "text": clip(header, HEADER_LIMIT), "emoji": True}
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": title},
        {"type": "section", "text": _text(body)},
    ]
    if n.fields:
        blocks.append({"type": "section", "fields": _fields(dict(n.fields))})
    context = [f"service *{mrkdwn(n.service, 200)}*"] if n.service else []
    context += [f"tier {mrkdwn(n.tier, 200)}"] if n.tier else []
    # Slack shows the date in each reader's time zone; the text after | is the fallback.
    at, utc = int(n.at), datetime.fromtimestamp(n.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    context.append(f"<!date^{at}^{{date_short_pretty}} at {{time_secs}}|{utc}>")
    blocks.append({"type": "context", "elements": [_text(c) for c in context]})
    fallback = f"{emoji} [{n.severity.value.upper()}] {n.status.value}: {n.title}"
    return {"text": mrkdwn(fallback, TEXT_LIMIT), "blocks": blocks}


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The Slack channel for ``config``."""
    return JsonWebhook(
        config.name or config.type,
        config.url,
        payload,
        session=session,
        clock=clock,
        timeout=config.timeout,
    )
