"""The Slack channel: Block Kit as Slack documents it for incoming webhooks, and its answers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels.slack import Config, build, mrkdwn, payload
from monitor.alerts.model import Severity, Status
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from tests.alerts.receivers import NOWHERE, Receiver, notification

TOKEN = "XXXXsecretXXXX"
# Outside Slack's own markup (links, dates), a reserved character must be an entity.
MARKUP = re.compile(r"<(?:https?://|!date\^)[^<>]*>")
BARE = re.compile(r"&(?!amp;|lt;|gt;)|[<>]")


def escaped(text: str) -> bool:
    """Whether ``text`` has no raw ``&``, ``<`` or ``>`` outside Slack's markup."""
    return not BARE.search(MARKUP.sub("", text))


def config(hook: str, **keys: Any) -> Config:
    data = {"type": "slack", "url": "${SLACK}", **keys}
    return Config.model_validate(data, context={"environ": {"SLACK": hook}})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        receiver.reply(200, "ok")
        yield receiver


def texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn text in the message."""
    blocks = message["blocks"]
    found = [message["text"]]
    for block in blocks:
        if block["type"] == "section":
            found += [block["text"]["text"]] if "text" in block else []
            found += [f["text"] for f in block.get("fields", [])]
        if block["type"] == "context":
            found += [e["text"] for e in block["elements"]]
    return found


async def test_posts_block_kit(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    path = f"/services/T000/B000/{TOKEN}"
    channel = build(config(rx.url(path)), session, clock)
    await channel.send(notification(text="5xx > 5% & rising <fast>"))

    (request,) = rx.requests
    assert request.path == path
    message = request.json()
    assert message["text"] == ":rotating_light: [CRITICAL] firing: checkout: error rate above 5%"
    header, section, facts, context = message["blocks"]
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":rotating_light: checkout: error rate above 5%",
            "emoji": True,
        },
    }
    assert section["type"] == "section"
    assert section["text"] == {
        "type": "mrkdwn",
        "text": ":rotating_light: *Firing* · *CRITICAL*\n"
        "5xx &gt; 5% &amp; rising &lt;fast&gt;\n"
        "<http://127.0.0.1:8080/status|Open in railguard>",
    }
    assert facts == {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*error rate*\n7.1%"},
            {"type": "mrkdwn", "text": "*threshold*\n5%"},
        ],
    }
    assert context == {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "service *checkout*"},
            {"type": "mrkdwn", "text": "tier critical"},
            {
                "type": "mrkdwn",
                "text": "<!date^1700000000^{date_short_pretty} at {time_secs}"
                "|2023-11-14 22:13:20 UTC>",
            },
        ],
    }
    assert channel.name == "slack"


@pytest.mark.parametrize(
    ("severity", "status", "header", "state"),
    [
        (Severity.CRITICAL, Status.FIRING, ":rotating_light: t", ":rotating_light: *Firing*"),
        (Severity.WARNING, Status.FIRING, ":warning: t", ":warning: *Firing*"),
        (Severity.INFO, Status.FIRING, ":information_source: t", ":information_source: *Firing*"),
        (
            Severity.CRITICAL,
            Status.RESOLVED,
            ":white_check_mark: Resolved: t",
            ":white_check_mark: *Resolved*",
        ),
    ],
)
def test_severity_and_status_show(
    severity: Severity, status: Status, header: str, state: str
) -> None:
    message = payload(notification(title="t", severity=severity, status=status))
    assert message["blocks"][0]["text"]["text"] == header
    assert message["blocks"][1]["text"]["text"].startswith(state)
    assert message["text"].endswith(f"[{severity.value.upper()}] {status.value}: t")


def test_every_limit_holds_for_long_notifications() -> None:
    fields = {f"key {i} <{'k' * 300}>": f"v&{'v' * 3000}" for i in range(15)}
    huge = notification(title="T&" * 200, text="a < b & c > d " * 1000, fields=fields)
    message = payload(huge)

    header, section, facts, _ = message["blocks"]
    assert len(header["text"]["text"]) == 150
    assert header["text"]["text"].endswith("…")
    assert len(section["text"]["text"]) <= 3000
    assert section["text"]["text"].endswith("|Open in railguard>")
    assert "…" in section["text"]["text"]
    assert len(facts["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in facts["fields"])
    assert facts["fields"][-1]["text"].startswith("*…*\n6 more: key 9 &lt;")
    assert len(message["text"]) <= 3000
    for text in texts(message):
        assert escaped(text), text


def test_an_entity_is_never_cut_in_half() -> None:
    for tail in range(6):
        text = "a" * (2995 + tail) + "&" * 10
        cut = mrkdwn(text, 3000)
        assert len(cut) <= 3000
        assert cut.endswith("…")
        assert escaped(cut)


def test_a_bare_notification_has_no_fields_section() -> None:
    message = payload(notification(fields={}, service=None, tier=None, url=None))
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds == ["header", "section", "context"]
    assert len(message["blocks"][2]["elements"]) == 1
    assert "Open in railguard" not in message["blocks"][1]["text"]["text"]


def test_config() -> None:
    assert config("https://hooks.slack.com/services/T/B/X", name="ops").name == "ops"
    with pytest.raises(ValidationError):
        Config.model_validate({"type": "slack", "url": "https://hooks.slack.com/services/T/B/X"})
    with pytest.raises(ValidationError):
        config("https://hooks.slack.com/x", channel="#ops")


@pytest.mark.parametrize(
    ("status", "body", "headers", "permanent", "retry_after"),
    [
        (400, "invalid_payload", {}, True, None),
        (403, "action_prohibited", {}, True, None),
        (404, "no_service", {}, True, None),
        (410, "channel_is_archived", {}, True, None),
        (429, "rate_limited", {"Retry-After": "30"}, False, 30.0),
        (500, "rollup_error", {}, False, None),
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
        await build(config(rx.url(f"/services/T/B/{TOKEN}")), session, clock).send(notification())
    assert (caught.value.permanent, caught.value.retry_after) == (permanent, retry_after)
    assert body in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("where", ["held", "refused"])
async def test_timeout_and_refusal_are_transient(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock, where: str
) -> None:
    rx.hold()
    hook = rx.url(f"/services/T/B/{TOKEN}") if where == "held" else f"{NOWHERE}/{TOKEN}"
    channel = build(config(hook, timeout="0.1s"), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert not caught.value.permanent
    assert TOKEN not in str(caught.value)


async def test_no_idempotency_key_so_a_resend_posts_again(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # Slack's webhook takes no key: a message sent again after a kill (taken by
    # Slack, not yet recorded as sent) is the same request and shows twice.
    channel = build(config(rx.url("/hook")), session, clock)
    await channel.send(notification())
    await channel.send(notification())
    first, again = rx.requests
    assert first.body == again.body
    assert "Idempotency-Key" not in first.headers
