"""The outbox: a channel down for a while and the daemon restarted meanwhile lose nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from monitor.alerts.model import Notification, Severity, Status
from monitor.alerts.outbox import Outbox
from monitor.clock import FakeClock
from monitor.errors import ChannelError
from monitor.store import open_store
from monitor.store.outbox import OutboxRecord, OutboxState
from monitor.store.sqlite import SQLiteStore
from monitor.telemetry import Metrics
from tests.helpers import until


class Receiver:
    """An HTTP receiver that can be down (503), rate-limit (429) or refuse (400)."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.down = False  # 503 to everything while set
        self.attempts = 0
        self.answers: list[tuple[int, dict[str, str]]] = []  # scripted, then 200
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts += 1
        if self.down:
            return web.Response(status=503)
        if self.answers:
            status, headers = self.answers.pop(0)
            return web.Response(status=status, headers=headers)
        self.got.append(body["id"])
        return web.Response(status=200)


class HookChannel:
    """A minimal real HTTP channel for these tests."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.name, self.session, self.url = "hook", session, url
        self.crash = False

    async def send(self, notification: Notification) -> None:
        if self.crash:
            raise RuntimeError("a bug in the channel")
        async with self.session.post(self.url, json=notification.to_dict()) as response:
            if response.status == 429:
                raise ChannelError("429", retry_after=float(response.headers["Retry-After"]))
            if response.status >= 500:
                raise ChannelError(f"HTTP {response.status}")
            if response.status >= 400:
                raise ChannelError(f"HTTP {response.status}", permanent=True)


def note(n: int, clock: FakeClock) -> Notification:
    return Notification(
        id=f"m{n}",
        key="web/error-rate",
        kind="rule_firing",
        status=Status.FIRING,
        severity=Severity.CRITICAL,
        title=f"message {n}",
        text="",
        at=clock.time(),
        started_at=clock.time(),
        service="web",
        tier="production",
    )


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    server = TestServer(r.app, host="127.0.0.1")
    await server.start_server()
    yield r, str(server.make_url("/hook"))
    await server.close()


async def test_an_outage_and_a_restart_lose_nothing_and_keep_order(
    receiver: tuple[Receiver, str], clock: FakeClock, tmp_path: Path
) -> None:
    r, url = receiver
    metrics = Metrics(CollectorRegistry())
    r.down = True
    async with aiohttp.ClientSession() as session:
        store = await open_store(tmp_path / "state.db")
        outbox = Outbox(
            store, {"hook": HookChannel(session, url)}, clock=clock, metrics=metrics, seed=1
        )
        await outbox.start()
        for n in range(3):
            assert await outbox.put("hook", note(n, clock))
        assert not await outbox.put("hook", note(0, clock))  # queued once
        await until(lambda: r.attempts == 1, "the first attempt")
        for attempt in (2, 3):  # retries back off on the clock; the channel is still down
            await clock.advance(60)
            await until(lambda attempt=attempt: r.attempts >= attempt, f"attempt {attempt}")  # type: ignore[misc]
        await outbox.stop()  # the daemon stops with everything still pending
        await store.close()
        assert r.got == []

        r.down = False
        r.answers = [(429, {"Retry-After": "30"})]  # back, but busy at first
        store = await open_store(tmp_path / "state.db")  # and railguard starts again
        outbox = Outbox(
            store, {"hook": HookChannel(session, url)}, clock=clock, metrics=metrics, seed=1
        )
        await outbox.start()
        for _ in range(60):
            if len(r.got) == 3:
                break
            await clock.advance(10)
            await asyncio.sleep(0.005)  # loopback I/O completes; the clock is what moves
        assert r.got == ["m0", "m1", "m2"]  # each once, in order
        await outbox.stop()
        sent = [m.state for m in await store.outbox("hook")]
        assert sent == ["sent", "sent", "sent"]
        await store.close()
    assert (
        metrics.registry.get_sample_value("railguard_alerts_sent_total", {"channel": "hook"}) == 3
    )


async def test_a_refused_message_is_given_up_and_the_queue_moves_on(
    receiver: tuple[Receiver, str], clock: FakeClock, tmp_path: Path
) -> None:
    r, url = receiver
    r.answers = [(400, {})]
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        store = await open_store(tmp_path / "state.db")
        channel = HookChannel(session, url)
        outbox = Outbox(store, {"hook": channel}, clock=clock, metrics=metrics, seed=1)
        await outbox.start()
        await outbox.put("hook", note(0, clock))
        await outbox.put("hook", note(1, clock))
        await until(lambda: r.got == ["m1"], "the second message")
        await until(
            lambda: (
                metrics.registry.get_sample_value(
                    "railguard_alerts_sent_total", {"channel": "hook"}
                )
                == 1
            ),
            "the second message recorded as sent",
        )
        (second, first) = await store.outbox("hook")
        assert (first.state, second.state) == ("failed", "sent")
        assert "HTTP 400" in (first.last_error or "")
        channel.crash = True  # a bug in a channel is contained and retried
        await outbox.put("hook", note(2, clock))
        await until(
            lambda: (
                metrics.registry.get_sample_value(
                    "railguard_alerts_retried_total", {"channel": "hook"}
                )
                == 1
            ),
            "the retry",
        )
        channel.crash = False
        await clock.advance(20)
        await until(lambda: r.got == ["m1", "m2"], "the third message")
        await outbox.stop()
        await store.close()
    failed = metrics.registry.get_sample_value("railguard_alerts_failed_total", {"channel": "hook"})
    assert failed == 1


class SlowRecord:
    """The store, with the record of a delivery held until ``go`` is set."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.recording = asyncio.Event()
        self.go = asyncio.Event()

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
        self.recording.set()
        await self.go.wait()
        await self.store.outbox_done(id, state, at, error)

    async def outbox_retry(self, id: int, next_at: float, error: str) -> None:
        await self.store.outbox_retry(id, next_at, error)

    async def outbox_pending(self) -> dict[str, int]:
        return await self.store.outbox_pending()


async def test_a_stop_past_its_grace_still_records_a_delivered_message(
    receiver: tuple[Receiver, str], clock: FakeClock, tmp_path: Path
) -> None:
    # Cut between the receiver's 2xx and the record, the message would go out again next run.
    r, url = receiver
    metrics = Metrics(CollectorRegistry())
    async with aiohttp.ClientSession() as session:
        store = await open_store(tmp_path / "state.db")
        slow = SlowRecord(store)
        outbox = Outbox(slow, {"hook": HookChannel(session, url)}, clock=clock, metrics=metrics)
        await outbox.start()
        await outbox.put("hook", note(0, clock))
        await until(slow.recording.is_set, "the delivery and the start of its record")
        assert r.got == ["m0"]
        (worker,) = outbox._tasks
        stopping = asyncio.create_task(outbox.stop(grace=0))  # cancels the worker
        await until(lambda: worker.cancelling() > 0 or worker.done(), "the cancel")
        slow.go.set()
        await stopping
        (row,) = await store.outbox("hook")
        assert row.state == "sent"
        await store.close()
