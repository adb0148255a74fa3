"""PR environments on the stage: one appears on Railway and is guarded with the preview policy
(probed, its rules judged, never rolled back, nobody alerted); a garbled or failed listing
changes nothing; once Railway no longer lists it, it is dropped and nothing probes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from monitor.clock import FakeClock
from monitor.model import Phase, Signal
from monitor.pr_environments import PrEnvironments
from monitor.sandbox.sample_app import STATE_KEY, create_app
from tests.helpers import until
from tests.stage import Stage, release_meta, store_of

NAME = "web.web-pr-7"
PR_CONFIG = """
[pr_environments]
every = "10s"
[[pr_environments.services]]
from = "web"
health_url = "{app}/health?environment={{environment}}"
"""


class PrApp:
    """The sample app playing the service in the PR environment, counting its probes."""

    def __init__(self, clock: FakeClock) -> None:
        self.app = create_app(clock=clock)
        self.hits = 0

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path == "/health":
                self.hits += 1
            response: web.StreamResponse = await handler(request)
            return response

        self.app.middlewares.append(count)
        self.runner = web.AppRunner(self.app, access_log=None)

    async def start(self) -> str:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[tuple[Stage, PrApp]]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    pr_app = PrApp(clock)
    url = await pr_app.start()
    stage.extra_config = PR_CONFIG.format(app=url)
    stage.extra_environ = {"RAILWAY_PROJECT_ID": next(iter(stage.emu.projects))}
    yield stage, pr_app
    await stage.close()
    await pr_app.runner.cleanup()


def prs(stage: Stage) -> PrEnvironments:
    assert stage.daemon is not None
    assert stage.daemon.pr_environments is not None
    return stage.daemon.pr_environments


def names(stage: Stage) -> list[str]:
    assert stage.daemon is not None
    return sorted(w.plan.name for w in stage.daemon.workers)


async def control(stage: Stage, method: str, path: str, body: Any = None) -> Any:
    url = stage.emu_url.replace("/graphql/v2", f"/_emulator/{path}")
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def open_pr(s: Stage) -> Any:
    """A PR opens: Railway creates its environment and deploys the service there."""
    project = next(iter(s.emu.projects))
    env = await control(
        s, "POST", "environments", {"projectId": project, "name": "web-pr-7", "ephemeral": True}
    )
    body = {"serviceId": s.service, "environmentId": env["id"], "meta": release_meta("pr-7")}
    await control(s, "POST", "deployments", body)
    return env


async def test_a_pr_environment_is_guarded_while_it_lives_then_dropped(
    stage: tuple[Stage, PrApp],
) -> None:
    stage_, pr_app = stage
    s = stage_
    s.deploy("v1", ago=7200)
    daemon = await s.start_daemon()
    await s.run_for(4)
    assert names(s) == ["web"]
    assert prs(s).looks >= 1
    assert prs(s).guarded == {}

    env = await open_pr(s)
    await s.run_for(12)
    assert names(s) == ["web", NAME]
    worker = daemon._workers[NAME]
    assert (worker.plan.tier, worker.plan.config.environment_id) == ("preview", env["id"])
    assert [r.name for r in worker.plan.rules] == ["health-failing"]
    assert worker.latest[Signal.HEALTH].value == 1.0
    assert pr_app.hits > 0
    assert daemon.poller is not None
    assert NAME in {t.name for t in daemon.poller.targets}
    await until(lambda: daemon.poller is not None and daemon.poller.latest(NAME) is not None)
    snapshot = daemon.poller.latest(NAME)
    assert snapshot is not None
    assert snapshot.active is not None
    assert snapshot.active.meta.get("release") == "pr-7"
    document = await daemon.status_document()
    shown = {entry["name"]: entry for entry in document["services"]}
    assert shown[NAME]["policy"] == {
        "auto_rollback": False,
        "severity": "info",
        "delivery": "off",
        "next_digest": None,
    }
    assert shown[NAME]["railway"] is not None
    # A freeze on it shows in railguard_frozen at the next scrape, as a configured service's.
    await store_of(s).freeze(NAME, "investigating", "alice", s.clock.time())
    await daemon.refresh_gauges()
    frozen = {"service": NAME, "tier": "preview"}
    assert daemon.metrics.registry.get_sample_value("railguard_frozen", frozen) == 1.0
    await store_of(s).unfreeze(NAME)
    await daemon.refresh_gauges()
    assert daemon.metrics.registry.get_sample_value("railguard_frozen", frozen) == 0.0
    guarded = await store_of(s).events(NAME, kinds=["pr_environment_guarded"])
    assert [dict(e.data) for e in guarded] == [
        {"environment": "web-pr-7", "environment_id": env["id"], "template": "web"}
    ]

    # A bad release in it: the preview rule fires, nothing is rolled back, nobody alerted.
    pr_app.app[STATE_KEY].update({"mode": "error"})
    await s.run_for(8)
    assert worker.states["health-failing"].phase is Phase.FIRING
    assert await store_of(s).events(NAME, kinds=["rule_firing"])
    assert s.rollbacks_sent() == []
    assert s.active_release() == "v1"  # production untouched

    # Railway's listing garbled (an impossible name beside it) or failing: nothing changes.
    await control(s, "DELETE", f"environments/{env['id']}")
    garbage = s.emu.add_environment(next(iter(s.emu.projects)), "x" * 300, ephemeral=True)
    looks = prs(s).looks
    await s.run_for(12)
    assert prs(s).looks > looks
    assert prs(s).last_problem is not None
    assert "not a name" in prs(s).last_problem
    assert names(s) == ["web", NAME]
    s.emu.delete_environment(garbage.id)
    s.emu.set_faults(error_count=20, fault_operations=["RailguardPrEnvironments"])
    for _ in range(40):  # the next look, and its retries (Railway answers 503 to each)
        await s.run_for(1)
        if "503" in (prs(s).last_problem or ""):
            break
    assert "503" in (prs(s).last_problem or "")
    assert names(s) == ["web", NAME]

    # The PR closes: Railway answers without it, and it is dropped.
    s.emu.set_faults(error_count=0)
    await s.run_for(30)
    assert prs(s).last_problem is None
    assert names(s) == ["web"]
    assert prs(s).guarded == {}
    assert NAME not in daemon._workers
    assert NAME not in {t.name for t in daemon.poller.targets}
    assert daemon.poller.latest(NAME) is None
    assert await store_of(s).rule_states(NAME) == {}
    assert daemon.controller is not None
    assert NAME not in daemon.controller.services
    exposition = daemon.metrics.registry
    assert not [
        sample
        for metric in exposition.collect()
        for sample in metric.samples
        if sample.labels.get("service") == NAME
    ]
    dropped = await store_of(s).events(NAME, kinds=["pr_environment_dropped"])
    assert len(dropped) == 1
    hits = pr_app.hits
    await s.run_for(10)
    assert pr_app.hits == hits  # nothing probes it any more
    assert s.rollbacks_sent() == []


class Listings:
    """Railway's answers to the PR environments query, one per look (a fake client)."""

    def __init__(self) -> None:
        self.answers: list[Any] = []

    async def execute(self, document: str, variables: dict[str, Any]) -> Any:
        assert "isEphemeral: true" in document
        return self.answers.pop(0)


