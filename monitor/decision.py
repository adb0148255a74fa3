"""The rollback decision: a pure function from (policy, facts) to Idle, Go, Hold or Escalate.

The controller gathers the facts (Railway's deployments with their own timestamps and
statuses, the store's freezes, rollbacks and verdicts, the rules' states) and calls
:func:`decide` at every evaluation of a service; nothing here does I/O or reads a clock, so
the whole decision is tested as a table. The guards run in DESIGN's order, in one place:

1. ``frozen``          a freeze (manual, or the loop breaker's) is in force
   ``maintenance``     a maintenance window from the config is in force (a scheduled freeze)
2. ``monitor_blind``   railguard cannot see Railway (its last poll failed, or is stale)
3. ``platform_incident`` Railway itself reports an incident
4. ``deployment_in_progress`` a deployment newer than the active one is coming up by itself
5. ``grace``           the active deployment went live too recently (Railway's timestamps)
6. ``cooldown``        the last automatic rollback was too recent; within it, the release that
   rollback *restored* failing too is the loop breaker: escalate and freeze
7. ``budget``          too many automatic rollbacks in 24h

then the target (the newest known-good release older than the active one that Railway can
still roll back to) and, last, the dry run. Railway keeps rollback images for 24h to 360h,
by plan: a known-good release whose image is gone (``canRollback`` false) is skipped for an
older one. With none left, the tier's ``rebuild`` deploys the newest known-good release's
commit again (a build, so minutes rather than a rollback's seconds); without it, or without
a commit, a person is told that retention ran out and what would bring the release back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.events import EscalationKind
from monitor.model import Sample, for_slack, format_duration, release_label
from monitor.railway.client import Deployment
from monitor.railway.statuses import COMING_UP
from monitor.releases import Verdicts, release_key
from monitor.settings import TierPolicy
from monitor.store import RollbackRecord

GUARDS = (
    "frozen",
    "maintenance",
    "monitor_blind",
    "platform_incident",
    "deployment_in_progress",
    "grace",
    "cooldown",
    "budget",
)


@dataclass(frozen=True, slots=True)
class Firing:
    """A rollback rule that is FIRING, with what made it fire."""

    rule: str
    since: float  # when its breach began
    for_: float  # how long a breach must last
    last_known_at: float | None  # its newest known sample
    max_gap: float
    reason: str
    evidence: tuple[Sample, ...] = ()

    def judges(self, live_at: float | None, now: float) -> bool:
        """Whether it fires on fresh evidence about the release that went live at ``live_at``.

        Fresh: its newest sample is no older than ``max_gap``. About this release: it has
        breached for a whole ``for`` on samples whose windows began after the release went
        live, so a rule still firing on the release a rollback replaced (or on a rate that
        still counts its requests) says nothing of the new one.
        """
        if self.last_known_at is None or now - self.last_known_at > self.max_gap:
            return False
        needed = self.for_ - for_slack(self.max_gap)  # the engine's own measure of `for`
        if live_at is None:
            return now - self.since >= needed
        # A rate describes a window before its sample (a Railway step, the span between two
        # scrapes, a probe-latency window): only samples whose window began after the release
        # went live are about it, and the evidence (the last `for` of the episode) must hold
        # only such samples. Each sample's own window counts: a window that grows from the
        # deploy on (probe latency) is about the release from its first sample.
        if any(s.window_start < live_at for s in self.evidence):
            return False
        return now - max(self.since, live_at) >= needed


@dataclass(frozen=True, slots=True)
class Facts:
    """What is, for one service, at ``now``: everything :func:`decide` may look at."""

    now: float
    firing: tuple[Firing, ...]
    deployments: tuple[Deployment, ...]  # Railway's, newest first
    active: Deployment | None  # the newest that went live, crashed included
    live_at: float | None  # when the active one went live, by Railway's clock
    verdicts: Verdicts
    frozen: str | None = None  # why automatic rollback is frozen, if it is
    maintenance: str | None = None  # the maintenance window in force, if one is
    blind: str | None = None  # why railguard may be blind, if it may
    incident: str | None = None  # Railway's own incident, if any
    last_auto: RollbackRecord | None = None  # the newest automatic rollback that reached Railway
    auto_last_24h: int = 0
    dry_run_of_active: int | None = None  # a dry run already recorded for the active deployment


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to decide: no rollback rule fires on fresh evidence about the active release.

    ``waiting``: a rule fires, but its evidence about the active release is not a whole
    ``for`` yet; the decision may be Go in a tick or two (the alert router waits for it)."""

    why: str
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class Go:
    """Roll ``active`` back to ``target`` (``dry_run``: record it, send nothing).

    ``rebuild``: Railway no longer has ``target``'s image, so its commit is built and
    deployed again instead of rolled back to.
    """

    active: Deployment
    target: Deployment
    firing: Firing
    dry_run: bool = False
    rebuild: str | None = None  # the commit to build and deploy


