"""Railway's deployment and instance statuses, classified once for every module that asks.

Each value of the schema's ``DeploymentStatus`` is in exactly one of five disjoint classes
(a test holds this against monitor/railway/schema.json, so a status Railway adds fails it
until someone decides what it means):

- ``SERVING``       answers requests: SUCCESS, or SLEEPING (serverless: a request wakes it)
- ``COMING_UP``     on its way to serving by itself: QUEUED, INITIALIZING, BUILDING, DEPLOYING
- ``WAITING``       on its way only once a person acts: WAITING, NEEDS_APPROVAL
- ``FAILED``        went wrong: FAILED (never went live), CRASHED (went live, then died)
- ``ENDED``         out of the picture: REMOVED, REMOVING, SKIPPED (superseded in the queue)

The other sets are unions of these, named for the question they answer.
"""

from __future__ import annotations

SUCCESS = "SUCCESS"
SLEEPING = "SLEEPING"
CRASHED = "CRASHED"

SERVING = frozenset({SUCCESS, SLEEPING})
COMING_UP = frozenset({"QUEUED", "INITIALIZING", "BUILDING", "DEPLOYING"})
WAITING = frozenset({"WAITING", "NEEDS_APPROVAL"})
FAILED = frozenset({"FAILED", CRASHED})
ENDED = frozenset({"REMOVED", "REMOVING", "SKIPPED"})

# The disjoint classes, by name (the classification test walks it).
DEPLOYMENT_CLASSES: dict[str, frozenset[str]] = {
    "serving": SERVING,
    "coming_up": COMING_UP,
    "waiting": WAITING,
    "failed": FAILED,
    "ended": ENDED,
}

# Went live and not replaced: serving, asleep, or crashed in place (Railway keeps a crashed
# deployment in its slot, and a crash loop is the clearest bad release there is).
LIVE = SERVING | {CRASHED}
# Will never serve (a rollback's replacement in one of these has failed).
NEVER_SERVING = FAILED | ENDED

# ``DeploymentInstanceStatus``, likewise one class each.
INSTANCE_RUNNING = frozenset({"RUNNING"})
INSTANCE_STARTING = frozenset({"CREATED", "INITIALIZING"})
INSTANCE_FAILING = frozenset({"CRASHED", "RESTARTING", "EXITED"})  # the process fails now
INSTANCE_STOPPED = frozenset({"STOPPED", "REMOVED", "REMOVING", "SKIPPED"})
INSTANCE_CLASSES: dict[str, frozenset[str]] = {
    "running": INSTANCE_RUNNING,
    "starting": INSTANCE_STARTING,
    "failing": INSTANCE_FAILING,
    "stopped": INSTANCE_STOPPED,
}
