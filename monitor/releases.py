"""Release tracking: which deployment serves, how long it took, and which ones are known-good.

After every Railway poll the tracker records each service's deployments in the store. A
deployment becomes *known-good* once it has served for the tier's ``bake`` with no rule
pending, firing or blind for that whole time; the evidence (when it went live, how long it
baked, the rules that watched it) is kept with the verdict. On first start, with nothing
known yet, Railway's history stands in: a deployment that served for at least ``bake``
before a newer one replaced it, and that nobody rolled back from, is known-good *by
inference*, and its evidence says so. A deployment rolled back from is BAD for ever (the
executor marks it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from monitor.clock import Clock
from monitor.events import DeploymentEvent, EventKind, write_event
from monitor.leadership import SOLO, Acting
from monitor.model import format_duration, release_label
from monitor.plan import ServicePlan
from monitor.railway.client import Deployment
from monitor.railway.poller import ServiceSnapshot
from monitor.railway.statuses import FAILED, SERVING, SUCCESS
from monitor.store import DeploymentRecord, Store
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.releases")


class HasMeta(Protocol):
    """A deployment as Railway answers it or as the store keeps it."""

    @property
    def id(self) -> str: ...

    @property
    def meta(self) -> Mapping[str, Any]: ...


def release_key(deployment: HasMeta) -> str:
    """What release a deployment runs: its image digest, else its commit, else itself.

    A restart, a Railway-initiated redeploy or a rollback's replacement of the same image is
    the same release, so it shares the release's verdict.
    """
    meta = deployment.meta
    digest = meta.get("imageDigest")
    if isinstance(digest, str) and digest:
        return f"image:{digest}"
    image = meta.get("image")
    if isinstance(image, str) and "@sha256:" in image:
        return f"image:{image.rpartition('@')[2]}"
    commit = meta.get("commitHash")
    if isinstance(commit, str) and commit:
        return f"commit:{commit}"
    return f"deployment:{deployment.id}"


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Which releases are known-good and which are BAD (BAD wins, for ever)."""

    good: frozenset[str] = frozenset()
    bad: frozenset[str] = frozenset()

    @classmethod
    def of(cls, records: Iterable[DeploymentRecord]) -> Verdicts:
        """The releases' verdicts from the store's deployment records."""
        good, bad = set(), set()
        for record in records:
            if record.verdict == "good":
                good.add(release_key(record))
            elif record.verdict == "bad":
                bad.add(release_key(record))
        return cls(frozenset(good), frozenset(bad))

    def known_good(self, deployment: HasMeta) -> bool:
        """Whether the deployment's release is known-good (and not BAD)."""
        key = release_key(deployment)
        return key in self.good and key not in self.bad

    def is_bad(self, deployment: HasMeta) -> bool:
        """Whether the deployment's release was rolled back from."""
        return release_key(deployment) in self.bad

    def word(self, deployment: HasMeta) -> str:
        """The deployment's verdict in a word: ``bad``, ``good`` or ``unverified``."""
        if self.is_bad(deployment):
            return "bad"
        return "good" if self.known_good(deployment) else "unverified"

    @property
    def count(self) -> int:
        """How many releases are known-good."""
        return len(self.good - self.bad)


def went_live(deployment: Deployment, seen_at: float) -> float:
    """When a live deployment went live, by Railway's clock where it says.

    SUCCESS: when its status last changed (to SUCCESS). Crashed or asleep, Railway's time
    is of the crash or the sleep, so its creation is the honest lower bound. Never later
    than ``seen_at``.
    """
    if deployment.status == SUCCESS:
        when = deployment.status_updated_at or deployment.updated_at or deployment.created_at
    else:
        when = deployment.created_at
    return min(when, seen_at)


@dataclass
class _Service:
    """What the tracker remembers about one service between polls."""

    active: Deployment | None = None
    live_since: float | None = None
    bake_start: float | None = None  # restarts whenever a rule leaves INACTIVE or goes blind
    watched_since: float | None = None  # when this run saw the active release serve
    good_marked: set[str] = field(default_factory=set)
    timed: set[str] = field(default_factory=set)  # deployments whose duration was exported
    inferred: bool = False
    # What the store holds of each deployment (status, canRollback, live): a poll writes only
    # what changed, so 1,000 services polled every few seconds are not 3,000 writes a poll.
    seen: dict[str, tuple[str, bool, bool]] | None = None
    gauged: bool = False
    # The previous known-good release (its key and a label): what baselines compare with.
    baseline: tuple[str, str] | None = None
    observed_at: float | None = None  # the time of the poll the tracker last took


