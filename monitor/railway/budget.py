"""Railway's API budget: a sliding hour, a limiter per second, and a reserve.

Railway limits requests per hour (Free 100, Hobby 1000, Pro 10000) and per second (Hobby 10,
Pro 50). The hourly limit is kept as a sliding window of send times: in no hour does railguard
send more than the limit (a token bucket that starts full would allow nearly twice the limit
in its first hour). Routine polling never spends the last ``reserve`` share of the hour: it
slows down before the limit and says so, so a rollback, its precondition check and its
verification (CRITICAL) always find room. Railway's own count (``X-RateLimit-Remaining``)
corrects ours downwards only, and a 429's ``Retry-After`` or an exhausted window stops
everything until then.
"""

from __future__ import annotations

import enum
import math
from collections import deque

import structlog

from monitor.clock import Clock
from monitor.railway.ratelimit import MAX_WAIT
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.railway")

# Refill is continuous float arithmetic: a wait computed to the exact moment a token appears
# can land a hair short of it, which would cost another (tiny) sleep.
EPSILON = 1e-9
HOUR = 3600.0


class Priority(enum.StrEnum):
    """Who is asking: routine polling, or a rollback and what guards and verifies it."""

    ROUTINE = "routine"
    CRITICAL = "critical"


class RequestBudget:
    """Tokens for requests to Railway's API; :meth:`acquire` waits on the Clock for one."""

    def __init__(
        self,
        clock: Clock,
        *,
        per_hour: int,
        per_second: float,
        reserve: float = 0.2,
        metrics: Metrics | None = None,
    ) -> None:
        if per_hour <= 0 or per_second <= 0:
            raise ValueError(f"per_hour and per_second must be positive: {per_hour}, {per_second}")
        if not 0 <= reserve < 1:
            raise ValueError(f"reserve must be a fraction in [0, 1): {reserve}")
        self.clock = clock
        self.per_hour = per_hour
        self.per_second = per_second
        self.reserve = per_hour * reserve
        self.metrics = metrics
        # Routine requests may fill the hour up to this many; critical ones up to per_hour.
        self._routine_limit = math.floor(per_hour - self.reserve + EPSILON)
        # A limiter whose capacity is below one token would never let a request through.
        self._second_capacity = max(1.0, per_second)
        self._sent: deque[float] = deque()  # monotonic send times within the last hour
        self._second_level = self._second_capacity
        self._updated = clock.monotonic()
        self._paused_until = self._updated
        self._slowed = False
        # Railway's own count: this many more requests before this (monotonic) time.
        self._railway_left: int | None = None
        self._railway_reset: float | None = None
        if metrics is not None:
            metrics.railway_budget_reserve.set(self.reserve)
            metrics.railway_budget_remaining.set(per_hour)

    @property
    def level(self) -> float:
        """Requests that may still be sent now: our hour's room, or Railway's if lower."""
        self._refill()
        return float(self._remaining())

    @property
    def routine_available(self) -> float:
        """Requests routine polling may still send now (the room above the reserve)."""
        return max(0.0, self.level - self.reserve)

    def _remaining(self) -> int:
        ours = self.per_hour - len(self._sent)
        return ours if self._railway_left is None else min(ours, self._railway_left)

    @property
    def slowed(self) -> bool:
        """Whether routine polling is being held back to protect the reserve."""
        return self._slowed

    async def acquire(self, priority: Priority) -> float:
        """Wait until ``priority`` may send a request and take its token; the seconds waited."""
        start = self.clock.monotonic()
        waited = False
        while True:
            self._refill()
            now = self.clock.monotonic()
            paused = self._paused_until - now
            hourly = self._hourly_wait(priority)
            wait = max(paused, hourly, self._second_wait())
            if wait <= EPSILON:
                break
            if not waited:
                waited = True
                if self.metrics is not None:
                    self.metrics.railway_budget_waits.labels(priority.value).inc()
            if priority is Priority.ROUTINE and max(paused, hourly) > EPSILON:
                self._set_slowed(True, "paused by Railway" if paused >= hourly else "reserve")
            await self.clock.sleep(wait)
        if priority is Priority.ROUTINE and not waited:
            self._set_slowed(False)
        self._sent.append(self.clock.monotonic())
        if self._railway_left is not None:
            self._railway_left -= 1
        self._second_level -= 1.0
        self._publish()
        return self.clock.monotonic() - start

    def observe(self, remaining: int | None, reset_in: float | None) -> None:
        """Take Railway's ``X-RateLimit-Remaining`` and the seconds until its window resets.

        Our level only ever goes down to Railway's count: a higher number than we believe may
        be a stale answer overtaken by requests still in flight. With nothing remaining,
        nothing at all is sent before the reset. However the headers read, Railway's count
        stands for at most :data:`~monitor.railway.ratelimit.MAX_WAIT`.
        """
        if remaining is None:
            return
        now = self.clock.monotonic()
        # Without a reset time the count is kept for as long as we ever wait: the cautious
        # reading.
        reset = now + (MAX_WAIT if reset_in is None else _bounded(reset_in))
        remaining = max(0, remaining)
        if (
            self._railway_reset is None
            or now >= self._railway_reset
            or reset > self._railway_reset + 1
        ):
            self._railway_left = remaining  # a new window of Railway's
        else:
            self._railway_left = min(self._railway_left or 0, remaining)
        self._railway_reset = reset
        if remaining <= 0 and reset_in is not None:
            self.pause(reset_in)
        self._publish()

    def pause(self, seconds: float) -> None:
        """Send nothing (routine or critical) for ``seconds`` (a 429's Retry-After), at most
        :data:`~monitor.railway.ratelimit.MAX_WAIT`."""
        deadline = self.clock.monotonic() + _bounded(seconds)
        self._paused_until = max(self._paused_until, deadline)

    def _hourly_wait(self, priority: Priority) -> float:
        """Seconds until both our sliding hour and Railway's count have room for a request."""
        now = self.clock.monotonic()
        routine = priority is Priority.ROUTINE
        limit = self._routine_limit if routine else self.per_hour
        excess = len(self._sent) - limit + 1  # how many sends must leave the window first
        ours = self._sent[excess - 1] + HOUR - now if excess > 0 else 0.0
        railways = 0.0
        if self._railway_left is not None and self._railway_reset is not None:
            floor = self.reserve if routine else 0.0
            if self._railway_left - 1 < floor - EPSILON:
                railways = self._railway_reset - now
        return max(ours, railways)

    def _second_wait(self) -> float:
        missing = 1.0 - self._second_level
        return missing / self.per_second if missing > EPSILON else 0.0

    def _refill(self) -> None:
        now = self.clock.monotonic()
        while self._sent and self._sent[0] + HOUR <= now:
            self._sent.popleft()
        if self._railway_reset is not None and now >= self._railway_reset:
            self._railway_left = self._railway_reset = None  # Railway's window is over
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._second_level = min(
            self._second_capacity, self._second_level + elapsed * self.per_second
        )
        self._publish()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.railway_budget_remaining.set(self._remaining())

    def _set_slowed(self, slowed: bool, reason: str = "") -> None:
        if slowed == self._slowed:
            return
        self._slowed = slowed
        if self.metrics is not None:
            self.metrics.railway_polling_slowed.set(int(slowed))
        if slowed:
            log.warning(
                "railway polling slowed to protect the rollback reserve",
                reason=reason,
                level=self._remaining(),
                reserve=self.reserve,
                per_hour=self.per_hour,
            )
        else:
            log.info("railway polling back on schedule", level=self._remaining())


def _bounded(seconds: float) -> float:
    """A wait Railway asked for, within ``[0, MAX_WAIT]`` (NaN: none)."""
    return min(MAX_WAIT, seconds) if seconds > 0 else 0.0