@dataclass(frozen=True, slots=True)
class Hold:
    """A guard holds the rollback back for now; decided again at the next evaluation."""

    guard: str
    why: str
    deployment: str | None = None  # deployment_in_progress: the newer deployment
    rollback: int | None = None  # cooldown: the last rollback


@dataclass(frozen=True, slots=True)
class Escalate:
    """A person is needed; ``freeze`` also stops automatic rollback until they unfreeze."""

    kind: EscalationKind
    why: str
    freeze: bool
    rollback: int | None = None  # loop_breaker: the rollback whose restored release fails too
    restored: str | None = None


Decision = Idle | Go | Hold | Escalate


def decide(policy: TierPolicy, facts: Facts) -> Decision:
    """The decision for one service now (see the module docstring for the order)."""
    if not policy.auto_rollback:
        return Idle("automatic rollback is off for this tier")
    active, now = facts.active, facts.now
    if active is None:
        return Idle("no deployment has gone live")
    firing = [f for f in facts.firing if f.judges(facts.live_at, now)]
    if not firing:
        why = "no rollback rule fires on fresh evidence about the active release"
        return Idle(why, waiting=bool(facts.firing))
    if policy.dry_run and facts.dry_run_of_active is not None:
        return Idle(f"dry run #{facts.dry_run_of_active} already recorded for {active.id}")
    chosen = min(firing, key=lambda f: (f.since, f.rule))
    held = _guards(policy, facts, active)
    if held is not None:
        return held
    target = choose_target(facts.deployments, active, facts.verdicts)
    if target is not None:
        return Go(active, target, chosen, dry_run=policy.dry_run)
    expired = newest_known_good(facts.deployments, active, facts.verdicts)
    if expired is None:
        why = (
            f"no known-good release older than {active.id} that Railway can roll back to "
            f"({len(facts.deployments)} deployments looked at)"
        )
        return Escalate("no_known_good", why, freeze=False)
    commit = commit_of(expired)
    if policy.rebuild and commit is not None:
        return Go(active, expired, chosen, dry_run=policy.dry_run, rebuild=commit)
    return Escalate("retention_expired", retention_ran_out(expired, commit), freeze=False)


def _guards(policy: TierPolicy, facts: Facts, active: Deployment) -> Hold | Escalate | None:
    now = facts.now
    if facts.frozen is not None:
        return Hold("frozen", f"automatic rollback is frozen: {facts.frozen}")
    if facts.maintenance is not None:
        return Hold("maintenance", facts.maintenance)
    if facts.blind is not None:
        return Hold("monitor_blind", f"railguard may be the one that is blind: {facts.blind}")
    if facts.incident is not None:
        return Hold("platform_incident", f"Railway reports an incident: {facts.incident}")
    coming = coming_up(facts.deployments, active)
    if coming is not None:
        why = f"a newer deployment {coming.id} is {coming.status}: it may fix this"
        return Hold("deployment_in_progress", why, deployment=coming.id)
    if facts.live_at is not None and now - facts.live_at < policy.grace:
        why = (
            f"{active.id} went live {format_duration(max(0.0, now - facts.live_at))} ago "
            f"(grace {format_duration(policy.grace)})"
        )
        return Hold("grace", why)
    last = facts.last_auto
    if last is not None:
        ended = last.finished_at or last.decided_at
        if now - ended < policy.cooldown:
            if last.state == "succeeded" and restored_by(last, active, facts.deployments):
                why = (
                    f"the release restored by rollback #{last.id} "
                    f"{format_duration(max(0.0, now - ended))} ago fails too"
                )
                restored = last.to_deployment
                return Escalate(
                    "loop_breaker", why, freeze=True, rollback=last.id, restored=restored
                )
            why = (
                f"rollback #{last.id} was {format_duration(max(0.0, now - ended))} ago "
                f"(cooldown {format_duration(policy.cooldown)})"
            )
            return Hold("cooldown", why, rollback=last.id)
    if facts.auto_last_24h >= policy.max_rollbacks_per_day:
        why = (
            f"{facts.auto_last_24h} automatic rollbacks in the last 24h "
            f"(max_rollbacks_per_day {policy.max_rollbacks_per_day})"
        )
        return Hold("budget", why)
    return None


