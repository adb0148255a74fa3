"""The status document behind /status: every service's tier, releases and rules, and a
timeline of incidents and rollbacks.

The same document is served as JSON for machines and rendered as HTML for people
(:mod:`monitor.statuspage`). It reads the workers' live state and the store's decision
trail; it never changes anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from monitor import __version__
from monitor.admin import freeze_json
from monitor.clock import Clock
from monitor.decision import choose_target
from monitor.model import format_duration, release_label
from monitor.plan import Plan
from monitor.releases import Verdicts, release_key
from monitor.scheduler import ServiceWorker

if TYPE_CHECKING:
    from monitor.railway.poller import RailwayPoller
    from monitor.store import DeploymentRecord, EventRecord, RollbackRecord, Store

TIMELINE_LIMIT = 50

# What the timeline shows, and how loudly; the rest of the trail (guards passed, sight
# restored...) is in the store and the logs.
TIMELINE_KINDS: dict[str, str] = {
    "rule_firing": "critical",
    "rule_resolved": "ok",
    "blind": "warning",
    "rollback_started": "warning",
    "rollback_succeeded": "ok",
    "rollback_failed": "critical",
    "rollback_abandoned": "warning",
    "rollback_held": "warning",
    "escalation": "critical",
    "deployment_failed": "warning",
    "deployment_verified": "info",
    "frozen": "warning",
    "unfrozen": "info",
}


class Observed(Protocol):
    """What the status document reads from the daemon."""

    plan: Plan
    clock: Clock
    store: Store | None
    poller: RailwayPoller | None

    @property
    def workers(self) -> Sequence[ServiceWorker]:
        """The running workers (empty before startup)."""
        ...


class Labels:
    """Deployment id -> release label, read once per service per document."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._records: dict[str, dict[str, DeploymentRecord]] = {}

    async def records(self, service: str) -> dict[str, DeploymentRecord]:
        if service not in self._records:
            found = [] if self.store is None else await self.store.deployments(service, 200)
            self._records[service] = {r.id: r for r in found}
        return self._records[service]

    async def label(self, service: str, deployment: object) -> str:
        if not isinstance(deployment, str):
            return "?"
        record = (await self.records(service)).get(deployment)
        if record is None:  # newer than what was read: read again
            self._records.pop(service)
            record = (await self.records(service)).get(deployment)
        label = None if record is None else release_label(record.meta)
        return label or deployment


async def status_document(daemon: Observed) -> dict[str, Any]:
    """The whole document (see README, "The status page")."""
    labels = Labels(daemon.store)
    now = daemon.clock.time()
    plan_by_name = {s.name: s for s in daemon.plan.services}
    railway = {s.name for s in daemon.plan.railway_services}
    services = []
    for worker in daemon.workers:
        entry = worker.snapshot()
        policy = plan_by_name[worker.plan.name].policy
        entry["policy"] = {
            "auto_rollback": policy.auto_rollback,
            "severity": policy.severity,
            "delivery": policy.delivery,
        }
        name = worker.plan.name
        entry["railway"] = await _releases(daemon, labels, name, now) if name in railway else None
        services.append(entry)
    return {
        "version": __version__,
        "generated_at": now,
        "services": services,
        "timeline": await _timeline(daemon, labels),
    }


async def _releases(daemon: Observed, labels: Labels, name: str, now: float) -> dict[str, Any]:
    snapshot = daemon.poller.latest(name) if daemon.poller is not None else None
    active = snapshot.active if snapshot is not None else None
    records = await labels.records(name)
    store = daemon.store
    # Known-good as the executor sees it: what a rollback would restore now.
    verdicts = Verdicts.of(records.values())
    deployments = snapshot.deployments if snapshot is not None else ()
    if active is not None:
        target = choose_target(deployments, active, verdicts)
    else:
        good = [d for d in deployments if d.can_rollback and verdicts.known_good(d)]
        target = max(good, key=lambda d: d.created_at, default=None)
    proof = None
    if target is not None:
        key = release_key(target)
        proof = max(
            (r for r in records.values() if r.verdict == "good" and release_key(r) == key),
            key=lambda r: r.verdict_at or 0.0,
            default=None,
        )
    frozen = None if store is None else await store.frozen(name, now)
    unfinished = [] if store is None else await store.rollbacks(name, unfinished=True, limit=1)
    active_json = None
    if active is not None:
        seen = records.get(active.id)
        active_json = {
            "id": active.id,
            "release": release_label(active.meta),
            "status": active.status,
            "created_at": active.created_at,
            "live_at": None if seen is None else seen.live_at,
            "verdict": "bad"
            if verdicts.is_bad(active)
            else "good"
            if verdicts.known_good(active)
            else "unverified",
        }
    return {
        "active": active_json,
        "known_good": None
        if target is None
        else {
            "id": target.id,
            "release": release_label(target.meta),
            "verified_at": None if proof is None else proof.verdict_at,
            "reason": "" if proof is None else proof.verdict_reason,
        },
        "frozen": freeze_json(frozen),
        "rollback": None if not unfinished else await _rollback(labels, unfinished[0]),
    }


