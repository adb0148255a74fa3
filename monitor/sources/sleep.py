"""Serverless services: not woken by railguard while asleep, and their cold start forgiven.

Railway puts a serverless service to sleep (its active deployment turns SLEEPING) once it has
sent nothing for 10 minutes; the next request wakes it, and that request, or any during the
cold start, may get a 502. A probe or a scrape is such a request: it would wake the service
(and keep it from ever sleeping), and its failure says nothing about the release. So, from
the last Railway poll's view of the service's active deployment, :class:`SleepAware` wraps a
source that sends requests to the app (health, exposition):

- SLEEPING: the wrapped source is not asked; each of its signals is *idle* (UNKNOWN with
  nothing to measure by design: its rules rest INACTIVE and never go blind), "service is
  sleeping". A poll older than ``max_age`` is not trusted to say so (the probe goes out).
- Woken (seen SLEEPING, now SUCCESS, the same deployment): a failing health sample or a failed
  scrape is idle ("service is waking up") until the first healthy probe, or ``cold_start``
  after the poll that showed it awake, whichever comes first. After that a failing release
  is judged as ever.
- Latency from the health probe's response times (``latency = { source = "health" }``): the
  answers of a wake (held while the app starts, or the edge's 502s) say nothing about the
  release. Its quantiles are idle through the cold start, and once the cold start is over the
  probe times from before its end are forgotten, those from before the sleep too: the window
  starts again, idle until it holds ``min_probes`` probes (:meth:`.ProbeTimes.restart`).

UNKNOWN never causes a rollback. A new deployment replacing a sleeping one is a rollout, not a
wake: it gets no allowance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from monitor.model import Sample, Signal, format_duration
from monitor.railway.statuses import SLEEPING, SUCCESS
from monitor.sources.base import Source

if TYPE_CHECKING:
    from monitor.sources.probe_latency import ProbeTimes


class Active(Protocol):
    """The service's active deployment, as the poller read it."""

    @property
    def id(self) -> str:
        """Railway's deployment id."""
        ...

    @property
    def status(self) -> str:
        """Its DeploymentStatus."""
        ...


class Snapshot(Protocol):
    """One poll's view of one service."""

    @property
    def at(self) -> float:
        """When the poll's answer arrived."""
        ...

    @property
    def active(self) -> Active | None:
        """The newest deployment that went live, if any."""
        ...


class Deployments(Protocol):
    """Where the wrapper reads the poller's latest view of a service."""

    def latest(self, name: str) -> Snapshot | None:
        """The newest snapshot of service ``name``, if any."""
        ...


class SleepAware:
    """A source that asks nothing of a sleeping service and forgives its cold start."""

    def __init__(
        self,
        inner: Source,
        deployments: Deployments,
        name: str,
        *,
        cold_start: float,
        max_age: float,
        times: ProbeTimes | None = None,
    ) -> None:
        self.inner = inner
        self.deployments = deployments
        self.name = name
        self.cold_start = cold_start
        self.max_age = max_age
        self.times = times  # the inner source's probe response times, if it keeps them
        self.signals = inner.signals
        self._slept: str | None = None  # the deployment last seen SLEEPING
        self._serving: str | None = None  # the active deployment last seen
        self._woke_at: float | None = None  # when a poll first showed it awake again

    async def collect(self, at: float) -> list[Sample]:
        """The wrapped source's samples, unless the service sleeps or is waking up."""
        snapshot = self.deployments.latest(self.name)
        fresh = snapshot is not None and at - snapshot.at <= self.max_age
        active = snapshot.active if snapshot is not None and fresh else None
        if snapshot is not None and active is not None:  # a fresh view of the deployment
            if self._serving is not None and active.id != self._serving and self.times:
                # A deploy (or a rollback): the window's probes were the replaced one's; the
                # new one's latency starts with this probe (before: a whole window late).
                self.times.restart(f"the switch to deployment {active.id}")
            self._serving = active.id
            if active.status == SLEEPING:
                self._slept, self._woke_at = active.id, None
                return self._asleep(active, at)
            if active.id != self._slept or active.status != SUCCESS:
                self._slept = self._woke_at = None  # replaced (or crashed), not woken
            elif self._woke_at is None:
                self._woke_at = snapshot.at
        if self._woke_at is not None and at - self._woke_at >= self.cold_start:
            self._awake()  # before this probe: its time is the first to count
        samples = await self.inner.collect(at)
        woke_at = self._woke_at
        if woke_at is None:
            return samples
        waking = [self._waking(sample, woke_at) for sample in samples]
        if self._woke_at is None:  # a healthy probe ended the cold start: it was one of it
            self._awake()
        return waking

    def _awake(self) -> None:
        """The cold start is over: the probe times from before its end no longer count."""
        self._slept = self._woke_at = None
        if self.times is not None:
            self.times.restart("the service's cold start (woken from SLEEPING)")

    def _asleep(self, active: Active, at: float) -> list[Sample]:
        reason = (
            f"service is sleeping: Railway has deployment {active.id} SLEEPING (serverless); "
            "not probed, a request would wake it"
        )
        detail: dict[str, Any] = {"deployment": active.id, "status": SLEEPING}
        return [
            Sample(signal, at, None, reason, detail, idle=True) for signal in sorted(self.signals)
        ]

    def _waking(self, sample: Sample, woke_at: float) -> Sample:
        """In the cold start, a failing probe, a failed scrape and the probe's latency are
        idle; a healthy probe ends the cold start. Known values (a scrape that answered) pass
        as they are."""
        probe_times = self.times is not None and sample.signal in self.times.signals
        if sample.signal is Signal.HEALTH and sample.value is not None and sample.value >= 1:
            self._slept = self._woke_at = None  # awake and answering: the cold start is over
            return sample
        if sample.value is not None and sample.signal is not Signal.HEALTH and not probe_times:
            return sample
        awake = format_duration(max(0.0, sample.at - woke_at))
        why = "the probes' response times of a wake are not counted" if probe_times else ""
        reason = (
            f"service is waking up (seen awake {awake} ago after SLEEPING, cold_start "
            f"{format_duration(self.cold_start)}): {why or sample.reason}"
        )
        detail = {**sample.detail, "cold_start": True}
        return replace(sample, value=None, reason=reason, detail=detail, idle=True)
