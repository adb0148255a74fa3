"""Test helpers shared by several test modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], what: str = "condition", limit: float = 5.0) -> None:
    """Yield to the loop until ``condition()`` holds: waits for I/O to finish, not for time.

    ``limit`` only bounds a test that is broken; passing tests return as soon as the I/O
    they wait for completes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)
