"""Latency from the health probe's own response time: quantiles of the recent probes.

``latency = { source = "health" }`` needs no metrics: the health source keeps each probe's
response time (from sending the request to the end of what the check reads of the answer, on
the injected clock) for ``window``, and each quantile a rule asks for is taken over the
probes that got an answer in it, by linear interpolation between order statistics (numpy's
default, "type 7": for ``n`` sorted times and quantile ``q``, the point ``(n - 1) * q`` of the
way from the first to the last). Any HTTP answer counts, whatever its status: it took that
long. A probe that got none (a timeout, a refused or reset connection) has no response time;
it is left out, and counted in the detail. Fewer than ``min_probes`` answers: UNKNOWN.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field

from monitor.configtypes import DAY, Duration, Strict, within
from monitor.model import Sample, Signal, format_duration
from monitor.sources.exposition_checks import value_problem


class HealthLatency(Strict):
    """``latency = { source = "health", window = "5m", min_probes = 5 }``."""

    source: Literal["health"]
    window: Annotated[Duration, within(1.0, DAY)] = 300.0
    """How far back the probes' response times count."""
    min_probes: int = Field(default=5, ge=1, le=100_000)
    """Fewer answered probes than this in the window make the quantiles UNKNOWN."""

    def too_short(self, interval: float) -> str:
        """Why the window can never hold ``min_probes`` probes made every ``interval``, or ""."""
        held = math.floor(self.window / interval)
        if held >= self.min_probes:
            return ""
        return (
            f"window {format_duration(self.window)} holds about {held} probes at the service's "
            f"interval {format_duration(interval)}, fewer than min_probes {self.min_probes}: "
            "the quantiles would never be known"
        )


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted ``ordered`` (not empty), interpolated as numpy's default."""
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (rank - low) * (ordered[high] - ordered[low])


class ProbeTimes:
    """The recent probes' response times, and the quantiles of them the rules want."""

    __slots__ = ("_config", "_probes", "signals")

    def __init__(self, config: HealthLatency, signals: Sequence[Signal]) -> None:
        self._config = config
        self.signals = tuple(signals)
        # (when the probe started, its response time or None: no answer), oldest first,
        # both on the clock's monotonic scale.
        self._probes: deque[tuple[float, float | None]] = deque()

    def record(self, started: float, seconds: float | None) -> None:
        """One probe, started at ``started``, answered in ``seconds`` (None: no answer)."""
        self._probes.append((started, seconds))

    def samples(self, at: float, now: float) -> list[Sample]:
        """One sample per quantile of the probes within the window before ``now``."""
        config = self._config
        probes = self._probes
        while probes and probes[0][0] < now - config.window:
            probes.popleft()
        times = sorted(s for _, s in probes if s is not None)
        unanswered = len(probes) - len(times)
        detail: dict[str, Any] = {
            "requests": len(times),
            "unanswered": unanswered,
            "span_s": round(now - probes[0][0], 3) if probes else 0.0,
        }
        if len(times) < config.min_probes:
            reason = (
                f"too few answered probes: {len(times)} in the last "
                f"{format_duration(config.window)} < min_probes {config.min_probes}"
            )
            if unanswered:
                reason += f" ({unanswered} got no answer)"
            return [Sample(s, at, None, reason=reason, detail=detail) for s in self.signals]
        out = []
        for signal in self.signals:
            assert signal.quantile is not None, f"{signal} is not a quantile"
            value = quantile(times, signal.quantile)
            problem = value_problem(signal, value)
            if problem:
                out.append(Sample(signal, at, None, reason=problem, detail=detail))
            else:
                out.append(Sample(signal, at, value, detail=detail))
        return out
