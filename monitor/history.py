"""A short memory of each signal, for the charts on /status.

The engine keeps only an episode's samples; a person looking at a rule also wants what came
before the episode. Each (service, signal) keeps a fixed ring of (time, value) pairs in two
``array('d')`` buffers: 16 bytes a sample, so 1,000 services with the default rules hold
about 2 MB. Unknown samples are kept as NaN (a gap in the chart, not a zero).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

from monitor.model import Rule, Sample, Signal

MIN_SAMPLES = 60
MAX_SAMPLES = 720
CHART_POINTS = 120  # what a 220-pixel chart can show; /status sends no more


def capacity(rules: Iterable[Rule], signal: Signal, interval: float) -> int:
    """How many samples show twice the longest window of the signal's rules."""
    windows = [rule.for_ for rule in rules if rule.signal is signal]
    span = 2 * max(windows, default=0.0)
    wanted = math.ceil(span / interval) + 1 if interval > 0 else MIN_SAMPLES
    return max(MIN_SAMPLES, min(MAX_SAMPLES, wanted))


class SignalHistory:
    """The last ``size`` samples of one signal, oldest first."""

    __slots__ = ("_at", "_count", "_next", "_value", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a history holds at least one sample, not {size}")
        self.size = size
        self._at = array("d", bytes(8 * size))
        self._value = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, sample: Sample) -> None:
        """Keep ``sample``, forgetting the oldest when full."""
        self._at[self._next] = sample.at
        self._value[self._next] = math.nan if sample.value is None else sample.value
        self._next = (self._next + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def points(self, since: float | None = None) -> list[tuple[float, float | None]]:
        """``(time, value or None)`` oldest first, optionally only from ``since`` on."""
        start = (self._next - self._count) % self.size
        result: list[tuple[float, float | None]] = []
        for i in range(self._count):
            j = (start + i) % self.size
            at, value = self._at[j], self._value[j]
            if since is None or at >= since:
                result.append((at, None if math.isnan(value) else value))
        return result

    def chart(self, points: int = CHART_POINTS) -> list[list[float | None]]:
        """At most ``points`` samples, evenly picked, the newest always kept (for /status)."""
        kept = self.points()
        step = max(1, -(-len(kept) // points))
        picked = kept[::-1][::step][::-1]
        return [[at, value] for at, value in picked]
