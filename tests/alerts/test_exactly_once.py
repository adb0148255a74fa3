"""Killed between the receiver's answer and the record: sent again, with the same key.

railguard delivers at least once. These tests deliver a message through the real outbox to a
real receiver, then kill the worker right where it would record the delivery (nothing is
written, the worker is gone: what SIGKILL leaves), and start a new outbox on the same
database, which sends the message again. Each receiver that honours the channel's key (or
its dedup rule) then shows the message once; Slack and Discord, which have none, show it
twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.channels import alertmanager as am
from monitor.alerts.channels import discord, email, pagerduty, slack, webhook
from monitor.alerts.channels.base import Channel, idempotency_key
from monitor.alerts.model import Notification, Severity, Status
from monitor.alerts.outbox import Outbox
from monitor.clock import FakeClock
from monitor.store import open_store
from monitor.store.outbox import OutboxRecord, OutboxState
from monitor.store.sqlite import SQLiteStore
from monitor.telemetry import Metrics
from tests.alertmanager_fixture import alertmanager_server  # noqa: F401
from tests.alerts.receivers import PagerDuty, Receiver, smtp_server
from tests.helpers import until

SECRET = "hmac-s3cret"
ENVIRON = {"SECRET": SECRET, "PD_KEY": "R0UT1NGKEY0123456789abcdef012345"}


class Killed(Exception):
    """The process died here (the worker goes, and nothing after this point runs)."""


class KillBeforeRecord:
    """The store, except that recording the next delivery as sent kills the worker first."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.armed = True
        self.killed: list[int] = []

    async def enqueue(
        self, channel: str, message_id: str, payload: Mapping[str, Any], at: float
    ) -> bool:
        return await self.store.enqueue(channel, message_id, payload, at)

    async def outbox_head(self, channel: str) -> OutboxRecord | None:
        return await self.store.outbox_head(channel)

    async def outbox_claim(self, id: int, at: float) -> OutboxRecord:
        return await self.store.outbox_claim(id, at)

    async def outbox_done(
        self, id: int, state: OutboxState, at: float, error: str | None = None
    ) -> None:
        if self.armed and state == "sent":
            self.armed = False
            self.killed.append(id)
            raise Killed
        await self.store.outbox_done(id, state, at, error)

    async def outbox_retry(self, id: int, next_at: float, error: str) -> None:
        await self.store.outbox_retry(id, next_at, error)

    async def outbox_pending(self) -> dict[str, int]:
        return await self.store.outbox_pending()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def note(clock: FakeClock, n: int = 7, **changes: Any) -> Notification:
    base: dict[str, Any] = {
        "id": f"event-{n}",
        "key": "railguard/checkout/5xx",
        "kind": "rule_firing",
        "status": Status.FIRING,
        "severity": Severity.CRITICAL,
        "title": "checkout: 5xx firing",
        "text": "7.1% of requests failed over 5m",
        "at": clock.time(),
        "started_at": clock.time() - 100,
        "service": "checkout",
        "tier": "critical",
        "fields": {"rule": "5xx"},
        "url": "https://railguard.example/status",
    }
    return Notification(**{**base, **changes})


async def run_killed_then_again(
    db: Path, channel: Channel, messages: list[Notification], clock: FakeClock
) -> list[OutboxState]:
    """Deliver ``messages``, killed at the first record; then a new run sends what is left.

    Returns the rows' states after the second run, oldest first.
    """
    store = await open_store(db)
    dying = KillBeforeRecord(store)
    first = Outbox(dying, {"out": channel}, clock=clock, metrics=Metrics(CollectorRegistry()))
    await first.start()
    for message in messages:
        assert await first.put("out", message)
    await until(lambda: bool(dying.killed), "the kill after the first delivery")
    await first.stop(grace=0)  # the dead worker's task is collected
    pending = (await store.outbox_pending())["out"]
    assert pending == len(messages)  # the delivered message was never recorded
    await store.close()

    store = await open_store(db)  # railguard starts again on the same database
    metrics = Metrics(CollectorRegistry())
    again = Outbox(store, {"out": channel}, clock=clock, metrics=metrics)
    await again.start()

    def sent() -> float:
        value = metrics.registry.get_sample_value("railguard_alerts_sent_total", {"channel": "out"})
        return value or 0.0

    await until(lambda: sent() == pending, "the second run's deliveries")
    await again.stop()
    states = [r.state for r in reversed(await store.outbox("out"))]
    await store.close()
    return states


