"""One batched GraphQL request per poll for every service railguard watches on Railway.

Each service gets aliased fields in a single document (monitor/railway/document.py: its
deployments, HTTP requests by status, request durations, memory) and Railway's own status
is one more field. The document is built once; only the time window changes between polls,
so Railway's API budget pays one request per poll however many services there are.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from monitor.clock import Clock
from monitor.errors import RailwayError, RailwayGraphQLError
from monitor.model import LATENCY_SIGNALS, Sample, Signal, format_duration
from monitor.railway.client import Deployment, RailwayClient, newest_live, parse_deployments
from monitor.railway.deployment_signal import CrashWatch, deployment_sample
from monitor.railway.document import Target, asks_window, blamed_by, build_document, counts_alias
from monitor.railway.metrics import error_rate_sample, latency_samples, memory_sample
from monitor.railway.platform import ALIAS as PLATFORM_ALIAS
from monitor.railway.platform import PlatformStatus, read_platform

log = structlog.get_logger("railguard.railway")
_YIELD_EVERY = 10  # services read between two yields to the event loop
# Railway refused platformStatus (an error on its field nulls the whole answer): polls leave
# it out this long, so a token that may not ask it costs one extra request per 10 minutes.
PLATFORM_BACKOFF = 600.0
# Samples that do not depend on the deployments answer (an unreadable one leaves them be).
_DEPLOYMENT_FREE = frozenset({Signal.ERROR_RATE, *LATENCY_SIGNALS})
REFUSED_BACKOFF = 300.0  # seconds a service Railway refused is left out of the batched poll
MAX_REASKS = 3  # re-asks per poll without what Railway refused (it names one error at a time)


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    """What one poll learned about one service."""

    at: float
    deployments: tuple[Deployment, ...] = ()
    samples: Mapping[Signal, Sample] = field(default_factory=dict)
    problem: str | None = None  # why this service's deployments could not be read

    @property
    def active(self) -> Deployment | None:
        """The active deployment: the newest that went live, even if it crashed since."""
        return newest_live(self.deployments)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class RailwayPoller:
    """Asks Railway about every target once per ``interval``; keeps the latest answers."""

    def __init__(
        self,
        client: RailwayClient,
        targets: Sequence[Target],
        *,
        clock: Clock,
        interval: float,
        platform: bool = True,
    ) -> None:
        self.client = client
        self.targets = tuple(targets)
        self.clock = clock
        self.interval = interval
        self.ask_platform = platform  # ask Railway's own status with every poll
        # Told of every service's snapshot after each successful poll (release tracking).
        self.listener: Callable[[str, ServiceSnapshot], Awaitable[None]] | None = None
        # Told of Railway's own status after each poll that could read it (its events).
        self.platform_listener: Callable[[PlatformStatus], Awaitable[None]] | None = None
        self.platform: PlatformStatus | None = None  # the last readable platformStatus
        self.platform_problem: str | None = None  # why the last one was unknown, if it was
        self._platform_off_until: float | None = None  # monotonic: Railway refused the field
        self.polls = 0
        self.early_polls = 0
        self.last_error: str | None = None  # what went wrong in the last poll, if anything
        self.last_failure: str | None = None  # set when the whole last poll failed
        self.last_beat: float | None = None  # when run() last started a poll (monotonic)
        self._wake = asyncio.Event()
        self._last_early: float | None = None
        self._latest: dict[str, ServiceSnapshot] = {}
        # target name -> (Railway's refusal, monotonic time to ask about it again)
        self._refused: dict[str, tuple[str, float]] = {}
        self._answered_at: float | None = None
        self._crashes: dict[str, CrashWatch] = {}
        self.retarget(self.targets)

    def retarget(self, targets: Sequence[Target]) -> None:
        """Ask about ``targets`` from the next poll on (PR environments come and go)."""
        self.targets = tuple(targets)
        self.document = build_document(self.targets, platform=self.ask_platform)
        names = {t.name for t in self.targets}
        for gone in set(self._latest) - names:
            del self._latest[gone]
        for gone in set(self._refused) - names:
            del self._refused[gone]
        # A crash loop is seen across polls: sightings of failing instances over 4 polls.
        window = max(120.0, 4 * self.interval)
        self._crashes = {t.name: self._crashes.get(t.name) or CrashWatch(window) for t in targets}
        self._window = 3 * max(
            [t.error_rate.step for t in targets if t.error_rate]
            + [t.memory.sample_rate for t in targets if t.memory]
            + [t.latency.step for t in targets if t.latency]
            + [60.0]
        )

    def latest(self, name: str) -> ServiceSnapshot | None:
        """The newest snapshot of service ``name``."""
        return self._latest.get(name)

    @property
    def max_age(self) -> float:
        """Past this age a poll's answer is stale: the poller is stuck, not merely slowed by
        the budget (the daemon's monitor_blind check uses the same measure)."""
        return 5 * self.interval + 30.0

    def incident(self, now: float) -> PlatformStatus | None:
        """Railway's own trouble per the last readable platformStatus, if it is not stale.

        None when Railway is stable, when its status is unknown (never asked, unreadable,
        refused) or older than :attr:`max_age`: only a fresh word from Railway holds."""
        status = self.platform
        if status is None or not status.troubled or now - status.at > self.max_age:
            return None
        return status

    def age(self, now: float) -> float | None:
        """Seconds since the last poll that answered (None before the first)."""
        return None if self._answered_at is None else now - self._answered_at

    def variables(self, now: float, targets: Sequence[Target] | None = None) -> dict[str, Any]:
        """The variables of the document for ``targets`` (default all) at ``now``."""
        targets = self.targets if targets is None else targets
        values: dict[str, Any] = {}
        if any(asks_window(t) for t in targets):
            values |= {"start": _iso(now - self._window), "end": _iso(now)}
        for i, t in enumerate(targets):
            values[f"s{i}"] = t.service_id
            values[f"e{i}"] = t.environment_id
        return values

    async def poll(self) -> None:
        """One batched request; a failure leaves the previous snapshots to age.

        Railway's root fields are non-null, so one alias that errors (a deleted environment,
        a token that cannot see one service) nulls the whole answer: the services it names
        are asked about no more this poll, and the rest again, once, without them. An error
        on platformStatus likewise: asked again without it, and left out for a while.
        """
        now = self.clock.time()
        failed = self._still_refused()  # target name -> why Railway would not answer for it
        asked = tuple(t for t in self.targets if t.name not in failed) or self.targets
        if len(asked) == len(self.targets):
            failed = {}
        platform = self._platform_wanted()
        whole = len(asked) == len(self.targets) and platform
        document = self.document if whole else build_document(asked, platform=platform)
        refused: str | None = None  # Railway's error on platformStatus, if any
        reasks = 0
        while True:
            try:
                data = await self.client.execute(document, self.variables(now, asked))
            except RailwayGraphQLError as e:
                blamed = blamed_by(asked, e)
                refused = e.paths.get(PLATFORM_ALIAS) if platform else None
                some = bool(blamed) and len(blamed) < len(asked)
                retry = some or (refused is not None and not blamed)
                if e.data is None and retry and reasks < MAX_REASKS:
                    # Ask again without what Railway refused (it may name one error at a
                    # time): the services it did not name are still news, and its own
                    # status is unknown this poll. A refused service sits out a while.
                    reasks += 1
                    if refused is not None:
                        platform = False
                        self._platform_refused(refused)
                    if some:
                        failed |= blamed
                        self._refuse(blamed)
                        asked = tuple(t for t in asked if t.name not in blamed)
                    document = build_document(asked, platform=platform)
                    continue
                if e.data is None:
                    self._failed(e)
                    return
                data = e.data  # partial data: the services that answered are still news
                failed |= blamed
                self._refuse(blamed)
            except RailwayError as e:
                self._failed(e)
                return
            break
        for target in asked:
            if target.name not in failed:
                self._refused.pop(target.name, None)  # answered: asked with the others again
        self.last_error = "; ".join(sorted(set(failed.values()))) if failed else None
        self.last_failure = None
        at = self.clock.time()
        current = set(self._crashes)  # a target dropped while this poll was out is not news
        for i, target in enumerate(asked):
            if target.name not in current:
                continue
            self._latest[target.name] = self._snapshot(i, target, data, at, failed.get(target.name))
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                # A thousand services' answers take a few hundred ms to read: let the ticks
                # and decisions waiting on the loop run in between.
                await asyncio.sleep(0)
        self._answered_at = at
        for target in self.targets:
            if target.name in failed and target not in asked:
                self._latest[target.name] = self._snapshot(0, target, {}, at, failed[target.name])
        self.polls += 1
        status = self._read_platform(data, at, refused) if platform else None
        if status is not None and self.platform_listener is not None:
            await self.platform_listener(status)
        if self.listener is not None:
            for i, target in enumerate(self.targets):
                if (snapshot := self._latest.get(target.name)) is not None:  # added since: later
                    await self.listener(target.name, snapshot)
                if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # a listener that writes nothing never yields

    def _still_refused(self) -> dict[str, str]:
        """The services Railway refused lately, with why, while they sit out."""
        now = self.clock.monotonic()
        return {
            name: f"{why} (asked again in {format_duration(until - now)})"
            for name, (why, until) in self._refused.items()
            if until > now
        }

    def _refuse(self, blamed: Mapping[str, str]) -> None:
        until = self.clock.monotonic() + REFUSED_BACKOFF
        for name, why in blamed.items():
            if name not in self._refused:
                log.warning(
                    "Railway refused a service; it sits out the batched poll", service=name, why=why
                )
            self._refused[name] = (why, until)

    def _platform_wanted(self) -> bool:
        off = self._platform_off_until
        return self.ask_platform and (off is None or self.clock.monotonic() >= off)

    def _platform_refused(self, message: str) -> None:
        self._platform_off_until = self.clock.monotonic() + PLATFORM_BACKOFF
        self._platform_unknown(f"Railway refused platformStatus: {message}")

    def _read_platform(
        self, data: Mapping[str, Any], at: float, refused: str | None
    ) -> PlatformStatus | None:
        """Keep the status if it is readable; otherwise it is unknown (the last one ages)."""
        if refused is not None:
            self._platform_unknown(f"Railway refused platformStatus: {refused}")
            return None
        status = read_platform(data.get(PLATFORM_ALIAS), at)
        if isinstance(status, str):
            self._platform_unknown(status)
            return None
        self.platform, self.platform_problem = status, None
        return status

    def _platform_unknown(self, problem: str) -> None:
        if self.platform_problem is None:  # said once, when it starts
            log.warning("Railway's platform status is unknown (never an incident)", problem=problem)
        self.platform_problem = problem

    def _failed(self, error: RailwayError) -> None:
        self.last_error = self.last_failure = str(error)
        log.warning("railway poll failed", error=str(error))

    def _snapshot(
        self, i: int, target: Target, data: Mapping[str, Any], at: float, refused: str | None
    ) -> ServiceSnapshot:
        samples: dict[Signal, Sample] = {}
        deployments: list[Deployment] = []
        problem = None if refused is None else f"Railway refused: {refused}"
        if problem is None:
            try:
                deployments = parse_deployments(data.get(f"d{i}"), f"d{i}")
            except RailwayError as e:
                problem = str(e)
        snapshot = ServiceSnapshot(at=at, deployments=tuple(deployments))
        if target.error_rate is not None:
            samples[Signal.ERROR_RATE] = error_rate_sample(
                data.get(f"h{i}"), target.error_rate, at, f"h{i}"
            )
        if target.latency is not None:
            counts = counts_alias(i, target)
            for sample in latency_samples(
                data.get(f"p{i}"),
                data.get(counts),
                target.latency,
                target.quantiles,
                at,
                f"p{i}",
                requests_path=counts,
            ):
                samples[sample.signal] = sample
        if target.memory is not None:
            samples[Signal.MEMORY] = memory_sample(data.get(f"m{i}"), snapshot.active, at, f"m{i}")
        if target.deployment:
            sightings = self._crashes[target.name].observe(snapshot.active, at)
            samples[Signal.DEPLOYMENT] = deployment_sample(snapshot.active, at, problem, sightings)
        if problem is not None:
            samples = {
                s: Sample(s, at, None, problem)
                if s not in _DEPLOYMENT_FREE or refused is not None
                else sample
                for s, sample in samples.items()
            }
        return ServiceSnapshot(
            at=at, deployments=snapshot.deployments, samples=samples, problem=problem
        )

    def refresh(self) -> bool:
        """Ask :meth:`run` to poll now instead of at its next slot (a deploy webhook's hint).

        At most one early poll per ``interval / 2``: webhooks are unsigned, so a flood of
        them must not spend the API budget. Returns False when the request is dropped.
        """
        now = self.clock.monotonic()
        if self._last_early is not None and now - self._last_early < self.interval / 2:
            return False
        self._last_early = now
        self._wake.set()
        return True

    async def run(self) -> None:
        """Poll on a drift-free cadence until cancelled; :meth:`refresh` polls sooner."""
        next_at = self.clock.monotonic()
        while True:
            # A refresh asked for during this poll is answered by the next one: the poll in
            # flight may have been sent before the deploy the webhook announced.
            self._wake.clear()
            self.last_beat = self.clock.monotonic()
            await self.poll()
            next_at += self.interval
            behind = self.clock.monotonic() - next_at
            if behind > 0:  # the budget held the poll back: skip, do not bunch
                next_at += math.ceil(behind / self.interval) * self.interval
            if await self._sleep_or_wake(next_at - self.clock.monotonic()):
                # The early poll takes the slot's place: the cadence restarts from it.
                self.early_polls += 1
                next_at = self.clock.monotonic()

    async def _sleep_or_wake(self, seconds: float) -> bool:
        """Sleep on the clock until ``seconds`` pass or refresh() is called; True if woken."""
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({sleep, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleep.cancel()
            wake.cancel()
            await asyncio.gather(sleep, wake, return_exceptions=True)
        return wake in done
