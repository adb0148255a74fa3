"""The "railway" source: error rate, latency and memory from Railway's own metrics, no
instrumentation, and the deployment signal from Railway's deployment and instance statuses.

The numbers come from the batched :class:`~monitor.railway.poller.RailwayPoller`, which asks
Railway once per poll for every service; this source hands each service the samples of the
latest poll, once each, and says UNKNOWN when the poller has nothing fresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import Field

from monitor.configtypes import Duration, Strict
from monitor.model import Sample, Signal, format_duration


class RailwayErrorRate(Strict):
    """``error_rate = { source = "railway" }``: 5xx / all from ``httpMetricsGroupedByStatus``."""

    source: Literal["railway"]
    min_requests: int = Field(10, ge=1)
    step: Duration = Field(60.0, ge=1)


class RailwayLatency(Strict):
    """``latency = { source = "railway" }``: request-duration quantiles of Railway's edge proxy
    from ``httpDurationMetrics`` (milliseconds there, seconds here), the step's request count
    from ``httpMetricsGroupedByStatus``."""

    source: Literal["railway"]
    step: Duration = Field(60.0, ge=1)
    min_requests: int = Field(10, ge=1)


class RailwayMemory(Strict):
    """``memory = { source = "railway" }``: MEMORY_USAGE_GB / MEMORY_LIMIT_GB of the active
    deployment, from ``metrics`` grouped by deployment."""

    source: Literal["railway"]
    sample_rate: Duration = Field(30.0, ge=1)


class Snapshot(Protocol):
    """What the poller knows of one service after one poll."""

    @property
    def at(self) -> float:
        """When the poll's answer arrived."""
        ...

    @property
    def samples(self) -> Mapping[Signal, Sample]:
        """The poll's samples for this service."""
        ...


class Latest(Protocol):
    """Where a RailwaySource reads the poller's results."""

    def latest(self, name: str) -> Snapshot | None:
        """The newest snapshot of service ``name``, if any."""
        ...

    @property
    def last_error(self) -> str | None:
        """Why the last poll failed, if it did."""
        ...


class RailwaySource:
    """One service's view of the batched Railway poll."""

    def __init__(
        self, poller: Latest, name: str, signals: frozenset[Signal], *, max_age: float
    ) -> None:
        self.poller = poller
        self.name = name
        self.signals = signals
        self.max_age = max_age
        self._delivered: float | None = None

    async def collect(self, at: float) -> list[Sample]:
        """New samples since the last call; UNKNOWN once the newest poll is too old."""
        snapshot = self.poller.latest(self.name)
        if (
            snapshot is not None
            and snapshot.at != self._delivered
            and at - snapshot.at <= self.max_age
        ):
            self._delivered = snapshot.at
            return [s for signal, s in snapshot.samples.items() if signal in self.signals]
        if snapshot is not None and at - snapshot.at <= self.max_age:
            return []  # nothing new yet: the poll runs on its own cadence
        age = (
            "no poll has answered yet"
            if snapshot is None
            else (f"the last answer is {format_duration(at - snapshot.at)} old")
        )
        error = self.poller.last_error
        reason = f"no fresh Railway data: {age}" + (f" ({error})" if error else "")
        detail: dict[str, Any] = {"source": "railway"}
        return [Sample(signal, at, None, reason, detail) for signal in sorted(self.signals)]
