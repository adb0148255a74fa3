"""The rollback stage: the Railway emulator, a sample app that serves whichever release is
active on the emulator, and railguard guarding it with short windows, on one FakeClock.

Releases are labels in a deployment's ``meta`` (``{"release": "v2"}``); ``behaviour`` maps a
release to what the app does while it serves (sample app control fields). A deployment the
emulator puts to sleep puts the app to sleep; the request that wakes the app wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from monitor.clock import Clock, FakeClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.model import Signal
from monitor.planning import build_plan
from monitor.railway.client import Deployment
from monitor.sandbox.railway_emulator import RailwayEmulator
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.sandbox.sandbox import HEALTHY, link_sleep, plays
from monitor.scheduler import ServiceWorker
from monitor.server import create_app as railguard_app
from monitor.store import Store
from monitor.telemetry import Metrics

TOKEN = "stage-token"
ROLLOUT = (("INITIALIZING", 1.0), ("BUILDING", 3.0), ("DEPLOYING", 2.0))  # a rollback: 3s

CONFIG = """
[railway]
poll_interval = "2s"

[tiers.production]
bake = "10s"
grace = "{grace}"
cooldown = "60s"
rollback_timeout = "30s"
{tier_extra}

[[services]]
name = "web"
tier = "production"
service_id = "{service}"
environment_id = "{env}"
interval = "1s"
health = {{ url = "{app}/health", timeout = "1s" }}
error_rate = {{ source = "exposition", url = "{app}/metrics", min_requests = 5 }}
memory = {{ source = "exposition", url = "{app}/metrics", limit_metric = "app_memory_limit_bytes" }}

[services.rules.health-failing]
for = "5s"
[services.rules.error-rate]
for = "5s"
[services.rules.memory-high]
for = "5s"
[services.rules.deployment-crashed]
for = "4s"
"""


class Stage:
    """Everything a rollback scenario needs, driven by :meth:`run_for`."""

    def __init__(self, clock: Clock, tmp: Path, behaviour: Mapping[str, Mapping[str, Any]]):
        self.clock = clock
        self.tmp = tmp
        self.behaviour = dict(behaviour)
        self.emu = RailwayEmulator(clock, tokens=[TOKEN], rollout=ROLLOUT)
        self.app = create_app(clock=clock)
        self.daemon: Daemon | None = None
        self.store: Store | None = None
        self.extra_config = ""
        self.extra_environ: dict[str, str] = {}
        self.tier_extra = ""  # lines added to [tiers.production]
        self.grace = "0s"
        self.config_template = CONFIG
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.traffic_per_second = 10
        self.idle = False  # no traffic at all: a serverless service nobody calls sleeps on
        self._applied: dict[str, Any] = {}

    async def start_servers(self) -> None:
        """The emulator and the app on 127.0.0.1; a project, an environment, a service."""
        for app in (self.emu.app, self.app):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self._runners.append(runner)
        self.emu_url = f"http://127.0.0.1:{self._runners[0].addresses[0][1]}/graphql/v2"
        self.app_url = f"http://127.0.0.1:{self._runners[1].addresses[0][1]}"
        project = self.emu.add_project("shop")
        self.env = self.emu.add_environment(project.id, "production").id
        self.service = self.emu.add_service(project.id, "web").id
        link_sleep(self.emu, self.app, self.service, self.env)
        self._session = aiohttp.ClientSession()

    def deploy(self, release: str, *, ago: float = 0.0, status: str = "SUCCESS") -> Any:
        """A deployment of ``release`` (active if SUCCESS) created ``ago`` seconds ago."""
        return self.emu.add_deployment(
            self.service,
            self.env,
            status=status,
            meta=release_meta(release),
            created_at=self.clock.time() - ago,
        )

    def push(self, release: str) -> Any:
        """A deploy of ``release`` that builds and rolls out on the clock, as a push does."""
        return self.emu.deploy(self.service, self.env, meta=release_meta(release))

    def applied_rollbacks(self) -> list[str]:
        """The ids of deploymentRollback mutations Railway applied (dropped answers included)."""
        return [m.arguments["id"] for m in self.emu.mutation_calls("deploymentRollback") if m.ok]

    def write_config(self) -> Path:
        """The stage's config file (plus ``extra_config``)."""
        text = self.config_template.format(
            service=self.service,
            env=self.env,
            app=self.app_url,
            tier_extra=self.tier_extra,
            grace=self.grace,
        )
        path = self.tmp / "railguard.toml"
        path.write_text(text + self.extra_config)
        return path

    @property
    def environ(self) -> dict[str, str]:
        """What railguard needs in its environment to reach the stage's Railway."""
        return {"RAILWAY_API_TOKEN": TOKEN, "RAILWAY_API_URL": self.emu_url, **self.extra_environ}

    async def start_daemon(self, store: Store | None = None) -> Daemon:
        """railguard, in this process, with the stage's config."""
        path = self.write_config()
        environ = self.environ
        plan = build_plan(path, load_environment(environ), environ)
        self.daemon = Daemon(
            plan,
            clock=self.clock,
            metrics=Metrics(CollectorRegistry()),
            serve_http=False,
            store=store,
        )
        self._sync_app()
        await self.daemon.startup()
        return self.daemon

    def active_release(self) -> str | None:
        """The release the emulator says is serving."""
        active = self.emu.active.get((self.service, self.env))
        return None if active is None else str(self.emu.deployments[active].meta.get("release"))

    def sync_app(self) -> None:
        """Make the app behave as the release the emulator has active."""
        self._sync_app()

    def _sync_app(self) -> None:
        active = self.emu.active.get((self.service, self.env))
        meta = {} if active is None else self.emu.deployments[active].meta
        release = self.active_release()
        wanted = {
            **HEALTHY,
            **self.behaviour.get(release or "", {}),
            **plays(active or "", meta),
        }
        if wanted != self._applied:  # re-applying a mode would restart its pattern
            self.app[STATE_KEY].update(wanted)
            self._applied = wanted

    async def send_traffic(self, requests: int) -> None:
        """Some requests to the app (what its error rate is measured on)."""
        assert self._session is not None
        for _ in range(requests):
            async with self._session.get(f"{self.app_url}/work") as response:
                await response.read()

    async def run_for(self, seconds: float, step: float = 0.5) -> None:
        """Move the clock on, keeping the app on the active release and sending traffic."""
        assert isinstance(self.clock, FakeClock), "run_for drives a FakeClock"
        assert self._session is not None
        for _ in range(round(seconds / step)):
            self._sync_app()
            for _ in range(0 if self.idle else max(1, round(self.traffic_per_second * step))):
                async with self._session.get(f"{self.app_url}/work") as response:
                    await response.read()
            await self.clock.advance(step)
            await self.settle()

    async def settle(self, limit: float = 60.0) -> None:
        """Wait until what the clock's last step started has run: loopback I/O (probes,
        polls, the emulator, the app) completes within a few turns of the loop, but the
        store's reads and writes run on its thread, and on PostgreSQL cross a network. How
        long that takes is the machine's business, not the test's: wait for the store to
        have nothing in flight, three looks in a row."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        quiet = 0
        while quiet < 3:
            await asyncio.sleep(0.001)
            store = self.daemon.store if self.daemon is not None else None
            quiet = 0 if getattr(store, "busy", False) else quiet + 1
            assert loop.time() < deadline, "the store never settled"

    def rollbacks_sent(self) -> list[str]:
        """The ids the emulator received in deploymentRollback mutations."""
        return [m.arguments["id"] for m in self.emu.mutation_calls("deploymentRollback")]

    async def stop_daemon(self) -> None:
        """Shut railguard down (the stage keeps running)."""
        if self.daemon is not None:
            await self.daemon.shutdown()
            self.daemon = None

    async def close(self) -> None:
        """Stop everything."""
        await self.stop_daemon()
        if self._session is not None:
            await self._session.close()
        await self.emu.aclose()
        for runner in self._runners:
            await runner.cleanup()


def release_meta(release: str) -> dict[str, str]:
    """A deployment's meta as Railway gives it for a GitHub deploy: the commit is the release."""
    return {"release": release, "commitHash": hashlib.sha1(release.encode()).hexdigest()}


