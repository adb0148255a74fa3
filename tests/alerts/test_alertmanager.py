"""The Alertmanager channel against a real Alertmanager, and a recording receiver for headers."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels import alertmanager as am
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from tests.alertmanager_fixture import alertmanager_server  # noqa: F401
from tests.alerts.receivers import NOWHERE, Receiver

PASSWORD = "s3cret-am-password"
ENVIRON = {"AM_PASSWORD": PASSWORD}


def config(url: str, **extra: Any) -> am.Config:
    data = {"type": "alertmanager", "url": url} | extra
    return am.Config.model_validate(data, context={"environ": ENVIRON})


def notification(at: float, **changes: Any) -> Notification:
    base: dict[str, Any] = {
        "id": "event-7",
        "key": "railguard/checkout/5xx",
        "kind": "rule_firing",
        "status": Status.FIRING,
        "severity": Severity.WARNING,
        "title": "checkout: 5xx firing",
        "text": "7.1% of requests failed over 5m",
        "at": at,
        "started_at": at - 100,
        "service": "checkout",
        "tier": "standard",
        "fields": {"rule": "5xx", "error rate": "7.1%"},
        "url": "https://railguard.example/status",
    }
    return Notification(**{**base, **changes})


def resolved(firing: Notification, at: float) -> Notification:
    """What the router sends when a warning incident ends: same key, kind and severity differ."""
    return Notification(
        id="event-9",
        key=firing.key,
        kind="rule_resolved",
        status=Status.RESOLVED,
        severity=Severity.INFO,
        title="checkout: 5xx resolved",
        text="",
        at=at,
        started_at=firing.started_at,
        service=firing.service,
        tier=firing.tier,
        fields={"rule": "5xx"},
        url=firing.url,
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def listed(
    session: aiohttp.ClientSession, base: str, key: str, *, active: bool
) -> list[dict[str, Any]]:
    """What ``GET /api/v2/alerts`` shows for the incident ``key``."""
    params = {"filter": f'railguard_key="{key}"', "active": str(active).lower()}
    async with session.get(f"{base}/api/v2/alerts", params=params) as response:
        assert response.status == 200
        found: list[dict[str, Any]] = await response.json()
        return found


async def test_firing_is_listed_active_and_resolved_is_gone(
    alertmanager: str, session: aiohttp.ClientSession
) -> None:
    # Alertmanager judges endsAt by its own (real) clock, so this test's time starts now.
    clock = FakeClock(start=time.time())
    key = f"railguard/checkout/{uuid4().hex[:8]}"
    cfg = config(alertmanager, extra_labels={"team": "payments"}, resolve_timeout="1h")
    channel = am.build(cfg, session, clock)
    firing = notification(clock.time(), key=key)

    await channel.send(firing)

    (alert,) = await listed(session, alertmanager, key, active=True)
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == {
        "alertname": f"railguard_{key.rsplit('/', 1)[1]}",
        "severity": "warning",
        "service": "checkout",
        "tier": "standard",
        "railguard_key": key,
        "team": "payments",
    }
    assert alert["annotations"] == {
        "summary": "checkout: 5xx firing",
        "description": "7.1% of requests failed over 5m",
        "rule": "5xx",
        "error_rate": "7.1%",
    }
    assert alert["generatorURL"] == "https://railguard.example/status"
    assert alert["startsAt"] == am.iso(firing.started_at)
    assert alert["endsAt"] == am.iso(clock.time() + 3600)

    # Later news of the same incident updates the one alert rather than adding another.
    await clock.advance(60)
    await channel.send(notification(clock.time(), key=key, title="checkout: rolling back"))
    (alert,) = await listed(session, alertmanager, key, active=True)
    assert alert["annotations"]["summary"] == "checkout: rolling back"
    assert alert["endsAt"] == am.iso(clock.time() + 3600)

    # The resolved notice is only "info": the warning alert must end all the same.
    await channel.send(resolved(firing, at=time.time()))
    assert await listed(session, alertmanager, key, active=True) == []
    assert await listed(session, alertmanager, key, active=False) == []


async def test_the_same_alert_posted_twice_is_one_alert(
    alertmanager: str, session: aiohttp.ClientSession
) -> None:
    # What a kill between Alertmanager's answer and the outbox's record leads to: the next run
    # posts the message again. Alertmanager keys alerts by their labels: still one alert.
    clock = FakeClock(start=time.time())
    key = f"railguard/checkout/{uuid4().hex[:8]}"
    channel = am.build(config(alertmanager), session, clock)
    firing = notification(clock.time(), key=key)
    await channel.send(firing)
    (before,) = await listed(session, alertmanager, key, active=True)
    await clock.advance(5)
    await channel.send(firing)
    (after,) = await listed(session, alertmanager, key, active=True)
    assert after["fingerprint"] == before["fingerprint"]
    assert after["labels"] == before["labels"]
    assert after["startsAt"] == before["startsAt"]
    await channel.send(resolved(firing, at=time.time()))
    assert await listed(session, alertmanager, key, active=True) == []


async def test_a_wrong_base_url_is_permanent(
    alertmanager: str, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    # The API's own path given as the base: Alertmanager answers 404 for .../api/v2/api/v2/alerts.
    channel = am.build(config(alertmanager + "/api/v2"), session, clock)
    with pytest.raises(ChannelError) as caught:
        await channel.send(notification(clock.time()))
    assert caught.value.permanent
    assert "404" in str(caught.value)


async def test_payload_and_basic_auth(session: aiohttp.ClientSession, clock: FakeClock) -> None:
    cfg = config(
        "http://placeholder", basic_auth_user="railguard", basic_auth_password="${AM_PASSWORD}"
    )
    async with Receiver() as rx:
        cfg = cfg.model_copy(update={"url": rx.url("/alertmanager/")})
        channel = am.build(cfg, session, clock)
        assert channel.name == "alertmanager"
        firing = notification(clock.time(), url=None, tier=None, text="")
        await channel.send(firing)
        await channel.send(resolved(firing, at=clock.time() + 30))

    first, second = rx.requests
    assert first.method == "POST"
    assert first.path == "/alertmanager/api/v2/alerts"
    expected = base64.b64encode(f"railguard:{PASSWORD}".encode()).decode()
    assert first.headers["Authorization"] == f"Basic {expected}"
    (alert,) = first.json()
    assert alert == {
        "labels": {
            "alertname": "railguard_5xx",
            "severity": "warning",
            "service": "checkout",
            "railguard_key": "railguard/checkout/5xx",
        },
        "annotations": {"rule": "5xx", "error_rate": "7.1%", "summary": "checkout: 5xx firing"},
        "startsAt": "2023-11-14T22:11:40.000Z",
        "endsAt": "2023-11-15T01:13:20.000Z",
    }
    # Resolved: once per severity, each ending when the incident did.
    ended = second.json()
    assert [a["labels"]["severity"] for a in ended] == ["info", "critical", "warning"]
    assert {a["endsAt"] for a in ended} == {"2023-11-14T22:13:50.000Z"}
    assert all(a["labels"].keys() == alert["labels"].keys() for a in ended)


async def test_no_auth_header_without_credentials(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with Receiver() as rx:
        await am.build(config(rx.url("")), session, clock).send(notification(clock.time()))
    assert "Authorization" not in rx.requests[0].headers
    assert rx.requests[0].path == "/api/v2/alerts"


async def test_errors_follow_the_channel_contract(
    session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    cfg = config(NOWHERE, basic_auth_user="railguard", basic_auth_password="${AM_PASSWORD}")
    with pytest.raises(ChannelError) as caught:
        await am.build(cfg, session, clock).send(notification(clock.time()))
    assert not caught.value.permanent
    assert PASSWORD not in str(caught.value)
    async with Receiver() as rx:
        rx.reply(503, body="not ready")
        cfg = config(rx.url(""))
        with pytest.raises(ChannelError) as caught:
            await am.build(cfg, session, clock).send(notification(clock.time()))
    assert not caught.value.permanent


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"extra_labels": {"bad name": "x"}}, "not a label name"),
        ({"extra_labels": {"severity": "x"}}, "set by railguard"),
        ({"basic_auth_user": "railguard"}, "go together"),
        ({"basic_auth_password": "${AM_PASSWORD}"}, "go together"),
        ({"basic_auth_user": "a:b", "basic_auth_password": "${AM_PASSWORD}"}, "':'"),
        ({"url": "ftp://am"}, "http"),
        ({"basic_auth_user": "a", "basic_auth_password": PASSWORD}, "environment"),
    ],
)
def test_config_is_checked(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**{"url": "http://alertmanager:9093", **extra})


def test_config_defaults() -> None:
    cfg = config("http://alertmanager:9093")
    assert cfg.resolve_timeout == 3 * 3600.0
    assert cfg.extra_labels == {}


def test_annotation_names_are_made_valid() -> None:
    assert am.annotation_name("error rate") == "error_rate"
    assert am.annotation_name("5xx-share") == "_5xx_share"
    assert am.annotation_name("p99") == "p99"
