"""Latency from the health probe's own response time: quantiles of the recent probes.

``latency = { source = "health" }`` needs no metrics: the health source keeps each probe's
response time (from sending the request to the end of what the check reads of the answer, on
the injected clock) for ``window``, and each quantile a rule asks for is taken over the
probes that got an answer in it, by linear interpolation between order statistics (numpy's
default, "type 7": for ``n`` sorted times and quantile ``q``, the point ``(n - 1) * q`` of the
way from the first to the last). Any HTTP answer counts, whatever its status: it took that
long. A probe that got none (a timeout, a refused or reset connection) has no response time;
it is left out, and counted in the detail. Fewer than ``min_probes`` answers: UNKNOWN.

Two kinds of answer describe something else than the release, and are left out too:

- With a release check, an answer the check gives to another deployment than the active one
  (the replaced one in a deploy's overlap): :meth:`ProbeTimes.disown_newest`, counted in
  ``detail["other_deployment"]``. The window still spans a deploy, as every latency source's
  does: the answers the active deployment of the moment gave stay in it.
- A serverless service's cold start: once it is over, every probe from before its end (the
  slow ones of the wake among them) is forgotten and the window starts again
  (:meth:`ProbeTimes.restart`). Until ``min_probes`` probes have been made since, the
  quantiles are *idle*, not UNKNOWN: a routine wake leaves the rules resting, never blind.
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

    __slots__ = ("_asof", "_config", "_probes", "_restarted", "signals")

    def __init__(self, config: HealthLatency, signals: Sequence[Signal]) -> None:
        self._config = config
        self.signals = tuple(signals)
        # (when the probe started, its response time or None: no answer, whether it counts:
        # False for another deployment's answer), oldest first, on the clock's monotonic scale.
        self._probes: deque[tuple[float, float | None, bool]] = deque()
        self._restarted = ""  # what the window started again after, until min_probes probes
        self._asof = (0.0, 0.0)  # the (at, now) of the last samples

    def record(self, started: float, seconds: float | None) -> None:
        """One probe, started at ``started``, answered in ``seconds`` (None: no answer)."""
        self._probes.append((started, seconds, True))

    def disown_newest(self) -> list[Sample]:
        """The newest probe was answered by another deployment than the active one (the
        release check says so): its time is left out. The last :meth:`samples`, taken again."""
        if self._probes:
            started, seconds, _ = self._probes.pop()
            self._probes.append((started, seconds, False))
        return self.samples(*self._asof)

    def restart(self, ended: str) -> None:
        """Forget every probe so far: the window starts again at the end of ``ended``."""
        self._probes.clear()
        self._restarted = ended

    def samples(self, at: float, now: float) -> list[Sample]:
        """One sample per quantile of the probes within the window before ``now``."""
        self._asof = (at, now)
        config = self._config
        probes = self._probes
        while probes and probes[0][0] < now - config.window:
            probes.popleft()
        times = sorted(s for _, s, own in probes if s is not None and own)
        others = sum(1 for _, s, own in probes if s is not None and not own)
        unanswered = len(probes) - len(times) - others
        detail: dict[str, Any] = {
            "requests": len(times),
            "unanswered": unanswered,
            "span_s": round(now - probes[0][0], 3) if probes else 0.0,
        }
        if others:
            detail["other_deployment"] = others
        if self._restarted and len(probes) < config.min_probes:
            reason = (
                f"the window started again at the end of {self._restarted}: "
                f"{len(probes)} of min_probes {config.min_probes} probes since"
            )
            return [
                Sample(s, at, None, reason=reason, detail=detail, idle=True) for s in self.signals
            ]
        self._restarted = ""
        if len(times) < config.min_probes:
            reason = (
                f"too few answered probes: {len(times)} in the last "
                f"{format_duration(config.window)} < min_probes {config.min_probes}"
            )
            left_out = [f"{unanswered} got no answer"] if unanswered else []
            if others:
                left_out.append(f"{others} from another deployment than the active one")
            if left_out:
                reason += f" ({', '.join(left_out)})"
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
