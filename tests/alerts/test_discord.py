"""The Discord channel: a webhook message with one embed, as Discord documents it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels.discord import AMBER, BLUE, GREEN, RED, Config, build, payload
from monitor.alerts.model import Severity, Status
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from tests.alerts.receivers import NOWHERE, Receiver, notification

TOKEN = "wEbHoOk-ToKeN"


def config(hook: str, **keys: Any) -> Config:
    data = {"type": "discord", "url": "${DISCORD}", **keys}
    return Config.model_validate(data, context={"environ": {"DISCORD": hook, "BOT": "guard"}})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        receiver.reply(204)
        yield receiver


def embed_size(embed: dict[str, Any]) -> int:
    """Characters Discord counts against an embed's 6000."""
    fields = sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    footer = len(embed["footer"]["text"])
    return len(embed.get("title", "")) + len(embed.get("description", "")) + fields + footer


async def test_posts_content_and_one_embed(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    path = f"/api/webhooks/123/{TOKEN}"
    channel = build(config(rx.url(path), username="${BOT}"), session, clock)
    await channel.send(notification(text="@everyone look"))

    (request,) = rx.requests
    assert request.path == path
    assert request.json() == {
        "content": "🚨 **CRITICAL** firing: checkout: error rate above 5%",
        "username": "guard",
        "allowed_mentions": {"parse": []},
        "embeds": [
            {
                "title": "checkout: error rate above 5%",
                "description": "@everyone look",
                "url": "http://127.0.0.1:8080/status",
                "color": RED,
                "timestamp": "2023-11-14T22:13:20+00:00",
                "fields": [
                    {"name": "error rate", "value": "7.1%", "inline": True},
                    {"name": "threshold", "value": "5%", "inline": True},
                ],
                "footer": {"text": "railguard · checkout · tier critical · rule_firing"},
            }
        ],
    }
    assert channel.name == "discord"


@pytest.mark.parametrize(
    ("severity", "status", "color", "content", "title"),
    [
        (Severity.CRITICAL, Status.FIRING, RED, "🚨 **CRITICAL** firing: t", "t"),
        (Severity.WARNING, Status.FIRING, AMBER, "⚠️ **WARNING** firing: t", "t"),
        (Severity.INFO, Status.FIRING, BLUE, "ℹ️ **INFO** firing: t", "t"),  # noqa: RUF001
        (Severity.CRITICAL, Status.RESOLVED, GREEN, "✅ **CRITICAL** resolved: t", "Resolved: t"),
    ],
)
def test_severity_and_status_show(
    severity: Severity, status: Status, color: int, content: str, title: str
) -> None:
    message = payload(notification(title="t", severity=severity, status=status))
    (embed,) = message["embeds"]
    assert (message["content"], embed["color"], embed["title"]) == (content, color, title)
    assert "username" not in message


def test_every_limit_holds_for_long_notifications() -> None:
    fields = {f"{i}-{'k' * 400}": "v" * 2000 for i in range(30)}
    huge = notification(title="T" * 3000, text="d" * 9000, fields=fields, service="s" * 3000)
    message = payload(huge)

    (embed,) = message["embeds"]
    assert len(message["content"]) == 2000
    assert message["content"].endswith("…")
    assert len(embed["title"]) == 256
    assert len(embed["description"]) <= 4096
    assert len(embed["description"]) >= 2048  # the text keeps its share
    assert len(embed["footer"]["text"]) <= 256
    assert len(embed["fields"]) == 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])
    assert all(f["name"] and f["value"] for f in embed["fields"])
    assert embed["fields"][-1]["name"] == "…"
    assert embed["fields"][-1]["value"].startswith("6 more: 24-kkk")
    assert not any(f["inline"] for f in embed["fields"])
    assert embed_size(embed) <= 6000


def test_a_few_long_fields_keep_their_full_limits() -> None:
    fields = {"k" * 300: "v" * 2000, "short": ""}
    (embed,) = payload(notification(fields=fields))["embeds"]
    first, second = embed["fields"]
    assert (len(first["name"]), len(first["value"])) == (256, 1024)
    assert second == {"name": "short", "value": "—", "inline": True}
    assert embed_size(embed) <= 6000


def test_empty_text_is_left_out() -> None:
    message = payload(notification(text="", title="", url="/status", fields={}))
    (embed,) = message["embeds"]
    assert "description" not in embed
    assert "title" not in embed
    assert "url" not in embed  # Discord refuses a relative URL
    assert embed["fields"] == []


def test_config() -> None:
    assert config("https://discord.com/api/webhooks/1/x", name="ops").name == "ops"
    with pytest.raises(ValidationError):
        Config.model_validate({"type": "discord", "url": "https://discord.com/api/webhooks/1/x"})
    with pytest.raises(ValidationError):
        config("https://discord.com/api/webhooks/1/x", avatar="x")
    with pytest.raises(ValidationError):
        config("https://discord.com/api/webhooks/1/x", username="u" * 81)


async def test_200_with_wait_is_delivered(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.reply(200, '{"id": "1"}', {"Content-Type": "application/json"})
    await build(config(rx.url("/api/webhooks/1/x?wait=true")), session, clock).send(notification())
    assert rx.requests[0].query == {"wait": "true"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "permanent", "retry_after"),
    [
        (429, '{"message": "rate limited", "retry_after": 1.5}', {"Retry-After": "2"}, False, 2.0),
        (429, '{"message": "rate limited", "retry_after": 1.5}', {}, False, 1.5),
        (400, '{"message": "Invalid Form Body", "code": 50035}', {}, True, None),
        (404, '{"message": "Unknown Webhook", "code": 10015}', {}, True, None),
        (500, "", {}, False, None),
        (502, "bad gateway", {}, False, None),
    ],
)
async def test_answers(
    rx: Receiver,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    status: int,
    body: str,
    headers: dict[str, str],
    permanent: bool,
    retry_after: float | None,
) -> None:
    rx.reply(status, body, headers)
    with pytest.raises(ChannelError) as caught:
        await build(config(rx.url(f"/api/webhooks/1/{TOKEN}")), session, clock).send(notification())
    assert (caught.value.permanent, caught.value.retry_after) == (permanent, retry_after)
    assert f"answered {status}" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("where", ["held", "refused"])
async def test_timeout_and_refusal_are_transient(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock, where: str
) -> None:
    rx.hold()
    hook = rx.url(f"/api/webhooks/1/{TOKEN}") if where == "held" else f"{NOWHERE}/{TOKEN}"
    channel = build(config(hook, timeout="0.1s"), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert not caught.value.permanent
    assert TOKEN not in str(caught.value)


async def test_no_idempotency_key_so_a_resend_posts_again(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # Discord's webhook takes no key: a message sent again after a kill (taken by
    # Discord, not yet recorded as sent) is the same request and shows twice.
    channel = build(config(rx.url("/hook")), session, clock)
    await channel.send(notification())
    await channel.send(notification())
    first, again = rx.requests
    assert first.body == again.body
    assert "Idempotency-Key" not in first.headers
