"""A deployment's instances as Railway shows them, and crash loops.

Railway's ``Deployment.instances`` lists one instance per replica with a
DeploymentInstanceStatus. Their status follows the deployment's (:data:`INSTANCE_STATUS`)
except during a crash loop: a live deployment whose process keeps exiting is restarted by its
restart policy (ON_FAILURE, up to a maximum of retries, 10 by default), its instances going
RESTARTING and back to RUNNING while the deployment stays SUCCESS. Once the retries are spent
the next exit is final: the deployment turns CRASHED, its instances CRASHED, and it keeps its
slot (Railway does not fall back to the deployment it replaced).

This module knows nothing of the model beyond the Deployment it changes; emulator_model owns
the CrashLoops and validates what is asked of it.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.clock import Clock

if TYPE_CHECKING:
    from monitor.sandbox.emulator_model import Deployment

# What a deployment's instances show while the deployment has a status. A status missing here
# has no instances: nothing runs yet (queued, building: builds are not instances) or any more.
INSTANCE_STATUS: Mapping[str, str] = {
    "DEPLOYING": "INITIALIZING",  # the new container is starting
    "SUCCESS": "RUNNING",
    "CRASHED": "CRASHED",
    # Serverless: a sleeping service's container is stopped until a request wakes it.
    "SLEEPING": "STOPPED",
    "REMOVING": "REMOVING",
}
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


@dataclass
class Instance:
    """One replica of a deployment."""

    id: str
    status: str


def instances_for(deployment_id: str, status: str, replicas: int) -> list[Instance]:
    """The instances a deployment in ``status`` shows: one per replica, or none."""
    shown = INSTANCE_STATUS.get(status)
    if shown is None:
        return []
    # Ids derive from the deployment's so every poll sees the same instances.
    return [
        Instance(str(uuid.uuid5(uuid.NAMESPACE_URL, f"{deployment_id}/instances/{i}")), shown)
        for i in range(replicas)
    ]


def reset_instances(deployment: Deployment) -> None:
    """Show the instances the deployment's status implies (undoing a crash loop's)."""
    deployment.instances = instances_for(deployment.id, deployment.status, deployment.replicas)


@dataclass(frozen=True)
class CrashLoop:
    """A process exiting every ``period`` s, restarted ``max_restarts`` times (None: for ever)."""

    deployment_id: str
    period: float
    max_restarts: int | None


class CrashLoops:
    """The crash loops running, one per deployment at most.

    ``spawn`` runs a loop as a task its owner cancels on close; ``crash`` gives a deployment
    whose retries are spent the status CRASHED (the owner's status change, so it is dated).
    """

    def __init__(self, clock: Clock, spawn: Spawn, crash: Callable[[Deployment], None]) -> None:
        self._clock = clock
        self._spawn = spawn
        self._crash = crash
        self._running: dict[str, tuple[CrashLoop, asyncio.Task[None]]] = {}

    @property
    def running(self) -> list[CrashLoop]:
        """The crash loops in progress."""
        return [loop for loop, _ in self._running.values()]

    def start(self, deployment: Deployment, loop: CrashLoop) -> None:
        """Start ``loop`` on a live deployment, replacing one it already has."""
        self.stop(deployment)
        task = self._spawn(self._run(deployment, loop))
        self._running[deployment.id] = (loop, task)
        task.add_done_callback(functools.partial(self._forget, deployment.id))

    def stop(self, deployment: Deployment) -> bool:
        """End the deployment's crash loop; False when it had none."""
        entry = self._running.pop(deployment.id, None)
        if entry is None:
            return False
        entry[1].cancel()
        reset_instances(deployment)
        return True

    async def _run(self, deployment: Deployment, loop: CrashLoop) -> None:
        restarts = 0
        await self._clock.sleep(loop.period)  # the process runs until its first exit
        while loop.max_restarts is None or restarts < loop.max_restarts:
            restarts += 1
            deployment.restarts += 1
            _show(deployment, "RESTARTING")
            await self._clock.sleep(loop.period / 2)
            _show(deployment, "RUNNING")
            await self._clock.sleep(loop.period / 2)
        # The retries are spent: this exit is final. Unregister first, so the status change
        # (which ends any crash loop of a deployment that is no longer SUCCESS) spares this task.
        self._running.pop(deployment.id, None)
        self._crash(deployment)

    def _forget(self, deployment_id: str, task: asyncio.Task[None]) -> None:
        # A loop cancelled from outside (the model closing) leaves no entry behind; a loop
        # replaced by a newer one must not remove the newer one's.
        entry = self._running.get(deployment_id)
        if entry is not None and entry[1] is task:
            del self._running[deployment_id]


def _show(deployment: Deployment, status: str) -> None:
    for instance in deployment.instances:
        instance.status = status
