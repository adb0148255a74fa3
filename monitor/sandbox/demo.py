"""``railguard demo``: the daemon guarding three local sample apps, one per tier.

It starts a sample app for production, staging and preview on 127.0.0.1, runs the daemon
against them with short windows (monitor/sandbox/demo.toml), sends them traffic, and plays a
story: all healthy; a bad production release fails half its requests and is detected; then
staging's and preview's health fail, each handled with its tier's urgency. Every rule
transition is narrated with a timestamp; a summary ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from monitor.clock import Clock
from monitor.daemon import Daemon
from monitor.engine import Transition, Verdict
from monitor.errors import RailguardError
from monitor.model import Phase
from monitor.plan import ServicePlan, build_plan
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.scheduler import ServiceWorker
from monitor.settings import load_environment
from monitor.telemetry import Metrics

DEMO_CONFIG = Path(__file__).with_name("demo.toml")
TIERS = ("production", "staging", "preview")
TRAFFIC_EVERY = 0.05  # seconds between requests to each app: 20 requests/s

URGENCY = {
    "immediate": "page now ({severity})",
    "digest": "kept for the daily digest ({severity})",
    "off": "no alert: logs and metrics only",
}


class DemoError(RailguardError):
    """The story did not unfold as it should (a step timed out)."""


@dataclass
class Narrator:
    """Timestamped lines from the start of the demo."""

    clock: Clock
    out: TextIO
    start: float = 0.0
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        """Print one line of the story."""
        line = f"[{self.clock.monotonic() - self.start:6.1f}s] {text}"
        self.lines.append(line)
        print(line, file=self.out, flush=True)


class Demo:
    """The sandbox: sample apps, traffic, the daemon, and the story that drives them."""

    def __init__(self, *, clock: Clock, out: TextIO, port: int = 0) -> None:
        self.clock = clock
        self.narrator = Narrator(clock, out)
        self.port = port
        self.apps = {tier: create_app(release="v1", clock=clock) for tier in TIERS}
        self.urls: dict[str, str] = {}
        self.daemon: Daemon | None = None
        self.transitions: list[tuple[str, Verdict]] = []
        self._runners: list[web.AppRunner] = []
        self._traffic: list[asyncio.Task[None]] = []
        self._workers: dict[str, ServiceWorker] = {}

    async def _sink(self, service: ServicePlan, verdict: Verdict) -> None:
        self.transitions.append((service.name, verdict))
        what = ", ".join(t.value for t in verdict.transitions)
        self.narrator.say(f"  {service.name}: {verdict.rule} {what}: {verdict.reason}")
        if verdict.fired:
            policy = service.policy
            urgency = URGENCY[policy.delivery].format(severity=policy.severity)
            self.narrator.say(f"  -> {service.tier}: {urgency}")

    async def _start_apps(self) -> None:
        for tier, app in self.apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            self.urls[tier] = f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def _send_traffic(self, session: aiohttp.ClientSession, url: str) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url + "/work") as response:
                    await response.read()
            await self.clock.sleep(TRAFFIC_EVERY)

    def worker(self, tier: str) -> ServiceWorker:
        """The daemon's worker for the service of ``tier``."""
        return self._workers[tier]

    def set_app(self, tier: str, **changes: Any) -> None:
        """Change what the tier's sample app does (mode, error_ratio, release...)."""
        self.apps[tier][STATE_KEY].update(changes)

    async def wait_for(self, what: str, condition: Callable[[], bool], limit: float = 30) -> float:
        """Wait on the clock until ``condition`` holds; returns how long it took."""
        started = self.clock.monotonic()
        while not condition():
            if self.clock.monotonic() - started > limit:
                raise DemoError(f"the demo waited {limit:g}s for {what}")
            await self.clock.sleep(0.1)
        return self.clock.monotonic() - started

    def firing(self, tier: str, rule: str) -> bool:
        """Whether a rule fires for the tier's service."""
        return self.worker(tier).states[rule].phase is Phase.FIRING

    async def start(self) -> None:
        """Start the apps, the traffic and the daemon."""
        self.narrator.start = self.clock.monotonic()
        await self._start_apps()
        environ = {f"{tier.upper()}_URL": url for tier, url in self.urls.items()}
        env = load_environment({"PORT": str(self.port), "RAILGUARD_HOST": "127.0.0.1"})
        plan = build_plan(DEMO_CONFIG, env, environ)
        self.daemon = Daemon(plan, clock=self.clock, metrics=Metrics(), sink=self._sink)
        await self.daemon.startup()
        assert self.daemon.scheduler is not None
        self._workers = {w.plan.tier: w for w in self.daemon.scheduler.workers}
        session = self.daemon.session
        assert session is not None
        for tier in ("production", "staging"):
            self._traffic.append(asyncio.create_task(self._send_traffic(session, self.urls[tier])))
        for tier in TIERS:
            self.narrator.say(f"{tier}: sample app at {self.urls[tier]} (release v1)")
        self.narrator.say(f"railguard: /metrics and /status on http://127.0.0.1:{self.daemon.port}")

    async def play(self) -> None:
        """The story."""
        say = self.narrator.say
        say("all three tiers are healthy; railguard probes each every second")
        await self.wait_for("first ticks", lambda: all(self.worker(t).ticks >= 3 for t in TIERS))

        say("production: release v2 goes out and fails half of its requests with 500")
        self.set_app("production", release="v2", error_ratio=0.5)
        took = await self.wait_for(
            "production's error-rate rule", lambda: self.firing("production", "error-rate")
        )
        say(f"production: detected {took:.1f}s after the fault (rule window 3s + 1s interval)")
        say("production: v1 is put back by hand (automatic rollback is not in this version yet)")
        self.set_app("production", release="v1", error_ratio=0.0)
        await self.wait_for(
            "production to recover", lambda: not self.firing("production", "error-rate")
        )
        say("production: healthy again on v1")

        await self._fail_health("staging")
        await self._fail_health("preview")

    async def _fail_health(self, tier: str) -> None:
        """Break a tier's health check until its rule fires, then mend it."""
        self.narrator.say(f"{tier}: its health check starts failing")
        self.set_app(tier, mode="error")
        await self.wait_for(f"{tier}'s health rule", lambda: self.firing(tier, "health-failing"))
        self.set_app(tier, mode="ok")
        await self.wait_for(f"{tier} to recover", lambda: not self.firing(tier, "health-failing"))

    def summary(self) -> list[str]:
        """One line per service: what fired and resolved."""
        lines = []
        for tier in TIERS:
            worker = self.worker(tier)
            fired = [v.rule for n, v in self.transitions if n == worker.plan.name and v.fired]
            resolved = sum(
                Transition.RESOLVED in v.transitions
                for n, v in self.transitions
                if n == worker.plan.name
            )
            lines.append(
                f"  {worker.plan.name} [{tier}]: {worker.ticks} ticks, fired "
                f"{', '.join(fired) or 'nothing'}, resolved {resolved}, "
                f"alerts {worker.plan.policy.delivery}"
            )
        return lines

    async def stop(self) -> None:
        """Stop traffic, the daemon and the apps."""
        for task in self._traffic:
            task.cancel()
        await asyncio.gather(*self._traffic, return_exceptions=True)
        if self.daemon is not None:
            await self.daemon.shutdown()
        for runner in self._runners:
            await runner.cleanup()


async def run_demo(*, clock: Clock, out: TextIO, keep: bool = False, port: int = 0) -> int:
    """Play the demo; with ``keep``, leave everything running until cancelled."""
    demo = Demo(clock=clock, out=out, port=port)
    try:
        await demo.start()
        await demo.play()
        demo.narrator.say("summary:")
        for line in demo.summary():
            demo.narrator.say(line)
        if keep:
            demo.narrator.say("--keep: still running; press Ctrl-C to stop")
            await asyncio.Event().wait()
    finally:
        await demo.stop()
    return 0