async def _rollback(labels: Labels, r: RollbackRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "state": r.state,
        "from": r.from_deployment,
        "to": r.to_deployment,
        "from_release": await labels.label(r.service, r.from_deployment),
        "to_release": await labels.label(r.service, r.to_deployment),
        "rule": r.rule,
        "decided_at": r.decided_at,
    }


async def _timeline(daemon: Observed, labels: Labels) -> list[dict[str, Any]]:
    if daemon.store is None:
        return []
    tiers = {s.name: s.tier for s in daemon.plan.services}
    events = await daemon.store.events(kinds=list(TIMELINE_KINDS), limit=TIMELINE_LIMIT)
    return [
        {
            "at": e.at,
            "service": e.service,
            "tier": tiers.get(e.service or ""),
            "kind": e.kind,
            "level": TIMELINE_KINDS[e.kind],
            **await _described(e, labels),
        }
        for e in events
    ]


async def _described(event: EventRecord, labels: Labels) -> dict[str, str]:
    """:func:`describe`, or the bare kind: one odd event must not take the page down."""
    try:
        return await describe(event, labels)
    except Exception as e:  # data written by older versions, or by hand
        return {"title": event.kind.replace("_", " "), "detail": f"(unreadable: {e!r})"}


def _seconds(value: object) -> str | None:
    """A duration from event data, in words; None unless a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return format_duration(float(value))


async def describe(event: EventRecord, labels: Labels) -> dict[str, str]:
    """An event's title and detail, in words."""
    data, service = event.data, event.service or ""

    async def label(key: str) -> str:
        known = data.get(f"{key}_release")  # rollback events carry their labels
        return str(known) if known else await labels.label(service, data.get(key))

    kind = event.kind
    rule = str(data.get("rule") or "")
    if kind == "rule_firing":
        return {"title": f"{rule} firing", "detail": str(data.get("reason", ""))}
    if kind == "rule_resolved":
        return {"title": f"{rule} resolved", "detail": str(data.get("reason", ""))}
    if kind == "blind":
        return {"title": f"{rule} blind", "detail": str(data.get("reason", ""))}
    if kind.startswith("rollback_") and kind != "rollback_held":
        state = kind.removeprefix("rollback_")
        moved = f"{await label('from')} → {await label('to')}"
        title = f"rollback #{data.get('rollback', '?')} {state}: {moved}"
        if kind == "rollback_started":
            manual = data.get("trigger") == "manual"
            who = (data.get("actor") or "hand") if manual else f"rule {rule}"
            return {"title": title, "detail": f"by {who}: {data.get('reason', '')}"}
        took = _seconds(data.get("took_s"))
        after = f" {took} after the decision" if took is not None else ""
        why = str(data.get("why") or "")
        return {"title": title, "detail": f"{why}{';' if why and after else ''}{after}".strip()}
    if kind == "rollback_held":
        return {
            "title": f"rollback held back ({data.get('guard', '?')})",
            "detail": str(data.get("why", "")),
        }
    if kind == "escalation":
        return {"title": f"escalation: {data.get('kind', '?')}", "detail": str(data.get("why", ""))}
    if kind in ("deployment_failed", "deployment_verified"):
        what = await label("deployment")
        if kind == "deployment_failed":
            return {"title": f"deployment {what} failed", "detail": str(data.get("status", ""))}
        baked = _seconds(data.get("baked_s"))
        detail = "inactive rules" + (f" for {baked}" if baked else "")
        return {"title": f"{what} known-good", "detail": f"served with {detail}"}
    # frozen / unfrozen
    detail = f"{data.get('actor', '')}: {data.get('reason', '')}".strip(": ")
    return {"title": f"automatic rollback {kind}", "detail": detail}
