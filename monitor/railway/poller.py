"""One batched GraphQL request per poll for every service railguard watches on Railway.

Each service gets aliased fields in a single document: ``dN`` its recent deployments (for
release tracking), ``hN`` its HTTP requests by status (error rate), ``mN`` its memory usage
and limit by deployment. The document is built once; only the time window changes between
polls, so Railway's API budget pays one request per poll however many services there are.
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
from monitor.model import Sample, Signal
from monitor.railway.client import (
    DEPLOYMENT_FIELDS,
    Deployment,
    RailwayClient,
    newest_live,
    parse_deployments,
    shown,
)
from monitor.railway.deployment_signal import CrashWatch, deployment_sample
from monitor.sources.exposition_checks import value_problem
from monitor.sources.railway import RailwayErrorRate, RailwayMemory

log = structlog.get_logger("railguard.railway")
_YIELD_EVERY = 50  # services read between two yields to the event loop


@dataclass(frozen=True, slots=True)
class Target:
    """One service as the poller asks Railway about it."""

    name: str
    service_id: str
    environment_id: str
    error_rate: RailwayErrorRate | None = None
    memory: RailwayMemory | None = None
    deployment: bool = False  # a rule watches the active deployment's status (Signal.DEPLOYMENT)
    deployments: int = 10  # how much history each poll fetches


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


def build_document(targets: Sequence[Target]) -> str:
    """The tick's query: aliased fields per target, one ``$start``/``$end`` window."""
    # GraphQL refuses declared variables no field uses: the window only when metrics are asked.
    windowed = any(t.error_rate is not None or t.memory is not None for t in targets)
    params = ["$start: DateTime!", "$end: DateTime!"] if windowed else []
    fields = []
    for i, t in enumerate(targets):
        params += [f"$s{i}: String!", f"$e{i}: String!"]
        ids = f"serviceId: $s{i}, environmentId: $e{i}"
        fields.append(
            f"d{i}: deployments(input: {{{ids}}}, first: {t.deployments}) "
            f"{{ edges {{ node {{ {DEPLOYMENT_FIELDS} }} }} }}"
        )
        if t.error_rate is not None:
            fields.append(
                f"h{i}: httpMetricsGroupedByStatus({ids}, startDate: $start, endDate: $end, "
                f"stepSeconds: {int(t.error_rate.step)}) {{ statusCode samples {{ ts value }} }}"
            )
        if t.memory is not None:
            fields.append(
                f"m{i}: metrics({ids}, startDate: $start, endDate: $end, "
                f"measurements: [MEMORY_USAGE_GB, MEMORY_LIMIT_GB], groupBy: [DEPLOYMENT_ID], "
                f"sampleRateSeconds: {int(t.memory.sample_rate)}) "
                f"{{ measurement tags {{ deploymentId }} values {{ ts value }} }}"
            )
    body = "\n  ".join(fields)
    return f"query RailguardTick({', '.join(params)}) {{\n  {body}\n}}\n"


def _blamed(targets: Sequence[Target], error: RailwayGraphQLError) -> dict[str, str]:
    """The targets whose aliases an error names (``d3``, ``h3``, ``m3`` are target 3)."""
    blamed: dict[str, str] = {}
    for alias, message in error.paths.items():
        index = alias[1:]
        if alias[:1] in ("d", "h", "m") and index.isdigit() and int(index) < len(targets):
            blamed.setdefault(targets[int(index)].name, message)
    return blamed


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


# Requests in one step past this are garbage, not traffic (a billion a second for a minute).
MAX_REQUESTS_PER_STEP = 1e11
# Memory in GB past this (1 EiB) is garbage, not a measurement.
MAX_MEMORY_GB = 2.0**30


