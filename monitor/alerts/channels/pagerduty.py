"""The PagerDuty channel: Events API v2, one alert per incident through its ``dedup_key``.

A firing notification is a ``trigger`` event; a resolved one is a ``resolve`` event with the
same ``dedup_key`` (the notification's ``key``), which closes the PagerDuty alert::

    {"routing_key": "…", "event_action": "trigger", "dedup_key": "railguard/checkout/5xx",
     "client": "railguard", "client_url": "https://…/status",
     "payload": {"summary": "checkout: 5xx firing", "source": "railguard",
                 "severity": "critical", "timestamp": "2023-11-14T22:13:20.000Z",
                 "component": "checkout", "group": "critical", "class": "rule_firing",
                 "custom_details": {"rule": "5xx", "text": "…"}},
     "links": [{"href": "https://…/status", "text": "railguard status"}]}

    {"routing_key": "…", "event_action": "resolve", "dedup_key": "railguard/checkout/5xx"}

Later firing notifications of the same incident (a rollback starting, failing) are triggers
with the same ``dedup_key``: PagerDuty adds them to the open alert instead of paging again.

The same rule makes a re-sent event harmless. railguard delivers at least once (killed after
PagerDuty took an event but before recording it as sent, the next run sends it again), and
the outbox keeps a channel's order, so the event sent again is always the channel's oldest
unrecorded one: a trigger again while its alert is open is folded into that alert (no second
page), a resolve again finds the alert resolved and changes nothing. The per-message
idempotency key (:func:`~monitor.alerts.channels.base.idempotency_key`) is not the
``dedup_key``: that would make each message an alert of its own, and a resolve would close
nothing. Events API v2 has no other place for an idempotency key.

PagerDuty answers 202 when it took the event, 400 for an invalid one (permanent), 429 when
the integration is rate limited: retried, after ``Retry-After`` when it says, else after
:data:`RATE_LIMITED_RETRY` seconds, since PagerDuty does not promise the header.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import SecretStr, field_validator

from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.alerts.channels.http import clip, post_json
from monitor.alerts.model import Notification, Status
from monitor.clock import Clock
from monitor.configtypes import HttpUrl, Secret, Text

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
RATE_LIMITED_RETRY = 30.0
"""Seconds before retrying a 429 that came without ``Retry-After``."""
SUMMARY_LIMIT = 1024
"""PagerDuty's limit on ``payload.summary``."""
DEDUP_KEY_LIMIT = 255
"""PagerDuty's limit on ``dedup_key``."""


class Config(ChannelConfig):
    """``[[channels]] type = "pagerduty"``."""

    type: Literal["pagerduty"]
    routing_key: Secret
    """The integration key of an Events API v2 integration (a ``${VAR}`` reference)."""
    url: HttpUrl = EVENTS_URL
    """Where events go; only changed for tests or a proxy."""
    source: Text | None = None
    """``payload.source`` (default: "railguard")."""
    component: Text | None = None
    """``payload.component`` (default: the notification's service)."""

    @field_validator("routing_key")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("empty: the environment variable it references holds nothing")
        return value


def timestamp(at: float) -> str:
    """Unix seconds as ISO 8601 in UTC, the form PagerDuty's examples use."""
    text = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def dedup_key(notification: Notification) -> str:
    """The incident's key, hashed when longer than PagerDuty takes (the same for each event)."""
    key = notification.key
    if len(key) <= DEDUP_KEY_LIMIT:
        return key
    return "railguard-" + hashlib.sha256(key.encode()).hexdigest()


def event(config: Config, notification: Notification) -> dict[str, Any]:
    """The Events API v2 body for ``notification``."""
    n = notification
    base = {
        "routing_key": config.routing_key.get_secret_value(),
        "event_action": "resolve" if n.status is Status.RESOLVED else "trigger",
        "dedup_key": dedup_key(n),
    }
    if n.status is Status.RESOLVED:
        # PagerDuty ignores a payload on resolve; its docs send none.
        return base
    details: dict[str, str] = dict(n.fields)
    if n.text:
        details["text"] = n.text
    payload: dict[str, Any] = {
        "summary": clip(n.title, SUMMARY_LIMIT),
        "source": config.source or "railguard",
        # railguard's severities are a subset of PagerDuty's (critical, error, warning, info).
        "severity": n.severity.value,
        "timestamp": timestamp(n.at),
        "component": config.component or n.service,
        "group": n.tier,
        "class": n.kind,
        "custom_details": details,
    }
    body: dict[str, Any] = {
        **base,
        "client": "railguard",
        # PagerDuty refuses null for its optional fields: leave unknown ones out.
        "payload": {k: v for k, v in payload.items() if v is not None},
    }
    if n.url:
        body["client_url"] = n.url
        body["links"] = [{"href": n.url, "text": "railguard status"}]
    return body


class PagerDutyChannel:
    """Sends trigger and resolve events to one PagerDuty integration."""

    def __init__(self, config: Config, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.name = config.name or config.type
        self._config = config
        self._session = session
        self._clock = clock

    async def send(self, notification: Notification) -> None:
        """Send the event for ``notification``; raises ChannelError as the protocol says."""
        config = self._config
        await post_json(
            self._session,
            config.url,
            event(config, notification),
            timeout=config.timeout,
            clock=self._clock,
            secrets=[config.routing_key.get_secret_value()],
            # PagerDuty's 429 may carry no Retry-After: wait a sensible while anyway.
            rate_limited_wait=RATE_LIMITED_RETRY,
        )


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The PagerDuty channel for ``config``."""
    return PagerDutyChannel(config, session, clock)
