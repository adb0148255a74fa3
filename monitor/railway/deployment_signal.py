"""The ``deployment`` signal: Railway's own word on whether the active deployment runs.

Railway stops checking health once a deployment is live, but it still knows when the process
dies: the deployment turns CRASHED, or its instances go RESTARTING / CRASHED / EXITED while
Railway's restart policy brings them back. One poll gives one sample: 1.0 the active deployment
runs, 0.0 it is crashed or crash-looping. A sleeping (serverless) deployment, no active
deployment at all, or an answer that did not parse is UNKNOWN, never a breach.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from monitor.model import Sample, Signal
from monitor.railway.client import Deployment
from monitor.railway.statuses import CRASHED, SLEEPING, SUCCESS

RUNNING = 1.0
CRASHING = 0.0
LOOP_SIGHTINGS = 2  # instances seen failing this often within the window: a crash loop


class CrashWatch:
    """Remembers when each deployment's instances were seen failing, over a sliding window.

    A poll sees an instance only at one moment; a process that dies and is restarted within
    seconds is caught RESTARTING by few polls, and a single sighting may be one restart. Two
    sightings within ``window`` make a crash loop, and every sample in the window says so.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def observe(self, active: Deployment | None, at: float) -> int:
        """Record this poll's view of ``active``; how often it was seen failing lately."""
        if active is None:
            return 0
        seen = self._seen.setdefault(active.id, deque(maxlen=64))
        if active.failing_instances or active.status == CRASHED:
            seen.append(at)
        while seen and seen[0] < at - self.window:
            seen.popleft()
        for stale in [d for d in self._seen if d != active.id]:
            del self._seen[stale]  # only the active deployment matters
        return len(seen)


def deployment_sample(
    active: Deployment | None, at: float, problem: str | None = None, sightings: int = 0
) -> Sample:
    """The sample of one poll: the active deployment's status and its instances' statuses.

    ``active`` is the newest deployment that went live (a crashed one included); ``problem``
    says why the poll's deployments could not be read, which makes the sample UNKNOWN;
    ``sightings`` is how often its instances were seen failing lately (:class:`CrashWatch`).
    """
    if problem is not None:
        return Sample(Signal.DEPLOYMENT, at, None, problem, {"source": "railway"})
    if active is None:
        return Sample(Signal.DEPLOYMENT, at, None, "no active deployment", {"source": "railway"})
    failing = active.failing_instances  # CRASHED, RESTARTING or EXITED
    detail: dict[str, Any] = {
        "deployment": active.id,
        "status": active.status,
        "instances": list(active.instances),
        "failing_instances": failing,
        "failing_sightings": sightings,
    }
    if active.status_updated_at is not None:
        detail["status_updated_at"] = active.status_updated_at
    if active.status == SLEEPING:
        reason = f"deployment {active.id} is asleep (serverless): not woken to be judged"
        return Sample(Signal.DEPLOYMENT, at, None, reason, detail, idle=True)
    if active.status == CRASHED:
        return Sample(Signal.DEPLOYMENT, at, CRASHING, "", detail)
    if active.status != SUCCESS:
        reason = f"deployment {active.id} is {active.status}: neither running nor crashed"
        return Sample(Signal.DEPLOYMENT, at, None, reason, detail)
    if failing or sightings >= LOOP_SIGHTINGS:
        return Sample(Signal.DEPLOYMENT, at, CRASHING, "", detail)
    return Sample(Signal.DEPLOYMENT, at, RUNNING, "", detail)
