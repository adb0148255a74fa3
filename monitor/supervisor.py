"""One supervisor for every long-running loop: a loop that fails is logged, counted and restarted.

The poller, the alert router, the digest and the outbox workers each run for the daemon's
life. An exception in one of them used to end it silently while /healthz said 200; now it is
logged with its traceback, counted in ``railguard_task_restarts_total{task}``, and the loop is
started again after a backoff on the Clock (1s doubling to 60s, back to 1s once a run lasted
a while). While a loop waits to restart, or has not made progress for longer than its
``stall_after``, :meth:`Supervisor.problems` names it and /healthz is red.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from monitor.clock import Clock
from monitor.model import format_duration
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.supervisor")

Loop = Callable[[], Awaitable[None]]
Alive = Callable[[], float | None]  # the monotonic time of the loop's last progress


@dataclass
class _Watched:
    """What the supervisor knows of one loop."""

    alive: Alive | None
    stall_after: float | None
    started: float
    down: str | None = None  # why it is waiting to restart, if it is
    restarts: int = 0


class Supervisor:
    """Runs loops under restart-with-backoff and says which are dead or stalled."""

    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        *,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._watched: dict[str, _Watched] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self,
        name: str,
        loop: Loop,
        *,
        alive: Alive | None = None,
        stall_after: float | None = None,
    ) -> asyncio.Task[None]:
        """Run ``loop`` as the task ``name`` until :meth:`stop`, restarting it when it fails."""
        task = asyncio.create_task(
            self.supervised(name, loop, alive=alive, stall_after=stall_after), name=name
        )
        self._tasks[name] = task
        return task

    async def supervised(
        self,
        name: str,
        loop: Loop,
        *,
        alive: Alive | None = None,
        stall_after: float | None = None,
        finished: Callable[[], bool] | None = None,
    ) -> None:
        """The restarting loop itself, for a caller that owns its task (the outbox).

        ``finished`` says the owner is stopping: a loop that returns then ended on purpose.
        """
        watched = self._watched[name] = _Watched(alive, stall_after, self.clock.monotonic())
        backoff = self.backoff_min
        while True:
            watched.started = self.clock.monotonic()
            watched.down = None
            try:
                await loop()
                if finished is not None and finished():
                    self._watched.pop(name, None)
                    return
                why = "it returned, and a loop should not"
                log.error("loop ended; restarting it", task=name, backoff=backoff)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the one place a loop's error is caught: count, restart
                why = f"{type(e).__name__}: {e}"
                log.exception("loop failed; restarting it", task=name, backoff=backoff)
            if self.clock.monotonic() - watched.started > 10 * self.backoff_max:
                backoff = self.backoff_min  # it ran well for a while: a fresh failure
            watched.restarts += 1
            watched.down = f"{why} (restarting in {format_duration(backoff)})"
            self.metrics.task_restarts.labels(name).inc()
            await self.clock.sleep(backoff)
            backoff = min(self.backoff_max, backoff * 2)

    def problems(self) -> dict[str, str]:
        """The loops that are down (waiting to restart) or stalled, with why."""
        now = self.clock.monotonic()
        out: dict[str, str] = {}
        for name, watched in self._watched.items():
            task = self._tasks.get(name)
            if task is not None and task.done():
                out[name] = "stopped"
            elif watched.down is not None:
                out[name] = f"down: {watched.down}"
            elif watched.alive is not None and watched.stall_after is not None:
                last = watched.alive()
                last = watched.started if last is None else max(last, watched.started)
                if now - last > watched.stall_after:
                    out[name] = f"stalled: no progress for {format_duration(now - last)}"
        return out

    def forget(self, name: str) -> None:
        """Stop watching a loop whose owner ended it on purpose (the outbox's stop)."""
        self._watched.pop(name, None)

    async def stop(self) -> None:
        """Cancel every loop started here and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._watched.clear()
