"""Background tasks that are reaped: their errors are logged, never lost with the task."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("railguard.tasks")


class Background:
    """A set of running tasks for one purpose (``what`` names it in logs)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Awaitable[T]) -> asyncio.Task[T]:
        """Run ``work`` in the background."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(f"{self.what} failed", error=repr(task.exception()))

    async def cancel(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