class ReleaseTracker:
    """Keeps each service's deployments, its active one, and its known-good releases."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        metrics: Metrics,
        troubled: Callable[[str], bool],
        acting: Acting = SOLO,
    ) -> None:
        self.store = store
        self.acting = acting  # only the leader records the events people are told of
        self.clock = clock
        self.metrics = metrics
        # Whether any of a service's rules is pending, firing or blind right now: a rule
        # that stays firing makes no new transition, so transitions alone cannot tell.
        self.troubled = troubled
        self._services: dict[str, _Service] = {}

    def _state(self, name: str) -> _Service:
        return self._services.setdefault(name, _Service())

    def active(self, name: str) -> Deployment | None:
        """The deployment serving ``name`` now, as of the last poll."""
        return self._state(name).active

    def live_since(self, name: str) -> float | None:
        """When the active deployment went live (or was first seen live)."""
        return self._state(name).live_since

    def observed_at(self, name: str) -> float | None:
        """When the poll the tracker last took (and ``active`` describes) was answered."""
        return self._state(name).observed_at

    def baseline_release(self, name: str) -> tuple[str, str] | None:
        """The release a baseline rule compares the active one with: the newest known-good
        release other than the active one's, as ``(release key, label)``; None if none."""
        return self._state(name).baseline

    def note_trouble(self, name: str, at: float) -> None:
        """A rule of ``name`` left INACTIVE or went blind: the bake starts over."""
        state = self._state(name)
        if state.bake_start is not None:
            state.bake_start = max(state.bake_start, at)

    async def observe(self, service: ServicePlan, snapshot: ServiceSnapshot) -> None:
        """Take one poll's deployments for ``service``."""
        name, state, now = service.name, self._state(service.name), snapshot.at
        active = snapshot.active
        if state.seen is None:  # first poll of this run: what earlier runs recorded
            state.seen = {
                r.id: (r.status, r.can_rollback, r.live_at is not None and r.ended_at is None)
                for r in await self.store.deployments(name, limit=200)
            }
        changed = False
        for d in snapshot.deployments:
            live = active is not None and d.id == active.id
            before = state.seen.get(d.id)
            self._time_deployment(service, d, now)
            if before == (d.status, d.can_rollback, live):
                continue
            changed = True
            state.seen[d.id] = (d.status, d.can_rollback, live)
            await self.store.upsert_deployment(
                name,
                id=d.id,
                status=d.status,
                created_at=d.created_at,
                can_rollback=d.can_rollback,
                meta=dict(d.meta),
                seen_at=now,
                live=live,
                live_at=went_live(d, now) if live else None,
            )
            if (
                d.status in FAILED
                and (before is None or before[0] not in FAILED)
                and self.acting.leading()
            ):
                # Once per deployment: a restart knows what the store already said.
                failed = DeploymentEvent(
                    kind=EventKind.DEPLOYMENT_FAILED,
                    deployment=d.id,
                    release=release_label(d.meta),
                    status=d.status,
                )
                await write_event(self.store, name, failed, now)
        if not state.inferred:
            state.inferred = True
            await self._infer(service, snapshot.deployments, now)
        state.observed_at = now
        if active is None:
            state.active = state.live_since = state.bake_start = None
            return
        if state.active is None or state.active.id != active.id:
            record = await self.store.deployment(name, active.id)
            live_at = record.live_at if record and record.live_at is not None else now
            # The bake is railguard's own observation: it starts when railguard sees the
            # release serve, never earlier (a release live while railguard was down has
            # not been watched).
            state.active, state.live_since, state.bake_start = active, live_at, max(live_at, now)
            state.watched_since = now
            log.info("deployment live", service=name, deployment=active.id, status=active.status)
        state.active = active  # the newest facts: it may have crashed since
        marked = await self._bake(service, state, now)
        if changed or marked or not state.gauged:
            state.gauged = True
            await self.verdicts(service)  # keeps railguard_known_good_releases current

    def _time_deployment(self, service: ServicePlan, d: Deployment, now: float) -> None:
        state = self._state(service.name)
        if d.status not in SERVING or d.id in state.timed:
            return
        state.timed.add(d.id)
        # Railway's own time of the status change when it gives one; else when we saw it.
        finished = d.updated_at if d.updated_at is not None else now
        if finished - d.created_at < 86400:  # an old release seen on first start: not timed
            self.metrics.deployment_duration.labels(service.name, service.tier).observe(
                max(0.0, finished - d.created_at)
            )

    async def _bake(self, service: ServicePlan, state: _Service, now: float) -> bool:
        """Mark the active release known-good once it has baked; True when it was marked."""
        active = state.active
        if active is None or state.bake_start is None or active.id in state.good_marked:
            return False
        if self.troubled(service.name) or active.status != SUCCESS or active.failing_instances:
            state.bake_start = now  # only a release that serves, quietly, bakes
            return False
        baked = now - state.bake_start
        if baked < service.policy.bake:
            return False
        if (await self.verdicts(service)).is_bad(active):
            return False
        leading = self.acting.leading()
        state.good_marked.add(active.id)
        record = await self.store.deployment(service.name, active.id)
        if record is not None and record.verdict == "good":
            # Verified by an earlier run: announced once, not once per restart. Or baked by
            # another replica while this one watched (every replica bakes; a standby tells
            # nothing): the leader announces it, once.
            if leading and await self._baked_elsewhere(service, state, record):
                verified = self._verified(service, state, now)
                await write_event(self.store, service.name, verified, now)
            return False
        evidence = {
            "live_since": state.live_since,
            "quiet_since": state.bake_start,
            "baked_s": baked,
            "bake_s": service.policy.bake,
            "rules": [rule.describe() for rule in service.rules],
        }
        reason = (
            f"served {format_duration(baked)} with every rule inactive "
            f"(bake {format_duration(service.policy.bake)})"
        )
        await self.store.mark_good(service.name, active.id, now, reason, evidence)
        if leading:
            await write_event(self.store, service.name, self._verified(service, state, now), now)
        log.info("deployment known-good", service=service.name, deployment=active.id, reason=reason)
        return True

    def _verified(self, service: ServicePlan, state: _Service, now: float) -> DeploymentEvent:
        """The event that tells the active release baked to known-good at ``now``."""
        active = state.active
        assert active is not None
        assert state.bake_start is not None
        return DeploymentEvent(
            kind=EventKind.DEPLOYMENT_VERIFIED,
            deployment=active.id,
            release=release_label(active.meta),
            live_since=state.live_since,
            quiet_since=state.bake_start,
            baked_s=now - state.bake_start,
            bake_s=service.policy.bake,
            rules=tuple(rule.describe() for rule in service.rules),
        )

    async def _baked_elsewhere(
        self, service: ServicePlan, state: _Service, record: DeploymentRecord
    ) -> bool:
        """Whether another replica baked the active release to known-good while this one
        watched it (not an earlier run, not learned from history) and nobody told it."""
        if record.verdict_at is None or state.watched_since is None:
            return False
        if record.verdict_at < state.watched_since or "baked_s" not in record.evidence:
            return False
        told = await self.store.events(
            service.name, kinds=[EventKind.DEPLOYMENT_VERIFIED], limit=50
        )
        return not any(e.data.get("deployment") == record.id for e in told)

    async def _infer(self, service: ServicePlan, history: Sequence[Deployment], now: float) -> None:
        """On first start with nothing known-good, learn from Railway's history."""
        known = await self.store.deployments(service.name)
        if any(r.verdict == "good" for r in known):
            return
        bad = {r.id for r in known if r.verdict == "bad"}
        ordered = sorted(history, key=lambda d: d.created_at)
        for older, newer in itertools.pairwise(ordered):
            served = newer.created_at - older.created_at
            # A release whose image Railway no longer keeps is no rollback target; it is worth
            # knowing only when the tier may rebuild it from its commit.
            usable = older.can_rollback or (
                service.policy.rebuild and bool(str(older.meta.get("commitHash") or "").strip())
            )
            if (
                older.status == "REMOVED"
                and usable
                and older.id not in bad
                and served >= service.policy.bake
            ):
                reason = (
                    f"inferred from Railway's history: served about {format_duration(served)} "
                    f"before {newer.id} replaced it, and was never rolled back from"
                )
                evidence = {"inferred": True, "served_s": served, "replaced_by": newer.id}
                await self.store.mark_good(service.name, older.id, now, reason, evidence)
                log.info(
                    "deployment known-good (inferred)", service=service.name, deployment=older.id
                )

    async def verdicts(self, service: ServicePlan) -> Verdicts:
        """The service's release verdicts (and the known-good gauge brought up to date)."""
        records = await self.store.deployments(service.name, limit=200)
        verdicts = Verdicts.of(records)
        self.metrics.known_good.labels(service.name, service.tier).set(verdicts.count)
        state = self._state(service.name)
        active = None if state.active is None else release_key(state.active)
        good = [
            r
            for r in records
            if r.verdict == "good" and not verdicts.is_bad(r) and release_key(r) != active
        ]
        newest = max(good, key=lambda r: (r.live_at or r.created_at, r.created_at), default=None)
        state.baseline = (
            None
            if newest is None
            else (release_key(newest), release_label(newest.meta) or newest.id)
        )
        return verdicts