async def test_webhook_resend_carries_the_same_key_and_signature(
    tmp_path: Path, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with Receiver(dedup=lambda r: r.headers.get("Idempotency-Key")) as rx:
        cfg = webhook.Config.model_validate(
            {"type": "webhook", "url": "${URL}", "secret": "${SECRET}"},
            context={"environ": {**ENVIRON, "URL": rx.url("/hook")}},
        )
        channel = webhook.build(cfg, session, clock)
        message = note(clock)
        states = await run_killed_then_again(tmp_path / "state.db", channel, [message], clock)

    assert states == ["sent"]
    first, again = rx.requests  # delivered twice: the kill came before the record
    key = idempotency_key(message)
    for request in (first, again):
        assert request.headers["Idempotency-Key"] == key
        assert request.json()["idempotency_key"] == key
        signed = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Railguard-Signature"] == f"sha256={signed}"
    assert first.body == again.body
    assert rx.events == [first]  # a receiver that honours the key acts once


async def test_pagerduty_resent_trigger_and_resolve_page_once(
    tmp_path: Path, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with Receiver() as rx:
        rx.reply(202, body='{"status":"success"}')
        cfg = pagerduty.Config.model_validate(
            {"type": "pagerduty", "routing_key": "${PD_KEY}", "url": rx.url("/v2/enqueue")},
            context={"environ": ENVIRON},
        )
        channel = pagerduty.build(cfg, session, clock)
        trigger = note(clock, 7)
        resolve = note(clock, 9, kind="rule_resolved", status=Status.RESOLVED)
        db = tmp_path / "state.db"
        # Killed after the trigger went out, before it was recorded: the next run sends it
        # again, then the resolve.
        assert await run_killed_then_again(db, channel, [trigger, resolve], clock) == [
            "sent",
            "sent",
        ]
        assert len(rx.requests) == 3
        store = await open_store(db)
        row = (await store.outbox("out"))[0]
        await store.close()
        assert row.message_id == "event-9"

    actions = [r.json()["event_action"] for r in rx.requests]
    assert actions == ["trigger", "trigger", "resolve"]
    assert {r.json()["dedup_key"] for r in rx.requests} == {"railguard/checkout/5xx"}
    pd = PagerDuty().apply(rx.requests)
    assert pd.pages == ["railguard/checkout/5xx"]  # one page, the repeat folded into it
    assert pd.deduplicated == ["railguard/checkout/5xx"]
    assert pd.open == set()
    # A resolve sent again (killed after it) finds the alert closed and changes nothing.
    pd.apply([rx.requests[-1]])
    assert pd.resolved == ["railguard/checkout/5xx"]
    assert pd.pages == ["railguard/checkout/5xx"]


async def test_email_resend_has_the_same_message_id(tmp_path: Path, clock: FakeClock) -> None:
    with smtp_server() as (port, mailbox):
        cfg = email.Config.model_validate(
            {
                "type": "email",
                "host": "127.0.0.1",
                "port": port,
                "starttls": False,
                "from_addr": "railguard@alerts.example",
                "to": ["oncall@example.com"],
            }
        )
        channel = email.build(cfg, None, clock)  # type: ignore[arg-type]
        message = note(clock)
        states = await run_killed_then_again(tmp_path / "state.db", channel, [message], clock)

    assert states == ["sent"]
    first, again = mailbox.delivered
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] == f"<{idempotency_key(message)}@alerts.example>"
    assert list(mailbox.inbox) == [first["Message-ID"]]  # one message in the mailbox


async def test_alertmanager_resend_is_one_alert(
    alertmanager: str, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock(start=time.time())  # Alertmanager judges endsAt by its own clock
    key = f"railguard/checkout/once-{int(clock.time() * 1000) % 10**9}"
    cfg = am.Config.model_validate({"type": "alertmanager", "url": alertmanager})
    channel = am.build(cfg, session, clock)
    states = await run_killed_then_again(
        tmp_path / "state.db", channel, [note(clock, key=key)], clock
    )
    assert states == ["sent"]
    params = {"filter": f'railguard_key="{key}"', "active": "true"}
    async with session.get(f"{alertmanager}/api/v2/alerts", params=params) as response:
        listed = await response.json()
    assert len(listed) == 1  # posted twice, one alert


@pytest.mark.parametrize("kind", ["slack", "discord"])
async def test_chat_webhooks_have_no_key_so_a_resend_shows_twice(
    kind: str, tmp_path: Path, session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    async with Receiver(dedup=lambda r: r.headers.get("Idempotency-Key")) as rx:
        data = {"type": kind, "url": "${URL}"}
        environ = {"URL": rx.url("/hook")}
        channel: Channel
        if kind == "slack":
            cfg = slack.Config.model_validate(data, context={"environ": environ})
            channel = slack.build(cfg, session, clock)
        else:
            config = discord.Config.model_validate(data, context={"environ": environ})
            channel = discord.build(config, session, clock)
        await run_killed_then_again(tmp_path / "state.db", channel, [note(clock)], clock)

    assert len(rx.requests) == 2
    assert "Idempotency-Key" not in rx.requests[0].headers
    assert len(rx.events) == 2  # the known limit: the same message twice in the channel
