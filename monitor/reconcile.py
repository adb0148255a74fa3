"""Reconciliation: what Railway's deployments say about a rollback railguard is not sure of.

``deploymentRollback`` answers a bare Boolean, and an answer can be lost (a dropped
connection, a timeout, railguard killed with the mutation in flight). The truth is then in
Railway's deployment list: a rollback creates a new deployment of the target's release. These
pure functions read that list; the executor acts on what they say:

- a replacement appeared -> follow it, never send again;
- none appeared, no attempt may be in flight (none was made, or the last one provably never
  reached Railway) -> send (the next attempt of the same intent, bounded);
- none appeared and an attempt may be in flight -> wait up to the reconcile window, since
  Railway may still be creating it; after the window it provably did not apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.railway.client import Deployment
from monitor.releases import release_key
from monitor.store import RollbackRecord

SKEW = 5.0  # seconds of clock difference tolerated between railguard and Railway


KNOWN = "known_deployments"  # the intent's evidence key: Railway's deployment ids at the time
REBUILD = "rebuild_commit"  # the intent's evidence key of a rebuild: the commit deployed again


def rebuild_commit(record: RollbackRecord) -> str | None:
    """The commit a rollback deploys again when it is a rebuild (no image was left), else None."""
    commit = record.evidence.get(REBUILD)
    return commit if isinstance(commit, str) and commit else None


def find_replacement(
    record: RollbackRecord, deployments: Sequence[Deployment]
) -> Deployment | None:
    """The deployment rollback ``record`` created, if Railway shows one.

    A replacement is a deployment that was not on Railway's list when the intent was written
    (the ids it keeps; an intent without them falls back to "created after the decision",
    which trusts the two clocks to within ``SKEW``), and is neither the deployment left nor
    the target. One running the target's release (or built from its commit: a rebuild makes a
    new image of it) is preferred; neither is required, since Railway may describe a rebuilt
    image differently from the commit it came from.
    """
    if record.new_deployment is not None:
        known = next((d for d in deployments if d.id == record.new_deployment), None)
        if known is not None:
            return known
    before = record.evidence.get(KNOWN)
    if isinstance(before, list) and before:
        seen = frozenset(str(i) for i in before)
        fresh = [d for d in deployments if d.id not in seen]
    else:
        fresh = [d for d in deployments if d.created_at >= record.decided_at - SKEW]
    fresh = [d for d in fresh if d.id not in (record.from_deployment, record.to_deployment)]
    target = next((d for d in deployments if d.id == record.to_deployment), None)
    wanted = release_key(target) if target is not None else None
    commit = rebuild_commit(record) or (target.meta.get("commitHash") if target else None)
    same = [
        d
        for d in fresh
        if release_key(d) == wanted or (commit and d.meta.get("commitHash") == commit)
    ]
    fresh = same or fresh
    return min(fresh, key=lambda d: d.created_at, default=None)


@dataclass(frozen=True, slots=True)
class Follow:
    """The mutation applied: follow this replacement."""

    replacement: Deployment


@dataclass(frozen=True, slots=True)
class Wait:
    """An attempt may still be applying: look again later."""

    why: str


@dataclass(frozen=True, slots=True)
class Send:
    """Nothing applied and nothing can be in flight: the mutation may be sent."""

    why: str


Settlement = Follow | Wait | Send


def settle_intent(
    record: RollbackRecord,
    deployments: Sequence[Deployment],
    now: float,
    *,
    window: float,
    in_flight: bool = True,
) -> Settlement:
    """What an intent's state on Railway is, at ``now``.

    ``in_flight`` False says the last attempt provably never reached Railway (it was refused
    before it was sent, or answered 429/5xx), so no window need pass.
    """
    replacement = find_replacement(record, deployments)
    if replacement is not None:
        return Follow(replacement)
    if record.attempts == 0:
        return Send("no mutation was sent for this intent yet")
    if not in_flight:
        return Send(f"attempt {record.attempts} never reached Railway")
    since = now - (record.attempted_at if record.attempted_at is not None else record.decided_at)
    if since < window:
        return Wait(f"attempt {record.attempts} was {since:.1f}s ago: Railway may still apply it")
    return Send(
        f"no replacement appeared {since:.0f}s after attempt {record.attempts}: "
        "Railway did not apply it"
    )
