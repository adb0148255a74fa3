"""The protocol every signal source implements."""

from __future__ import annotations

from typing import Protocol

from monitor.model import Sample, Signal


class Source(Protocol):
    """Takes samples of one or more signals for one service.

    A source never raises for an unhealthy target: a timeout, a refused connection or a bad
    status is a fact about the target, so it becomes a sample (failing, or UNKNOWN with a
    reason). :class:`monitor.errors.ProbeError` is for the rare failure that says nothing
    about the target, such as a closed HTTP session.
    """

    signals: frozenset[Signal]

    async def collect(self, at: float) -> list[Sample]:
        """Samples of this source's signals, each stamped ``at`` (wall-clock seconds)."""
        ...