def _real(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (a bool, a string, 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range
        return None
    return number if math.isfinite(number) else None


def _points(
    group: Any, key: str, path: str, ceiling: float, what: str
) -> list[tuple[float, float]] | str:
    """The ``(ts, value)`` pairs of a group's ``key`` list, or why they are not usable."""
    items = group.get(key) if isinstance(group, dict) else None
    if not isinstance(items, list):
        return f"{path}: unexpected entry {shown(group)}"
    points = []
    for item in items:
        ts = _real(item.get("ts")) if isinstance(item, dict) else None
        value = _real(item.get("value")) if isinstance(item, dict) else None
        if ts is None or ts < 0:
            return f"{path}: a timestamp that is not a time: {shown(item)}"
        if value is None or not 0 <= value <= ceiling:
            return f"{path}: {what} that is not a measurement: {shown(item)}"
        points.append((ts, value))
    return points


def error_rate_sample(answer: Any, config: RailwayErrorRate, at: float, path: str) -> Sample:
    """5xx / all requests in the newest complete step of ``httpMetricsGroupedByStatus``.

    Any entry that is not a status code with finite, non-negative counts at real times makes
    the sample UNKNOWN with the entry in the reason: garbage never becomes a rate.
    """
    if not isinstance(answer, list):
        return Sample(Signal.ERROR_RATE, at, None, f"{path}: expected a list, got {shown(answer)}")
    totals: dict[float, float] = {}
    errors: dict[float, float] = {}
    for group in answer:
        status = group.get("statusCode") if isinstance(group, dict) else None
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 999:
            reason = f"{path}: unexpected entry {shown(group)}"
            return Sample(Signal.ERROR_RATE, at, None, reason)
        points = _points(group, "samples", path, MAX_REQUESTS_PER_STEP, "a request count")
        if isinstance(points, str):
            return Sample(Signal.ERROR_RATE, at, None, points)
        for ts, value in points:
            if ts + config.step <= at:  # the step still filling would understate the rate
                totals[ts] = totals.get(ts, 0.0) + value
                if 500 <= status <= 599:
                    errors[ts] = errors.get(ts, 0.0) + value
    if not totals:
        return Sample(Signal.ERROR_RATE, at, None, "no requests recorded in the last steps")
    step = max(totals)
    total, failed = totals[step], errors.get(step, 0.0)
    detail = {"requests": total, "errors": failed, "step_start": step, "step_s": config.step}
    if total < config.min_requests:
        reason = f"too little traffic: {total:g} requests < min_requests {config.min_requests}"
        return Sample(Signal.ERROR_RATE, at, None, reason, detail)
    rate = failed / total
    problem = value_problem(Signal.ERROR_RATE, rate)
    if problem:
        return Sample(Signal.ERROR_RATE, at, None, problem, detail)
    return Sample(Signal.ERROR_RATE, at, rate, "", detail)


def memory_sample(answer: Any, active: Deployment | None, at: float, path: str) -> Sample:
    """The active deployment's latest MEMORY_USAGE_GB / MEMORY_LIMIT_GB."""
    if active is None:
        return Sample(Signal.MEMORY, at, None, "no active deployment")
    if not isinstance(answer, list):
        return Sample(Signal.MEMORY, at, None, f"{path}: expected a list, got {shown(answer)}")
    latest: dict[str, tuple[float, float]] = {}
    for group in answer:
        tags = group.get("tags") if isinstance(group, dict) else None
        measurement = group.get("measurement") if isinstance(group, dict) else None
        if not isinstance(tags, dict) or not isinstance(measurement, str):
            return Sample(Signal.MEMORY, at, None, f"{path}: unexpected entry {shown(group)}")
        if tags.get("deploymentId") != active.id:
            continue
        values = _points(group, "values", path, MAX_MEMORY_GB, "a memory size")
        if isinstance(values, str):
            return Sample(Signal.MEMORY, at, None, values)
        if values:
            latest[measurement] = max(values)
    usage, limit = latest.get("MEMORY_USAGE_GB"), latest.get("MEMORY_LIMIT_GB")
    if usage is None or limit is None:
        missing = "usage" if usage is None else "limit"
        reason = f"no memory {missing} for deployment {active.id}"
        return Sample(Signal.MEMORY, at, None, reason)
    detail = {"deployment": active.id, "usage_gb": usage[1], "limit_gb": limit[1]}
    if not limit[1] > 0:
        reason = f"memory limit {limit[1]:g} GB for deployment {active.id}"
        return Sample(Signal.MEMORY, at, None, reason, detail)
    ratio = usage[1] / limit[1]
    problem = value_problem(Signal.MEMORY, ratio)
    if problem:
        return Sample(Signal.MEMORY, at, None, problem, detail)
    return Sample(Signal.MEMORY, at, ratio, "", detail)


class RailwayPoller:
    """Asks Railway about every target once per ``interval``; keeps the latest answers."""

    def __init__(
        self,
        client: RailwayClient,
        targets: Sequence[Target],
        *,
        clock: Clock,
        interval: float,
    ) -> None:
        self.client = client
        self.targets = tuple(targets)
        self.clock = clock
        self.interval = interval
        self.document = build_document(self.targets)
        # Told of every service's snapshot after each successful poll (release tracking).
        self.listener: Callable[[str, ServiceSnapshot], Awaitable[None]] | None = None
        self.polls = 0
        self.early_polls = 0
        self.last_error: str | None = None  # what went wrong in the last poll, if anything
        self.last_failure: str | None = None  # set when the whole last poll failed
        self.last_beat: float | None = None  # when run() last started a poll (monotonic)
        self._wake = asyncio.Event()
        self._last_early: float | None = None
        self._latest: dict[str, ServiceSnapshot] = {}
        self._answered_at: float | None = None
        # A crash loop is seen across polls: sightings of failing instances over 4 polls.
        window = max(120.0, 4 * interval)
        self._crashes = {t.name: CrashWatch(window) for t in self.targets}
        self._window = 3 * max(
            [t.error_rate.step for t in targets if t.error_rate]
            + [t.memory.sample_rate for t in targets if t.memory]
            + [60.0]
        )

    def latest(self, name: str) -> ServiceSnapshot | None:
        """The newest snapshot of service ``name``."""
        return self._latest.get(name)

    def age(self, now: float) -> float | None:
        """Seconds since the last poll that answered (None before the first)."""
        return None if self._answered_at is None else now - self._answered_at

    def variables(self, now: float, targets: Sequence[Target] | None = None) -> dict[str, Any]:
        """The variables of the document for ``targets`` (default all) at ``now``."""
        targets = self.targets if targets is None else targets
        values: dict[str, Any] = {}
        if any(t.error_rate is not None or t.memory is not None for t in targets):
            values |= {"start": _iso(now - self._window), "end": _iso(now)}
        for i, t in enumerate(targets):
            values[f"s{i}"] = t.service_id
            values[f"e{i}"] = t.environment_id
        return values

    async def poll(self) -> None:
        """One batched request; a failure leaves the previous snapshots to age.

        Railway's root fields are non-null, so one alias that errors (a deleted environment,
        a token that cannot see one service) nulls the whole answer: the services it names
        are asked about no more this poll, and the rest again, once, without them.
        """
        now = self.clock.time()
        failed: dict[str, str] = {}  # target name -> why Railway would not answer for it
        asked = self.targets
        document = self.document
        while True:
            try:
                data = await self.client.execute(document, self.variables(now, asked))
            except RailwayGraphQLError as e:
                blamed = _blamed(asked, e)
                if e.data is None and blamed and len(blamed) < len(asked) and not failed:
                    failed = blamed
                    asked = tuple(t for t in asked if t.name not in blamed)
                    document = build_document(asked)
                    continue
                if e.data is None:
                    self._failed(e)
                    return
                data = e.data  # partial data: the services that answered are still news
                failed |= blamed
            except RailwayError as e:
                self._failed(e)
                return
            break
        self.last_error = "; ".join(sorted(set(failed.values()))) if failed else None
        self.last_failure = None
        at = self.clock.time()
        for i, target in enumerate(asked):
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
        if self.listener is not None:
            for target in self.targets:
                await self.listener(target.name, self._latest[target.name])

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
        if target.memory is not None:
            samples[Signal.MEMORY] = memory_sample(data.get(f"m{i}"), snapshot.active, at, f"m{i}")
        if target.deployment:
            sightings = self._crashes[target.name].observe(snapshot.active, at)
            samples[Signal.DEPLOYMENT] = deployment_sample(snapshot.active, at, problem, sightings)
        if problem is not None:
            samples = {
                s: Sample(s, at, None, problem)
                if s is not Signal.ERROR_RATE or refused is not None
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
