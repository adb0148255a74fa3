"""The ``deployment`` signal: Railway's own word on whether the active deployment runs.

Railway stops checking health once a deployment is live, but it still knows when the process
dies: the deployment turns CRASHED, or its instances go RESTARTING / CRASHED / EXITED while
Railway's restart policy brings them back. One poll gives one sample: 1.0 the active deployment
runs, 0.0 it is crashed or crash-looping. A sleeping (serverless) deployment, no active
deployment at all, or an answer that did not parse is UNKNOWN, never a breach.
"""

from __future__ import annotations

from typing import Any

from monitor.model import Sample, Signal
from monitor.railway.client import Deployment

RUNNING = 1.0
CRASHING = 0.0


def deployment_sample(active: Deployment | None, at: float, problem: str | None = None) -> Sample:
    """The sample of one poll: the active deployment's status and its instances' statuses.

    ``active`` is the newest deployment that went live (a crashed one included); ``problem``
    says why the poll's deployments could not be read, which makes the sample UNKNOWN.
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
    }
    if active.status_updated_at is not None:
        detail["status_updated_at"] = active.status_updated_at
    if active.status == "SLEEPING":
        reason = f"deployment {active.id} is asleep (serverless): not woken to be judged"
        return Sample(Signal.DEPLOYMENT, at, None, reason, detail)
    if active.status == "CRASHED":
        return Sample(Signal.DEPLOYMENT, at, CRASHING, "", detail)
    if active.status != "SUCCESS":
        reason = f"deployment {active.id} is {active.status}: neither running nor crashed"
        return Sample(Signal.DEPLOYMENT, at, None, reason, detail)
    if failing:
        return Sample(Signal.DEPLOYMENT, at, CRASHING, "", detail)
    return Sample(Signal.DEPLOYMENT, at, RUNNING, "", detail)