def coming_up(deployments: Sequence[Deployment], active: Deployment) -> Deployment | None:
    """The newest deployment newer than ``active`` that is coming up by itself, if any."""
    newer = [d for d in deployments if d.status in COMING_UP and d.created_at > active.created_at]
    return max(newer, key=lambda d: d.created_at, default=None)


def restored_by(
    last: RollbackRecord, active: Deployment, deployments: Sequence[Deployment]
) -> bool:
    """Whether ``active`` is what rollback ``last`` put back (its replacement, or its release)."""
    if last.new_deployment == active.id:
        return True
    target = next((d for d in deployments if d.id == last.to_deployment), None)
    return target is not None and release_key(target) == release_key(active)


def choose_target(
    deployments: Sequence[Deployment], active: Deployment, verdicts: Verdicts
) -> Deployment | None:
    """The newest known-good release older than ``active`` that Railway can roll back to
    (one whose image Railway no longer keeps is skipped for an older one)."""
    candidates = _known_good_before(deployments, active, verdicts)
    return max((d for d in candidates if d.can_rollback), key=_created, default=None)


def manual_target(
    name: str,
    deployments: Sequence[Deployment],
    active: Deployment,
    verdicts: Verdicts,
    to: str | None,
) -> Deployment | str:
    """A manual rollback of service ``name``'s target: ``to`` if Railway can roll back to it,
    else the automatic choice (:func:`choose_target`); or why there is none."""
    if to is None:
        target = choose_target(deployments, active, verdicts)
        expired = newest_known_good(deployments, active, verdicts)
        if target is None and expired is not None:
            why = retention_ran_out(expired, commit_of(expired), manual=True)
            return f"no rollback is possible: {why}"
        if target is None:
            return (
                f"no known-good release older than {active.id} that Railway can roll back "
                f"to ({len(deployments)} deployments looked at)"
            )
        return target
    chosen = next((d for d in deployments if d.id == to), None)
    if chosen is None:
        return f"{to} is not one of {name}'s recent deployments"
    if chosen.id == active.id:
        return f"{to} is the active deployment already"
    if not chosen.can_rollback:
        commit = commit_of(chosen)
        rebuild = f"; a rebuild of commit {commit} would bring it back" if commit else ""
        return (
            f"Railway cannot roll back to {to} (canRollback is false: its image is no longer "
            f"kept){rebuild}"
        )
    return chosen


def newest_known_good(
    deployments: Sequence[Deployment], active: Deployment, verdicts: Verdicts
) -> Deployment | None:
    """The newest known-good release older than ``active``, whether or not Railway can still
    roll back to it (when :func:`choose_target` finds none: the release retention took)."""
    return max(_known_good_before(deployments, active, verdicts), key=_created, default=None)


def _known_good_before(
    deployments: Sequence[Deployment], active: Deployment, verdicts: Verdicts
) -> list[Deployment]:
    leaving = release_key(active)
    return [
        d
        for d in deployments
        if d.created_at < active.created_at and release_key(d) != leaving and verdicts.known_good(d)
    ]


def _created(deployment: Deployment) -> float:
    return deployment.created_at


def commit_of(deployment: Deployment) -> str | None:
    """The commit a deployment was built from (Railway's ``meta.commitHash``), if any."""
    commit = deployment.meta.get("commitHash")
    return commit if isinstance(commit, str) and commit.strip() else None


def retention_ran_out(expired: Deployment, commit: str | None, *, manual: bool = False) -> str:
    """Why no rollback is possible when every known-good release's image is gone."""
    name = release_label(expired.meta) or expired.id
    gone = (
        f"retention ran out: Railway no longer keeps an image of any known-good release "
        f"(canRollback is false; images are kept 24h to 360h by plan), the newest being "
        f"{name} ({expired.id})"
    )
    if commit is None:
        return f"{gone}, which has no commit to rebuild from: deploy a good release by hand"
    how = "deploy that commit in Railway" if manual else "rebuild = true on the tier does it"
    return (
        f"{gone}; a rebuild of commit {commit} would bring it back, in minutes rather than "
        f"a rollback's seconds ({how})"
    )


def describe(decision: Decision) -> str:
    """The decision in one line (logs, the bench)."""
    match decision:
        case Go(active=active, target=target, dry_run=dry, rebuild=commit):
            to = release_label(target.meta) or target.id
            how = f" by rebuilding commit {commit}" if commit is not None else ""
            return f"{'dry run: ' if dry else ''}roll {active.id} back to {to}{how}"
        case Hold(guard=guard, why=why):
            return f"held ({guard}): {why}"
        case Escalate(kind=kind, why=why):
            return f"escalate ({kind}): {why}"
        case Idle(why=why):
            return f"idle: {why}"
