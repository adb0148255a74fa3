"""The documents behind /status: a summary of every service, and one service in detail.

The summary (``/status``) is what a person scans and what a script polls, so it is small and
cheap at thousands of services (:mod:`monitor.status_summary` builds it from cached parts).
The detail (``/status/<service>``) is everything railguard knows of one service, with the
reasons: its releases and their verdicts, each rule's value against its threshold in the
rule's units, the guards that hold a rollback back, and the service's recent events.

Both are served as JSON for machines and rendered as HTML for people
(:mod:`monitor.statuspage`). They read the workers' live state and the store's decision
trail; they never change anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from monitor import __version__
from monitor.admin import freeze_json
from monitor.alerts.digest import last_scheduled
from monitor.clock import Clock
from monitor.decision import choose_target
from monitor.errors import StoreError
from monitor.events import EventKind, from_record
from monitor.maintenance import maintenance_json
from monitor.model import Signal, release_label
from monitor.plan import Plan, has_railway_ids
from monitor.releases import Verdicts, release_key
from monitor.render import Words, deployments_of, describe
from monitor.scheduler import ServiceWorker

if TYPE_CHECKING:
    from monitor.alerts.digest import Digest
    from monitor.railway.budget import RequestBudget
    from monitor.railway.poller import RailwayPoller
    from monitor.store import DeploymentRecord, EventRecord, RollbackRecord, Store

TIMELINE_LIMIT = 50
BAD_SHOWN = 5  # BAD releases listed on a service's page, newest first
DAY = 86_400.0

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
    """What the status documents read from the daemon."""

    @property
    def plan(self) -> Plan: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def poller(self) -> RailwayPoller | None: ...
    @property
    def budget(self) -> RequestBudget | None: ...
    @property
    def digest(self) -> Digest | None: ...

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


def find_worker(daemon: Observed, name: str) -> ServiceWorker | None:
    """The worker of service ``name``, if one runs."""
    return next((w for w in daemon.workers if w.plan.name == name), None)


def railway_budget(daemon: Observed) -> dict[str, Any] | None:
    """The Railway API budget as the poller spends it (None: not on Railway)."""
    budget = daemon.budget
    if budget is None:
        return None
    return {
        "per_hour": budget.per_hour,
        "left": int(budget.level),
        "reserve": int(budget.reserve),
        "slowed": budget.slowed,
    }


def next_digest(daemon: Observed, tier: str, now: float) -> float | None:
    """When tier ``tier``'s next daily digest goes out (None: the tier has no digest)."""
    policy = daemon.plan.config.tiers.get(tier)
    if daemon.digest is None or policy is None or policy.delivery != "digest":
        return None
    return last_scheduled(policy.digest_at, now) + DAY


def base(daemon: Observed, now: float) -> dict[str, Any]:
    """The fields both documents open with."""
    return {
        "version": __version__,
        "generated_at": now,
        "leadership": daemon.leadership(),
        "railway_budget": railway_budget(daemon),
    }


async def status_document(daemon: Observed) -> dict[str, Any]:
    """Every service in full, as one document (``daemon.status_document()``, tests): what
    /status served before the summary. Costly at thousands of services; /status does not
    use it."""
    now = daemon.clock.time()
    labels = Labels(daemon.store)
    services = []
    document = base(daemon, now)
    problem = None
    for worker in daemon.workers:
        entry = service_entry(daemon, worker, now)
        if has_railway_ids(worker.plan.config) and problem is None:
            try:
                entry["railway"] = await releases(daemon, labels, worker, now)
            except StoreError as e:
                problem = str(e)
        services.append(entry)
    document |= {"services": services, "timeline": []}
    if problem is None:
        try:
            document["timeline"] = await timeline(daemon, labels)
        except StoreError as e:
            problem = str(e)
    if problem is not None:
        document["store_error"] = problem
    return document


async def service_document(
    daemon: Observed, worker: ServiceWorker, *, history: bool = True
) -> dict[str, Any]:
    """One service in full (see README, "The status page"): the live state, its releases,
    the guards and its recent events. With the store out of reach it still answers with the
    live state, and ``store_error`` says why."""
    now = daemon.clock.time()
    labels = Labels(daemon.store)
    entry = service_entry(daemon, worker, now, history=history)
    document = base(daemon, now) | {"service": entry, "timeline": []}
    try:
        if has_railway_ids(worker.plan.config):
            entry["railway"] = await releases(daemon, labels, worker, now)
        document["timeline"] = await timeline(daemon, labels, service=worker.plan.name)
    except StoreError as e:
        document["store_error"] = str(e)
    return document


