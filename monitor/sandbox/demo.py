"""``railguard demo``: railguard guarding a service's three tiers on the local sandbox.

The sandbox (monitor/sandbox/sandbox.py) is the Railway emulator plus a sample app per
environment that serves whichever release is active there. The daemon runs against it with
the config in monitor/sandbox/demo.toml (seconds instead of minutes) and the story plays:
every tier healthy on v1; a bad production release (half its requests fail) is detected,
rolled back to the known-good v1 and verified recovered, with the console channel's alerts;
a bad staging release is rolled back too, its alerts kept for the daily digest (sent early
at the end); a broken preview is only recorded. The narration is the store's decision trail,
timestamped from the start; a summary ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import aiohttp

from monitor.alerts.router import CURSOR as ROUTER_CURSOR
from monitor.clock import Clock
from monitor.daemon import Daemon
from monitor.engine import Transition, Verdict
from monitor.environment import load_environment
from monitor.errors import RailguardError
from monitor.events import EventKind
from monitor.model import format_duration
from monitor.plan import ServicePlan
from monitor.planning import build_plan
from monitor.sandbox.sandbox import Sandbox
from monitor.status import TIMELINE_KINDS, Labels, words
from monitor.store import EventRecord, Store
from monitor.telemetry import Metrics

DEMO_CONFIG = Path(__file__).with_name("demo.toml")
TIERS = ("production", "staging", "preview")
SERVICE = {tier: f"web-{tier}" for tier in TIERS}
TRAFFIC_EVERY = 0.05  # seconds between requests to each app: 20 requests/s
STEP_LIMIT = 30.0  # seconds any one step of the story may take

# What each release does while it serves (sample app fields); unlisted releases are healthy.
BEHAVIOUR: dict[str, dict[str, Any]] = {
    "v2": {"error_ratio": 0.5},  # production's bad release: half of its requests fail
    "v3-rc1": {"mode": "error"},  # staging's: health check and requests answer 500
    "pr-7": {"mode": "error"},  # a broken preview
}


class DemoError(RailguardError):
    """The story did not unfold as it should (a step timed out)."""


class Narrator:
    """Timestamped lines from the start of the demo."""

    def __init__(self, clock: Clock, out: TextIO) -> None:
        self.clock = clock
        self.out = out
        self.start = clock.monotonic()

    def say(self, text: str) -> None:
        """Print one line of the story."""
        print(f"[{self.clock.monotonic() - self.start:5.1f}s] {text}", file=self.out, flush=True)


def free_port() -> int:
    """A port nobody listens on now (so the status URL is known before the daemon starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    """The sandbox, the daemon, traffic, and the story that drives them."""

    def __init__(self, *, clock: Clock, out: TextIO, port: int = 0) -> None:
        self.clock = clock
        self.narrator = Narrator(clock, out)
        self.port = port or free_port()
        self.sandbox = Sandbox(clock, TIERS, behaviour=BEHAVIOUR)
        self.daemon: Daemon | None = None
        self.events: list[EventRecord] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._narrator: asyncio.Task[None] | None = None

    @property
    def status_url(self) -> str:
        """Where the status page is."""
        return f"http://127.0.0.1:{self.port}/status"

    async def run(self, *, keep: bool = False) -> int:
        """The whole demo: start, play, the summary; with ``keep``, serve until cancelled."""
        with _alerts_to(self.narrator.out):
            try:
                await self.start()
                await self.play()
                self.narrator.say("summary:")
                for line in await self.summary():
                    self.narrator.say(line)
                self.narrator.say(f"the status page shows it all: {self.status_url}")
                if keep:
                    self.narrator.say("--keep: still running; press Ctrl-C to stop")
                    await asyncio.Event().wait()
            finally:
                await self.stop()
        return 0

    @property
    def store(self) -> Store:
        """The daemon's store (in memory: the demo keeps nothing)."""
        assert self.daemon is not None
        assert self.daemon.store is not None
        return self.daemon.store

    async def start(self) -> None:
        """The sandbox with v1 serving everywhere, the daemon, traffic and the narrator."""
        say = self.narrator.say
        await self.sandbox.start()
        for tier in TIERS:
            self.sandbox.release(tier, "v1", ago=3600)
        say(f"sandbox: Railway emulator at {self.sandbox.api_url}")
        for tier in TIERS:
            say(f"sandbox: {tier:<10} app at {self.sandbox.urls[tier]}, serving v1")
        environ = {**self.sandbox.environ, "DEMO_STATUS_URL": self.status_url}
        env = load_environment({**environ, "PORT": str(self.port), "RAILGUARD_HOST": "127.0.0.1"})
        plan = build_plan(DEMO_CONFIG, env, environ)
        self.daemon = Daemon(plan, clock=self.clock, metrics=Metrics(), sink=self._pending)
        await self.daemon.startup()
        say(f"railguard: watching 3 tiers; status page {self.status_url}")
        session = self.daemon.session
        assert session is not None
        self._tasks = [
            asyncio.create_task(self._send_traffic(session, self.sandbox.urls[tier]))
            for tier in ("production", "staging")
        ]
        self._narrator = asyncio.create_task(self._narrate())
        self._tasks.append(self._narrator)

    async def _send_traffic(self, session: aiohttp.ClientSession, url: str) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url + "/work") as response:
                    await response.read()
            await self.clock.sleep(TRAFFIC_EVERY)

    async def _pending(self, service: ServicePlan, verdict: Verdict) -> None:
        """Pending is not in the store's trail: the verdict sink tells it."""
        if Transition.PENDING in verdict.transitions:
            self.narrator.say(f"  {service.name}: {verdict.rule} pending: {verdict.reason}")

    async def _narrate(self) -> None:
        """Tell the story from the store's decision trail, as it is written."""
        labels, last = Labels(self.store), 0
        while True:
            for event in await self.store.events_after(last):
                last = event.id
                self.events.append(event)
                if event.kind in TIMELINE_KINDS:
                    said = await words(event, labels)
                    self.narrator.say(f"  {event.service}: {said.line}")
            await self.clock.sleep(0.1)

    def happened(self, tier: str, kind: EventKind, after: int = 0) -> bool:
        """Whether the trail has a ``kind`` event of the tier's service (after an id)."""
        name = SERVICE[tier]
        return any(e.kind == kind and e.service == name and e.id > after for e in self.events)

    async def wait_for(self, what: str, condition: Callable[[], bool | Awaitable[bool]]) -> float:
        """Wait on the clock until ``condition`` holds; returns how long it took."""
        started = self.clock.monotonic()
        while True:
            if self._narrator is not None and self._narrator.done():
                # The story is read from the trail: without the narrator nothing can happen.
                self._narrator.result()
                raise DemoError("the narrator stopped")
            held = condition()
            if held if isinstance(held, bool) else await held:
                return self.clock.monotonic() - started
            if self.clock.monotonic() - started > STEP_LIMIT:
                raise DemoError(f"the demo waited {STEP_LIMIT:g}s for {what}")
            await self.clock.sleep(0.1)

    async def alerts_settled(self) -> bool:
        """Every event routed and every queued alert delivered."""
        router = await self.store.cursor(ROUTER_CURSOR)
        routed = self.events == [] or (router is not None and int(router) >= self.events[-1].id)
        return routed and not await self.store.outbox_pending()

    async def push(self, tier: str, release: str) -> None:
        """Deploy ``release`` to ``tier`` and wait until it serves."""
        self.narrator.say(f"{tier}: {release} is pushed; Railway builds and deploys it")
        self.sandbox.deploy(tier, release)
        await self.wait_for(
            f"{release} to serve {tier}", lambda: self.sandbox.active_release(tier) == release
        )
        self.narrator.say(f"{tier}: {release} is live")

    async def bad_release(self, tier: str, release: str, symptom: str) -> None:
        """Push a bad release; wait for its rollback to succeed and the alerts to go out."""
        mark = self.events[-1].id if self.events else 0
        await self.push(tier, release)
        self.narrator.say(f"{tier}: {release} {symptom}")
        await self.wait_for(
            f"{tier}'s rollback", lambda: self.happened(tier, EventKind.ROLLBACK_SUCCEEDED, mark)
        )
        await self.wait_for(f"{tier}'s alerts", self.alerts_settled)

    async def play(self) -> None:
        """The story."""
        say = self.narrator.say
        say("all three tiers serve v1; railguard probes each every second")
        for tier in TIERS:
            await self.wait_for(
                f"v1 to be known-good on {tier}",
                lambda t=tier: self.happened(t, EventKind.DEPLOYMENT_VERIFIED),  # type: ignore[misc]
            )
        say("v1 is known-good everywhere: the release to go back to if a new one fails")
        await self.wait_for("the first alerts", self.alerts_settled)

        await self.bad_release("production", "v2", "fails half of its requests with 500")
        say(f"production: serving {self.sandbox.active_release('production')} again, verified")
        await self.bad_release("staging", "v3-rc1", "fails its health check")
        say("staging: rolled back; nobody was paged: it is kept for staging's daily digest")

        await self.push("preview", "pr-7")
        say("preview: pr-7 fails its health check")
        await self.wait_for(
            "preview's rule to fire", lambda: self.happened("preview", EventKind.RULE_FIRING)
        )
        say("preview: recorded only: no rollback, no alert (preview is watch-only)")
        await self.push("preview", "pr-8")
        await self.wait_for(
            "preview to recover", lambda: self.happened("preview", EventKind.RULE_RESOLVED)
        )

        say("staging: its daily digest is due at 09:00 UTC; the demo sends it now")
        assert self.daemon is not None
        assert self.daemon.digest is not None
        await self.daemon.digest.send_now("staging")
        await self.wait_for("staging's digest", self.alerts_settled)

    async def summary(self) -> list[str]:
        """What happened per tier, with the rollback times."""
        lines = []
        for tier in TIERS:
            name = SERVICE[tier]
            fired = sorted(
                {
                    e.data["rule"]
                    for e in self.events
                    if e.service == name and e.kind == EventKind.RULE_FIRING
                }
            )
            rollbacks = [r for r in await self.store.rollbacks(name) if r.state == "succeeded"]
            alerts = [
                m for m in await self.store.outbox(state="sent") if m.payload.get("tier") == tier
            ]
            did = ", ".join(
                f"rolled back in {format_duration(r.finished_at - r.decided_at)}"
                for r in rollbacks
                if r.finished_at is not None
            )
            lines.append(
                f"  {tier:<10} {name}: fired {', '.join(fired) or 'nothing'}; "
                f"{did or 'no rollback'}; now serving {self.sandbox.active_release(tier)}; "
                f"{len(alerts)} alert(s) printed"
            )
        mutations = len(self.sandbox.emulator.mutation_calls("deploymentRollback"))
        lines.append(f"  railway: {mutations} rollback mutation(s) sent, one per rollback")
        return lines

    async def stop(self) -> None:
        """Stop traffic, the narrator, the daemon and the sandbox."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            if self.daemon is not None:
                await self.daemon.shutdown()
        finally:
            await self.sandbox.close()


@contextlib.contextmanager
def _alerts_to(out: TextIO) -> Iterator[None]:
    """The console channel prints to stdout: into the story's stream."""
    if out is sys.stdout:
        yield
        return
    with contextlib.redirect_stdout(out):
        yield


async def run_demo(*, clock: Clock, out: TextIO, keep: bool = False, port: int = 0) -> int:
    """Play the demo; with ``keep``, leave everything running until cancelled."""
    return await Demo(clock=clock, out=out, port=port).run(keep=keep)
