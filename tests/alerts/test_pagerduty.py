"""The PagerDuty channel against a recording receiver: Events API v2, field by field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels import pagerduty
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from tests.alerts.receivers import NOWHERE, PagerDuty, Receiver

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
ENVIRON = {"PD_KEY": ROUTING_KEY}


def config(url: str, **extra: Any) -> pagerduty.Config:
    data = {"type": "pagerduty", "routing_key": "${PD_KEY}", "url": url, **extra}
    return pagerduty.Config.model_validate(data, context={"environ": ENVIRON})


def notification(**changes: Any) -> Notification:
    base: dict[str, Any] = {
        "id": "event-7",
        "key": "railguard/checkout/5xx",
        "kind": "rule_firing",
        "status": Status.FIRING,
        "severity": Severity.CRITICAL,
        "title": "checkout: 5xx firing",
        "text": "7.1% of requests failed over 5m",
        "at": 1_700_000_000.0,
        "started_at": 1_699_999_900.0,
        "service": "checkout",
        "tier": "critical",
        "fields": {"rule": "5xx", "error rate": "7.1%"},
        "url": "https://railguard.example/status",
    }
    return Notification(**{**base, **changes})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    async with Receiver() as receiver:
        receiver.reply(202, body='{"status":"success","message":"Event processed"}')
        yield receiver


async def test_trigger_then_resolve_share_the_dedup_key(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = pagerduty.build(config(rx.url("/v2/enqueue")), session, clock)
    await channel.send(notification())
    await channel.send(notification(id="event-9", status=Status.RESOLVED, kind="rule_resolved"))

    trigger, resolve = (r.json() for r in rx.requests)
    assert [r.path for r in rx.requests] == ["/v2/enqueue", "/v2/enqueue"]
    assert rx.requests[0].headers["Content-Type"] == "application/json"
    assert trigger == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "railguard/checkout/5xx",
        "client": "railguard",
        "client_url": "https://railguard.example/status",
        "payload": {
            "summary": "checkout: 5xx firing",
            "source": "railguard",
            "severity": "critical",
            "timestamp": "2023-11-14T22:13:20.000Z",
            "component": "checkout",
            "group": "critical",
            "class": "rule_firing",
            "custom_details": {
                "rule": "5xx",
                "error rate": "7.1%",
                "text": "7.1% of requests failed over 5m",
            },
        },
        "links": [{"href": "https://railguard.example/status", "text": "railguard status"}],
    }
    assert resolve == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "railguard/checkout/5xx",
    }


async def test_an_event_sent_again_is_folded_into_the_incident(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # A kill between PagerDuty's 202 and the outbox's record sends the same event again (the
    # outbox keeps order, so it is always the oldest unrecorded one): the incident's
    # dedup_key makes the repeated trigger a log entry of the open alert, not a second page,
    # and the repeated resolve a no-op.
    channel = pagerduty.build(config(rx.url("/v2/enqueue")), session, clock)
    trigger = notification()
    resolve = notification(id="event-9", status=Status.RESOLVED, kind="rule_resolved")
    for n in (trigger, trigger, resolve, resolve):
        await channel.send(n)

    first, again, _, _ = rx.requests
    assert first.body == again.body  # the same event, byte for byte
    pd = PagerDuty().apply(rx.requests)
    assert pd.pages == ["railguard/checkout/5xx"]
    assert pd.deduplicated == ["railguard/checkout/5xx"]
    assert pd.resolved == ["railguard/checkout/5xx"]
    assert pd.open == set()
    # Another message of the incident keeps the incident's dedup_key: the key is the
    # incident's, not the message's, or the resolve would close nothing.
    await channel.send(notification(id="event-8", title="checkout: rolling back"))
    assert rx.requests[-1].json()["dedup_key"] == "railguard/checkout/5xx"


@pytest.mark.parametrize("severity", list(Severity))
async def test_severity_maps_to_pagerduty_severity(
    severity: Severity, rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = pagerduty.build(config(rx.url()), session, clock)
    await channel.send(notification(severity=severity))
    expected = {"critical": "critical", "warning": "warning", "info": "info"}[severity.value]
    assert rx.requests[0].json()["payload"]["severity"] == expected


async def test_long_summary_is_cut_to_pagerdutys_limit(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = pagerduty.build(config(rx.url()), session, clock)
    await channel.send(notification(title="x" * 3000))
    summary = rx.requests[0].json()["payload"]["summary"]
    assert len(summary) == 1024
    assert summary.endswith("…")


async def test_config_overrides_and_missing_facts_are_left_out(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    cfg = config(rx.url(), source="railguard-prod", component="api", name="oncall")
    channel = pagerduty.build(cfg, session, clock)
    assert channel.name == "oncall"
    await channel.send(notification(url=None, tier=None, text="", fields={}))
    body = rx.requests[0].json()
    assert "links" not in body
    assert "client_url" not in body
    assert body["payload"]["source"] == "railguard-prod"
    assert body["payload"]["component"] == "api"
    assert "group" not in body["payload"]
    assert body["payload"]["custom_details"] == {}


async def test_a_key_longer_than_pagerduty_takes_is_hashed_the_same_way_each_time(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = pagerduty.build(config(rx.url()), session, clock)
    key = "railguard/" + "k" * 300
    await channel.send(notification(key=key))
    await channel.send(notification(key=key, status=Status.RESOLVED))
    first, second = (r.json()["dedup_key"] for r in rx.requests)
    assert first == second
    assert len(first) <= 255
    assert first != pagerduty.dedup_key(notification(key=key + "x"))


async def test_invalid_event_is_permanent_and_never_shows_the_routing_key(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # A receiver that quotes the event back: the key must still stay out of the message.
    answer = {"status": "invalid event", "errors": [f"bad routing_key {ROUTING_KEY}"]}
    rx.reply(400, body=json.dumps(answer))
    channel = pagerduty.build(config(rx.url()), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert caught.value.permanent
    assert "400" in str(caught.value)
    assert "invalid event" in str(caught.value)
    assert ROUTING_KEY not in str(caught.value)


async def test_rate_limited_without_retry_after_waits_30s(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.reply(429, body='{"status":"throttle event"}')
    channel = pagerduty.build(config(rx.url()), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert not caught.value.permanent
    assert caught.value.retry_after == 30.0


async def test_rate_limited_with_retry_after_waits_as_told(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.reply(429, headers={"Retry-After": "7"})
    channel = pagerduty.build(config(rx.url()), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_retried(
    status: int, rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.reply(status)
    channel = pagerduty.build(config(rx.url()), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert not caught.value.permanent
    assert caught.value.retry_after is None


async def test_unreachable_is_transient(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    channel = pagerduty.build(config(NOWHERE), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification())
    assert not caught.value.permanent
    assert ROUTING_KEY not in str(caught.value)


async def test_timeout_is_transient(
    rx: Receiver, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    rx.hold()
    channel = pagerduty.build(config(rx.url(), timeout="100ms"), session, clock)
    with pytest.raises(ChannelError, match=r"timed out after 0\.1s") as caught:
        await channel.send(notification())
    assert not caught.value.permanent


def test_routing_key_must_come_from_the_environment() -> None:
    with pytest.raises(ValidationError) as caught:
        pagerduty.Config.model_validate({"type": "pagerduty", "routing_key": ROUTING_KEY})
    # The error type tells railguard's config loader not to echo the value back.
    assert [e["type"] for e in caught.value.errors()] == ["secret_literal"]


def test_an_empty_routing_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="holds nothing"):
        pagerduty.Config.model_validate(
            {"type": "pagerduty", "routing_key": "${PD_KEY}"}, context={"environ": {"PD_KEY": ""}}
        )


def test_defaults() -> None:
    cfg = pagerduty.Config.model_validate(
        {"type": "pagerduty", "routing_key": "${PD_KEY}"}, context={"environ": ENVIRON}
    )
    assert cfg.url == "https://events.pagerduty.com/v2/enqueue"
    assert cfg.source is None
    assert cfg.component is None
    assert ROUTING_KEY not in repr(cfg)
