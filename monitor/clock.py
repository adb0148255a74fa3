"""Time, injected: every piece of railguard that waits or compares times takes a Clock.

``time()`` is wall-clock Unix seconds (what samples, rule state and the store record);
``monotonic()`` drives the scheduler's cadence; ``sleep()`` waits. Tests use FakeClock and
run minutes of rule time in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What railguard needs from time."""

    def time(self) -> float:
        """Wall-clock time in Unix seconds."""
        ...

    def monotonic(self) -> float:
        """A clock that never goes backwards, in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait for ``seconds`` (zero or less yields to the loop once)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        # asyncio's loop.time(), readable off the loop too (the store reads a fence's epoch
        # on the loop's thread; a thread that asks the clock gets the same answer).
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when a test calls :meth:`advance`.

    Sleepers wake in deadline order; between wake-ups the loop gets to run, so a task that
    sleeps again inside the advanced span is woken again within the same ``advance``.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall_offset = start
        self._now = 0.0
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._wall_offset + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many tasks are waiting on this clock."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline passes."""
        target = self._now + seconds
        await _settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
                await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let ready tasks run until they block again (on the clock or on I/O)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