def service_entry(
    daemon: Observed, worker: ServiceWorker, now: float, *, history: bool = True
) -> dict[str, Any]:
    """The worker's live state, its policy, and each rule's value and threshold in words."""
    entry: dict[str, Any] = dict(worker.snapshot())
    policy = worker.plan.policy
    entry["policy"] = {
        "auto_rollback": policy.auto_rollback,
        "severity": policy.severity,
        "delivery": policy.delivery,
        "next_digest": next_digest(daemon, worker.plan.tier, now),
    }
    entry["maintenance"] = maintenance_json(worker.plan.maintenance, now)
    entry["railway"] = None
    signals: dict[str, dict[str, Any]] = cast(dict[str, dict[str, Any]], entry["signals"])
    for signal, sample in signals.items():
        sample["shown"] = shown(signal, sample.get("value"), sample.get("detail"))
    for rule in cast(dict[str, dict[str, Any]], entry["rules"]).values():
        signal = str(rule["signal"])
        latest = signals.get(signal) or {}
        rule["value"] = latest.get("value")
        rule["value_shown"] = latest.get("shown", "no sample yet")
        limit = rule.get("limit", rule.get("threshold"))
        rule["threshold_shown"] = None if limit is None else shown(signal, limit, None)
        if not history:
            del rule["history"]
    return entry


def shown(signal: str, value: object, detail: object) -> str:
    """A value in the unit its rule is written in: ``5%``, ``812ms``, ``healthy``, and for
    memory ``812 MiB of 1024 MiB (79%)`` when the source said the bytes."""
    if not isinstance(value, int | float):
        return "unknown"
    try:
        kind = Signal(signal)
    except ValueError:
        return f"{value:g}"
    text = kind.show(float(value))
    if kind is Signal.MEMORY and isinstance(detail, dict):
        usage, limit = detail.get("usage_bytes"), detail.get("limit_bytes")
        if isinstance(usage, int | float) and isinstance(limit, int | float) and limit > 0:
            return f"{mib(usage)} of {mib(limit)} ({text})"
    return text


def mib(size: float) -> str:
    """Bytes as MiB, as a memory limit is configured on Railway."""
    return f"{size / 2**20:.0f} MiB"


async def releases(
    daemon: Observed, labels: Labels, worker: ServiceWorker, now: float
) -> dict[str, Any]:
    """A Railway service's releases: the active one and its verdict, the newest known-good
    one (the active one once verified), the one a rollback would restore, the BAD ones, and
    the guards that would hold a rollback back now."""
    name = worker.plan.name
    snapshot = daemon.poller.latest(name) if daemon.poller is not None else None
    active = snapshot.active if snapshot is not None else None
    records = await labels.records(name)
    store = daemon.store
    verdicts = Verdicts.of(records.values())
    deployments = snapshot.deployments if snapshot is not None else ()
    # What the executor would restore now (never the active release itself).
    if active is not None:
        target = choose_target(deployments, active, verdicts)
    else:
        good = [d for d in deployments if d.can_rollback and verdicts.known_good(d)]
        target = max(good, key=lambda d: d.created_at, default=None)
    proofs = _proofs(records.values())
    active_json = None
    if active is not None:
        seen = records.get(active.id)
        proof = proofs.get(release_key(active))
        verdict = verdicts.word(active)
        active_json = {
            "id": active.id,
            "release": release_label(active.meta),
            "status": active.status,
            "created_at": active.created_at,
            "live_at": None if seen is None else seen.live_at,
            "verdict": verdict,
            "verified_at": None if proof is None or verdict != "good" else proof.verdict_at,
        }
    target_json = None
    if target is not None:
        proof = proofs.get(release_key(target))
        target_json = {
            "id": target.id,
            "release": release_label(target.meta),
            "verified_at": None if proof is None else proof.verdict_at,
            "reason": "" if proof is None else proof.verdict_reason,
        }
    newest_good = None
    if active is not None and active_json is not None and active_json["verdict"] == "good":
        newest_good = dict(active_json, reason=_reason(proofs.get(release_key(active))))
    elif target_json is not None:
        newest_good = target_json
    frozen = None if store is None else await store.frozen(name, now)
    unfinished = [] if store is None else await store.rollbacks(name, unfinished=True, limit=1)
    return {
        "active": active_json,
        "known_good": newest_good,
        "rollback_target": target_json,
        "bad": _bad(records.values()),
        "frozen": freeze_json(frozen),
        "rollback": None if not unfinished else await _rollback(labels, unfinished[0]),
        "guards": await guards(daemon, worker, now, frozen_until=_until(frozen)),
    }