def listing(*envs: tuple[str, str], more: bool = False) -> dict[str, Any]:
    edges = [{"node": {"id": id, "name": name, "isEphemeral": True}} for id, name in envs]
    return {"project": {"environments": {"edges": edges, "pageInfo": {"hasNextPage": more}}}}


async def test_only_a_whole_listing_drops_and_configured_environments_stay_configured(
    stage: tuple[Stage, PrApp],
) -> None:
    s, _ = stage
    s.deploy("v1", ago=7200)
    daemon = await s.start_daemon()
    await daemon.supervisor.stop()  # the loops: this test looks by itself
    watcher = prs(s)
    fake = Listings()
    watcher.client = fake  # type: ignore[assignment]
    fake.answers = [
        listing(("env-a", "web-pr-1"), ("env-b", "web-pr-2")),
        listing(("env-a", "web-pr-1"), more=True),  # one page of more: nothing is dropped
        listing(("env-a", "web-pr-1"), (s.env, "production-copy")),  # configured: not a PR's
        listing(("env-c", "web pr 1")),  # "web.web-pr-1" after all: the name is taken
        listing(),
    ]
    await watcher.look()
    assert names(s) == ["web", "web.web-pr-1", "web.web-pr-2"]
    await watcher.look()
    assert names(s) == ["web", "web.web-pr-1", "web.web-pr-2"]
    await watcher.look()
    assert names(s) == ["web", "web.web-pr-1"]
    assert set(watcher.guarded) == {"env-a"}
    await watcher.look()  # env-a is gone, and env-c's service would be named as its was
    assert names(s) == ["web"]
    assert set(watcher.guarded) == set()
    await watcher.look()
    assert names(s) == ["web"]
    assert daemon_metric(s, "railguard_services", {"tier": "preview"}) == 0.0


