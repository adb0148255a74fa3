"""The status document behind /status: every service's tier, releases and rules, and a
timeline of incidents and rollbacks.

The same document is served as JSON for machines and rendered as HTML for people
(:mod:`monitor.statuspage`). It reads the workers' live state and the store's decision
trail; it never changes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from monitor import __version__
from monitor.admin import freeze_json
from monitor.clock import Clock
from monitor.decision import choose_target
from monitor.errors import StoreError
from monitor.events import EventKind, from_record
from monitor.maintenance import maintenance_json
from monitor.model import release_label
from monitor.plan import Plan, has_railway_ids
from monitor.releases import Verdicts, release_key
from monitor.render import Words, deployments_of, describe
from monitor.scheduler import ServiceWorker

if TYPE_CHECKING:
    from monitor.railway.poller import RailwayPoller
    from monitor.store import DeploymentRecord, EventRecord, RollbackRecord, Store

TIMELINE_LIMIT = 50

# What the timeline shows, and how loudly; the rest of the trail (guards passed, sight
# restored...) is in the store and the logs.
TIMELINE_KINDS: dict[EventKind, str] = {
    EventKind.RULE_FIRING: "critical",
    EventKind.RULE_RESOLVED: "ok",
    EventKind.BLIND: "warning",
    EventKind.ROLLBACK_STARTED: "warning",
    EventKind.ROLLBACK_SUCCEEDED: "ok",
    EventKind.ROLLBACK_FAILED: "critical",
    EventKind.ROLLBACK_ABANDONED: "warning",
    EventKind.REBUILD_SLOW: "warning",
    EventKind.ROLLBACK_HELD: "warning",
    EventKind.ESCALATION: "critical",
    EventKind.DEPLOYMENT_FAILED: "warning",
    EventKind.DEPLOYMENT_VERIFIED: "info",
    EventKind.FROZEN: "warning",
    EventKind.UNFROZEN: "info",
    EventKind.PLATFORM_INCIDENT: "warning",
    EventKind.PLATFORM_INCIDENT_ENDED: "ok",
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

    def leadership(self) -> dict[str, Any]:
        """Whether this replica leads, and who does."""
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

    async def release(self, service: str, deployment: object) -> str | None:
        """The deployment's release label, if the store knows one."""
        if not isinstance(deployment, str):
            return None
        record = (await self.records(service)).get(deployment)
        if record is None:  # newer than what was read: read again
            self._records.pop(service)
            record = (await self.records(service)).get(deployment)
        return None if record is None else release_label(record.meta)

    async def label(self, service: str, deployment: object) -> str:
        """The release label, else the deployment id (``?`` without one)."""
        if not isinstance(deployment, str):
            return "?"
        return await self.release(service, deployment) or deployment


async def status_document(daemon: Observed) -> dict[str, Any]:
    """The whole document (see README, "The status page"). With the store out of reach
    (PostgreSQL down, or cut off from this replica) it still answers: the live state and
    who leads, without the store's parts, and ``store_error`` says why."""
    labels = Labels(daemon.store)
    now = daemon.clock.time()
    services = []
    problem: str | None = None
    for worker in daemon.workers:  # PR environments' services too: each worker has its plan
        entry = worker.snapshot()
        policy = worker.plan.policy
        entry["policy"] = {
            "auto_rollback": policy.auto_rollback,
            "severity": policy.severity,
            "delivery": policy.delivery,
        }
        name = worker.plan.name
        entry["maintenance"] = maintenance_json(worker.plan.maintenance, now)
        entry["railway"] = None
        if has_railway_ids(worker.plan.config) and problem is None:
            try:
                entry["railway"] = await _releases(daemon, labels, name, now)
            except StoreError as e:
                problem = str(e)
        services.append(entry)
    timeline: list[dict[str, Any]] = []
    if problem is None:
        try:
            timeline = await _timeline(daemon, labels)
        except StoreError as e:
            problem = str(e)
    document = {
        "version": __version__,
        "generated_at": now,
        "leadership": daemon.leadership(),
        "services": services,
        "timeline": timeline,
    }
    if problem is not None:
        document["store_error"] = problem
    return document


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
    kinds = [kind.value for kind in TIMELINE_KINDS]
    rows = []
    for e in await daemon.store.events(kinds=kinds, limit=TIMELINE_LIMIT):
        said = await words(e, labels)
        rows.append(
            {
                "at": e.at,
                "service": e.service,
                "tier": tiers.get(e.service or ""),
                "kind": e.kind,
                "level": TIMELINE_KINDS[EventKind(e.kind)],
                "title": said.title,
                "detail": said.summary,
            }
        )
    return rows


async def words(event: EventRecord, labels: Labels) -> Words:
    """An event in words (:func:`monitor.render.describe`), with the release labels of the
    deployments it names when it does not carry them (events older versions wrote)."""
    typed = from_record(event)
    service = event.service or ""
    releases: dict[str, str] = {}
    try:
        for deployment in deployments_of(typed):
            release = await labels.release(service, deployment)
            if release:
                releases[deployment] = release
    except Exception:  # a store that cannot say: described as without labels
        releases = {}
    return describe(typed, releases)