def _until(frozen: Any) -> float | None:
    return None if frozen is None else frozen.until


def _reason(record: DeploymentRecord | None) -> str:
    return "" if record is None else record.verdict_reason


def _proofs(records: Any) -> dict[str, DeploymentRecord]:
    """Each known-good release's newest verdict record, by release key."""
    proofs: dict[str, DeploymentRecord] = {}
    for record in records:
        if record.verdict != "good":
            continue
        key = release_key(record)
        held = proofs.get(key)
        if held is None or (record.verdict_at or 0.0) > (held.verdict_at or 0.0):
            proofs[key] = record
    return proofs


def _bad(records: Any) -> list[dict[str, Any]]:
    """The BAD releases, newest verdict first: one line per release, not per deployment."""
    seen: dict[str, dict[str, Any]] = {}
    ordered = sorted(records, key=lambda r: r.verdict_at or 0.0, reverse=True)
    for record in ordered:
        key = release_key(record)
        if record.verdict == "bad" and key not in seen:
            seen[key] = {
                "id": record.id,
                "release": release_label(record.meta),
                "at": record.verdict_at,
                "reason": record.verdict_reason,
            }
    return list(seen.values())[:BAD_SHOWN]


async def guards(
    daemon: Observed, worker: ServiceWorker, now: float, *, frozen_until: float | None
) -> dict[str, Any]:
    """The guards' state as :func:`monitor.decision.decide` would find it now: the cooldown
    after the last automatic rollback, the day's rollback budget, a freeze."""
    policy = worker.plan.policy
    name = worker.plan.name
    store = daemon.store
    cooldown_until = None
    used = 0
    if store is not None:
        recent = await store.rollbacks(name, since=now - DAY, limit=20)
        autos = [r for r in recent if r.trigger == "auto" and not r.dry_run]
        if autos:
            last = autos[0]
            ended = last.finished_at or last.decided_at
            if now - ended < policy.cooldown:
                cooldown_until = ended + policy.cooldown
        used = await store.rollbacks_since(name, now - DAY)
    return {
        "auto_rollback": policy.auto_rollback,
        "cooldown": policy.cooldown,
        "cooldown_until": cooldown_until,
        "max_rollbacks_per_day": policy.max_rollbacks_per_day,
        "rollbacks_last_24h": used,
        "budget_left": max(0, policy.max_rollbacks_per_day - used),
        "frozen_until": frozen_until,
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


async def timeline(
    daemon: Observed, labels: Labels, *, service: str | None = None, tier: str | None = None
) -> list[dict[str, Any]]:
    """The newest events (at most :data:`TIMELINE_LIMIT`), in words, newest first."""
    if daemon.store is None:
        return []
    tiers = {s.name: s.tier for s in daemon.plan.services}
    tiers |= {w.plan.name: w.plan.tier for w in daemon.workers}
    kinds = [kind.value for kind in TIMELINE_KINDS]
    rows = []
    # A tier's timeline reads more and keeps its own: the store knows no tiers.
    limit = TIMELINE_LIMIT if tier is None else TIMELINE_LIMIT * 4
    for e in await daemon.store.events(service=service, kinds=kinds, limit=limit):
        at_tier = tiers.get(e.service or "")
        if tier is not None and at_tier != tier:
            continue
        said = await words(e, labels)
        rows.append(
            {
                "at": e.at,
                "service": e.service,
                "tier": at_tier,
                "kind": e.kind,
                "level": TIMELINE_KINDS[EventKind(e.kind)],
                "title": said.title,
                "detail": said.summary,
            }
        )
    return rows[:TIMELINE_LIMIT]


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