def newest(deployments: list[Deployment]) -> Deployment:
    """The newest of some deployments."""
    return max(deployments, key=lambda d: d.created_at)


def store_of(stage: Stage) -> Store:
    """The running daemon's store."""
    assert stage.daemon is not None
    assert stage.daemon.store is not None
    return stage.daemon.store


async def known_good(stage: Stage) -> str:
    """v1 served for hours, v1.1 bakes to known-good under railguard's eyes; its id."""
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(12)
    return good.id


async def released(stage: Stage, bad: str = "v2") -> tuple[str, str]:
    """v1.1 serves and bakes to known-good; then ``bad`` goes live. Returns their ids."""
    good = await known_good(stage)
    return good, stage.deploy(bad).id


def worker(stage: Stage) -> ServiceWorker:
    """The running daemon's worker for ``web``."""
    assert stage.daemon is not None
    (web,) = stage.daemon.workers
    return web


async def watch(stage: Stage, seconds: float) -> list[str]:
    """Run the stage; the health samples' reasons, one per half second."""
    reasons = []
    for _ in range(round(seconds / 0.5)):
        await stage.run_for(0.5)
        sample = worker(stage).latest.get(Signal.HEALTH)
        reasons.append("" if sample is None else sample.reason)
    return reasons


async def trail(stage: Stage, kind: str) -> list[dict[str, Any]]:
    """The data of one kind of event of service ``web``, oldest first."""
    found = await store_of(stage).events("web", kinds=[kind])
    return [dict(e.data) for e in reversed(found)]


@contextlib.asynccontextmanager
async def serving(daemon: Daemon) -> AsyncIterator[int]:
    """railguard's own HTTP server for ``daemon`` on 127.0.0.1; its port."""
    runner = web.AppRunner(railguard_app(daemon, daemon.metrics), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def served(stage: Stage, environ: Mapping[str, str]) -> AsyncIterator[int]:
    """v1 serving for hours, the daemon started with ``environ`` behind its server; the port."""
    stage.extra_environ = dict(environ)
    stage.deploy("v1", ago=7200)
    daemon = await stage.start_daemon()
    await stage.run_for(2)
    async with serving(daemon) as port:
        yield port
