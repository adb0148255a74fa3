"""Railway's API budget: a token bucket per hour, a limiter per second, and a reserve.

Railway limits requests per hour (Free 100, Hobby 1000, Pro 10000) and per second (Hobby 10,
Pro 50). Routine polling never spends the last ``reserve`` share of the hourly bucket: it slows
down before the limit and says so, so a rollback, its precondition check and its verification
(CRITICAL) always find a token. Railway's own count (``X-RateLimit-Remaining``) corrects ours
downwards only, and a 429's ``Retry-After`` or an exhausted window stops everything until then.
"""

from __future__ import annotations

import enum

import structlog

from monitor.clock import Clock
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.railway")

# Refill is continuous float arithmetic: a wait computed to the exact moment a token appears
# can land a hair short of it, which would cost another (tiny) sleep.
EPSILON = 1e-9


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
        self._hour_rate = per_hour / 3600.0
        # A limiter whose capacity is below one token would never let a request through.
        self._second_capacity = max(1.0, per_second)
        self._level = float(per_hour)
        self._second_level = self._second_capacity
        self._updated = clock.monotonic()
        self._paused_until = self._updated
        self._slowed = False
        if metrics is not None:
            metrics.railway_budget_reserve.set(self.reserve)
            metrics.railway_budget_remaining.set(self._level)

    @property
    def level(self) -> float:
        """Tokens left in the hourly bucket now."""
        self._refill()
        return self._level

    @property
    def routine_available(self) -> float:
        """Tokens routine polling may still spend now (the level above the reserve)."""
        return max(0.0, self.level - self.reserve)

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
        self._level -= 1.0
        self._second_level -= 1.0
        self._publish()
        return self.clock.monotonic() - start

    def observe(self, remaining: int | None, reset_at: float | None) -> None:
        """Take Railway's ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` (Unix seconds).

        Our level only ever goes down to Railway's count: a higher number than we believe may
        be a stale answer overtaken by requests still in flight. With nothing remaining,
        nothing at all is sent before the reset.
        """
        if remaining is None:
            return
        self._refill()
        self._level = min(self._level, float(max(0, remaining)))
        if remaining <= 0 and reset_at is not None:
            self.pause_until(reset_at)
        self._publish()

    def pause_until(self, t: float) -> None:
        """Send nothing (routine or critical) before Unix time ``t`` (a 429's Retry-After)."""
        deadline = self.clock.monotonic() + (t - self.clock.time())
        self._paused_until = max(self._paused_until, deadline)

    def _hourly_wait(self, priority: Priority) -> float:
        """Seconds until the hourly bucket lets ``priority`` take a token."""
        floor = self.reserve if priority is Priority.ROUTINE else 0.0
        missing = floor + 1.0 - self._level
        return missing / self._hour_rate if missing > EPSILON else 0.0

    def _second_wait(self) -> float:
        missing = 1.0 - self._second_level
        return missing / self.per_second if missing > EPSILON else 0.0

    def _refill(self) -> None:
        now = self.clock.monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._level = min(float(self.per_hour), self._level + elapsed * self._hour_rate)
        self._second_level = min(
            self._second_capacity, self._second_level + elapsed * self.per_second
        )
        self._publish()

    def _publish(self) -> None:
        if self.metrics is not None:
            self.metrics.railway_budget_remaining.set(self._level)

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
                level=round(self._level, 2),
                reserve=self.reserve,
                per_hour=self.per_hour,
            )
        else:
            log.info("railway polling back on schedule", level=round(self._level, 2))
