"""Alerting end to end: a bad production release, its rollback, and what people are told."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from tests.stage import Stage


class Hook:
    """A receiver for the generic webhook channel; can be down."""

    def __init__(self) -> None:
        self.titles: list[str] = []
        self.down = False
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        if self.down:
            return web.Response(status=503)
        self.titles.append((await request.json())["title"])
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    receiver = Hook()
    server = TestServer(receiver.app, host="127.0.0.1")
    await server.start_server()
    yield receiver, str(server.make_url("/hook"))
    await server.close()


async def test_a_production_incident_is_told_once_in_order_through_an_outage(
    clock: FakeClock, tmp_path: Path, hook: tuple[Hook, str]
) -> None:
    receiver, url = hook
    stage = Stage(clock, tmp_path, {"v2": {"error_ratio": 0.5}})
    stage.extra_config = '\n[[channels]]\ntype = "webhook"\nurl = "${HOOK_URL}"\n'
    stage.extra_environ = {"HOOK_URL": url}
    await stage.start_servers()
    try:
        stage.deploy("v1", ago=7200)
        good = stage.deploy("v1.1", ago=3600)
        await stage.start_daemon()
        await stage.run_for(12)
        receiver.down = True  # the channel is down when the incident starts
        stage.deploy("v2")
        await stage.run_for(10)
        verified = f"web: deployment {good.meta['release']} verified healthy"
        assert receiver.titles == [verified]
        receiver.down = False
        await stage.run_for(60)
        assert stage.rollbacks_sent() == [good.id]
        titles = receiver.titles
        started, recovered = (  # the releases, not the ids
            f"web: rollback #1 started: v2 → {good.meta['release']}",
            f"web: rollback #1 succeeded: v2 → {good.meta['release']}",
        )
        # Nothing lost through the outage, nothing twice, the rollback's story in order.
        assert titles[0] == verified
        assert titles.index(started) < titles.index(recovered)
        # The rule's own firing and resolved are held: its rollback told the incident.
        assert "web: error-rate firing" not in titles
        assert "web: error-rate resolved" not in titles
        assert len(titles) - titles.count(verified) == len(set(titles) - {verified})
        assert stage.daemon is not None
        assert stage.daemon.store is not None
        outbox = await stage.daemon.store.outbox()
        assert {m.state for m in outbox} == {"sent"}
        assert sum(m.attempts > 1 for m in outbox) >= 1  # the outage was retried through
    finally:
        await stage.close()