def daemon_metric(stage: Stage, name: str, labels: dict[str, str]) -> float | None:
    assert stage.daemon is not None
    return stage.daemon.metrics.registry.get_sample_value(name, labels)


async def test_across_restarts_a_pr_keeps_its_pending_rule_and_one_closed_meanwhile_is_dropped(
    stage: tuple[Stage, PrApp], tmp_path: Path
) -> None:
    from monitor.store import open_store

    s, pr_app = stage
    s.deploy("v1", ago=7200)
    project = next(iter(s.emu.projects))
    seven = s.emu.add_environment(project, "web-pr-7", ephemeral=True)
    eight = s.emu.add_environment(project, "web-pr-8", ephemeral=True)
    for env in (seven, eight):
        s.emu.add_deployment(s.service, env.id, meta=release_meta(env.name))
    async with await open_store(tmp_path / "state.db") as store:
        await s.start_daemon(store=store)
        await s.run_for(2)
        assert names(s) == ["web", "web.web-pr-7", "web.web-pr-8"]
        pr_app.app[STATE_KEY].update({"mode": "error"})  # both PRs' probes fail (one app)
        await s.run_for(3)
        assert (await store.rule_states("web.web-pr-7"))["health-failing"]["phase"] == "pending"
        await s.stop_daemon()

        s.emu.delete_environment(eight.id)  # PR 8 closes while railguard is down
        daemon = await s.start_daemon(store=store)
        await until(lambda: prs(s).looks >= 1 and prs(s).last_problem is None, "a look")
        await s.run_for(1)
        assert names(s) == ["web", "web.web-pr-7"]
        assert daemon._workers["web.web-pr-7"].states["health-failing"].phase is Phase.PENDING
        assert await store.rule_states("web.web-pr-8") == {}
        dropped = await store.events("web.web-pr-8", kinds=["pr_environment_dropped"])
        assert [dict(e.data) for e in dropped] == [
            {"environment": "web-pr-8", "environment_id": eight.id, "template": "web"}
        ]
        await s.run_for(10)  # the next look: nothing left behind twice
        assert len(await store.events("web.web-pr-8", kinds=["pr_environment_dropped"])) == 1
        await s.stop_daemon()


async def test_a_pr_environment_dropped_while_the_gauges_refresh_leaves_no_series(
    stage: tuple[Stage, PrApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: ``refresh_gauges`` took the workers, then asked the store for freezes; a PR
    environment dropped meanwhile (its series forgotten) had ``railguard_frozen`` set again
    after the answer: a series for a service no longer guarded, for ever."""
    s, _ = stage
    s.deploy("v1", ago=7200)
    daemon = await s.start_daemon()
    env = await open_pr(s)
    await s.run_for(12)
    assert names(s) == ["web", NAME]
    store = store_of(s)
    freezes = store.freezes

    async def dropped_meanwhile(*args: Any, **kwargs: Any) -> Any:
        answer = await freezes(*args, **kwargs)
        await prs(s)._drop(*prs(s).guarded.pop(env["id"]))  # the PR closed meanwhile
        return answer

    monkeypatch.setattr(store, "freezes", dropped_meanwhile)
    await daemon.refresh_gauges()
    frozen = {"service": NAME, "tier": "preview"}
    assert daemon.metrics.registry.get_sample_value("railguard_frozen", frozen) is None
