"""The decision trail's events, typed: every kind, and each kind's data.

Everything railguard records about a service (a rule firing, a rollback and how it ended, a
guard holding one back, an escalation, a deployment verified or failed, a freeze), and about
Railway itself (its incidents), is one of these events. Writers build a typed event and
:func:`write_event` it, so a misspelt kind or a missing field is a type error; readers
:func:`parse` what the store holds. The store keeps plain JSON written by every version of
railguard that ran against it, so parsing forgives (:mod:`monitor.eventdata` writes and reads
that JSON): unknown keys are ignored, missing or odd values take their defaults, and an
unknown kind (or data that cannot be read at all) becomes a :class:`GenericEvent`, never an
exception.

The words for an event (titles and summaries for notifications, the digest and /status)
come from one place: :func:`monitor.render.describe`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from monitor.eventdata import integer, mappings, maybe_text, number, stored, text, texts

if TYPE_CHECKING:
    from monitor.store import EventRecord


class EventKind(enum.StrEnum):
    """Every kind of event railguard records (the store's ``kind`` column)."""

    RULE_FIRING = "rule_firing"
    RULE_RESOLVED = "rule_resolved"
    BLIND = "blind"
    SIGHT_RESTORED = "sight_restored"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_SUCCEEDED = "rollback_succeeded"
    ROLLBACK_FAILED = "rollback_failed"
    ROLLBACK_ABANDONED = "rollback_abandoned"
    ROLLBACK_DRY_RUN = "rollback_dry_run"
    REBUILD_SLOW = "rebuild_slow"  # a rebuild's deployment took longer than the 5-minute goal
    ROLLBACK_HELD = "rollback_held"
    ESCALATION = "escalation"
    DEPLOYMENT_FAILED = "deployment_failed"
    DEPLOYMENT_VERIFIED = "deployment_verified"
    FROZEN = "frozen"
    UNFROZEN = "unfrozen"
    PLATFORM_INCIDENT = "platform_incident"
    PLATFORM_INCIDENT_ENDED = "platform_incident_ended"
    PR_ENVIRONMENT_GUARDED = "pr_environment_guarded"
    PR_ENVIRONMENT_DROPPED = "pr_environment_dropped"


RuleKind = Literal[
    EventKind.RULE_FIRING, EventKind.RULE_RESOLVED, EventKind.BLIND, EventKind.SIGHT_RESTORED
]
RollbackKind = Literal[
    EventKind.ROLLBACK_STARTED,
    EventKind.ROLLBACK_SUCCEEDED,
    EventKind.ROLLBACK_FAILED,
    EventKind.ROLLBACK_ABANDONED,
    EventKind.ROLLBACK_DRY_RUN,
    EventKind.REBUILD_SLOW,
]
DeploymentKind = Literal[EventKind.DEPLOYMENT_FAILED, EventKind.DEPLOYMENT_VERIFIED]
FreezeKind = Literal[EventKind.FROZEN, EventKind.UNFROZEN]
PlatformKind = Literal[EventKind.PLATFORM_INCIDENT, EventKind.PLATFORM_INCIDENT_ENDED]
PrEnvironmentKind = Literal[EventKind.PR_ENVIRONMENT_GUARDED, EventKind.PR_ENVIRONMENT_DROPPED]
# Why a person is needed (an escalation's ``kind`` in the stored data).
EscalationKind = Literal["loop_breaker", "no_known_good", "retention_expired", "rollback_failed"]
# How a rollback that began ends (RollbackExecutor.finish).
RollbackEnd = Literal["succeeded", "failed", "abandoned"]

ROLLBACK_ENDED: dict[RollbackEnd, RollbackKind] = {
    "succeeded": EventKind.ROLLBACK_SUCCEEDED,
    "failed": EventKind.ROLLBACK_FAILED,
    "abandoned": EventKind.ROLLBACK_ABANDONED,
}


# -- the event families ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """What a rollback decision rested on: the rule that fired first and its samples."""

    rule: str | None = None
    reason: str | None = None
    samples: tuple[Mapping[str, Any], ...] = ()
    active: str | None = None  # the deployment judged

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        return cls(
            rule=maybe_text(data, "rule"),
            reason=maybe_text(data, "reason"),
            samples=mappings(data, "samples"),
            active=maybe_text(data, "active"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleEvent:
    """A rule fired, resolved (for any reason), went blind or sees again."""

    kind: RuleKind
    rule: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: RuleKind, data: Mapping[str, Any]) -> RuleEvent:
        return cls(kind=kind, rule=text(data, "rule"), reason=text(data, "reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackEvent:
    """A rollback began (or was only decided: a dry run) or ended."""

    kind: RollbackKind
    rollback: int | None = None  # the rollback's number
    rule: str | None = None  # the rule that triggered it (None: by hand)
    from_: str | None = None  # deployment ids
    to: str | None = None
    from_release: str | None = None  # their release labels, when they have one
    to_release: str | None = None
    new: str | None = None  # the replacement deployment Railway made
    why: str = ""
    reason: str = ""  # why it was started
    trigger: str | None = None  # auto | manual
    actor: str | None = None
    took_s: float | None = None  # from the decision to the end

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: RollbackKind, data: Mapping[str, Any]) -> RollbackEvent:
        return cls(
            kind=kind,
            rollback=integer(data, "rollback"),
            rule=maybe_text(data, "rule"),
            from_=maybe_text(data, "from"),
            to=maybe_text(data, "to"),
            from_release=maybe_text(data, "from_release"),
            to_release=maybe_text(data, "to_release"),
            new=maybe_text(data, "new"),
            why=text(data, "why"),
            reason=text(data, "reason"),
            trigger=maybe_text(data, "trigger"),
            actor=maybe_text(data, "actor"),
            took_s=number(data, "took_s"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldEvent:
    """A guard held an automatic rollback back (said once per guard and episode)."""

    kind: Literal[EventKind.ROLLBACK_HELD] = EventKind.ROLLBACK_HELD
    guard: str
    why: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    deployment: str | None = None  # deployment_in_progress: the newer deployment
    rollback: int | None = None  # cooldown, loop_breaker: the last rollback
    restored: str | None = None  # loop_breaker: the deployment that rollback restored

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HoldEvent:
        return cls(
            guard=text(data, "guard", "?"),
            why=text(data, "why"),
            evidence=Evidence.from_dict(data),
            deployment=maybe_text(data, "deployment"),
            rollback=integer(data, "rollback"),
            restored=maybe_text(data, "restored"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationEvent:
    """A person is needed (it pages): the loop breaker, no known-good release, a failed rollback.

    ``escalation`` is stored as ``kind`` (an older version's unknown value reads as it is).
    A failed rollback's escalation carries that rollback's own event in ``failed``.
    """

    kind: Literal[EventKind.ESCALATION] = EventKind.ESCALATION
    escalation: EscalationKind | str
    why: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    rollback: int | None = None
    restored: str | None = None
    failed: RollbackEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EscalationEvent:
        evidence = Evidence.from_dict(data)
        rollback, failed = integer(data, "rollback"), None
        if "from" in data or "to" in data:  # the rule, reason and number are the rollback's
            failed = RollbackEvent.from_dict(EventKind.ROLLBACK_FAILED, data)
            evidence = Evidence(samples=evidence.samples, active=evidence.active)
            rollback = None
        return cls(
            escalation=text(data, "kind", "?"),
            why=text(data, "why"),
            evidence=evidence,
            rollback=rollback,
            restored=maybe_text(data, "restored"),
            failed=failed,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentEvent:
    """A deployment failed (Railway's status), or served its bake quietly: known-good."""

    kind: DeploymentKind
    deployment: str
    release: str | None = None  # its release label, when it has one
    status: str | None = None  # deployment_failed: FAILED, CRASHED, ...
    live_since: float | None = None  # deployment_verified: the bake
    quiet_since: float | None = None
    baked_s: float | None = None
    bake_s: float | None = None
    rules: tuple[str, ...] = ()
    inferred: bool = False  # learnt from Railway's history, not watched

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: DeploymentKind, data: Mapping[str, Any]) -> DeploymentEvent:
        return cls(
            kind=kind,
            deployment=text(data, "deployment"),
            release=maybe_text(data, "release"),
            status=maybe_text(data, "status"),
            live_since=number(data, "live_since"),
            quiet_since=number(data, "quiet_since"),
            baked_s=number(data, "baked_s"),
            bake_s=number(data, "bake_s"),
            rules=texts(data, "rules"),
            inferred=data.get("inferred") is True,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FreezeEvent:
    """Automatic rollback frozen or unfrozen (by a person, or by railguard escalating)."""

    kind: FreezeKind
    reason: str = ""
    actor: str = ""
    until: float | None = None  # frozen: None is until unfrozen
    was: Mapping[str, Any] | None = None  # unfrozen: the freeze lifted

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: FreezeKind, data: Mapping[str, Any]) -> FreezeEvent:
        was = data.get("was")
        return cls(
            kind=kind,
            reason=text(data, "reason"),
            actor=text(data, "actor"),
            until=number(data, "until"),
            was=dict(was) if isinstance(was, Mapping) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformEvent:
    """Railway's own trouble began or ended: about no service, recorded once per incident."""

    kind: PlatformKind
    key: str  # one incident from the next: Railway's incident (or maintenance) id, or unstable
    notice: str | None = None  # incident | maintenance (None: "not stable", nothing named)
    message: str = ""  # Railway's words for it
    status: str | None = None  # INVESTIGATING, IDENTIFIED, MONITORING; INPROGRESS
    url: str | None = None
    since: float | None = None  # when Railway says it began
    lasted_s: float | None = None  # ended: since the start event

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: PlatformKind, data: Mapping[str, Any]) -> PlatformEvent:
        return cls(
            kind=kind,
            key=text(data, "key", "?"),
            notice=maybe_text(data, "notice"),
            message=text(data, "message"),
            status=maybe_text(data, "status"),
            url=maybe_text(data, "url"),
            since=number(data, "since"),
            lasted_s=number(data, "lasted_s"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PrEnvironmentEvent:
    """A service in a PR environment began to be guarded, or was dropped with its environment."""

    kind: PrEnvironmentKind
    environment: str  # Railway's name for the PR environment
    environment_id: str
    template: str  # the configured service it copies

    def to_dict(self) -> dict[str, Any]:
        return stored(self)

    @classmethod
    def from_dict(cls, kind: PrEnvironmentKind, data: Mapping[str, Any]) -> PrEnvironmentEvent:
        return cls(
            kind=kind,
            environment=text(data, "environment", "?"),
            environment_id=text(data, "environment_id", "?"),
            template=text(data, "template", "?"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class GenericEvent:
    """An event this version does not know (or cannot read): its kind and raw data."""

    kind: str
    data: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why it could not be read, if it is a known kind

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


Event = (
    RuleEvent
    | RollbackEvent
    | HoldEvent
    | EscalationEvent
    | DeploymentEvent
    | FreezeEvent
    | PlatformEvent
    | PrEnvironmentEvent
)
AnyEvent = Event | GenericEvent


def parse(kind: str, data: Mapping[str, Any]) -> AnyEvent:
    """The typed event for a stored ``kind`` and ``data``; never raises."""
    try:
        known = EventKind(kind)
    except ValueError:
        return GenericEvent(kind=kind, data=data if isinstance(data, Mapping) else {})
    try:
        return _parse(known, data)
    except Exception as e:  # written by hand, or by a version that stored odd values
        return GenericEvent(kind=kind, data={}, problem=repr(e))


def _parse(kind: EventKind, data: Mapping[str, Any]) -> Event:
    match kind:
        case (
            EventKind.RULE_FIRING
            | EventKind.RULE_RESOLVED
            | EventKind.BLIND
            | EventKind.SIGHT_RESTORED
        ):
            return RuleEvent.from_dict(kind, data)
        case (
            EventKind.ROLLBACK_STARTED
            | EventKind.ROLLBACK_SUCCEEDED
            | EventKind.ROLLBACK_FAILED
            | EventKind.ROLLBACK_ABANDONED
            | EventKind.ROLLBACK_DRY_RUN
            | EventKind.REBUILD_SLOW
        ):
            return RollbackEvent.from_dict(kind, data)
        case EventKind.ROLLBACK_HELD:
            return HoldEvent.from_dict(data)
        case EventKind.ESCALATION:
            return EscalationEvent.from_dict(data)
        case EventKind.DEPLOYMENT_FAILED | EventKind.DEPLOYMENT_VERIFIED:
            return DeploymentEvent.from_dict(kind, data)
        case EventKind.FROZEN | EventKind.UNFROZEN:
            return FreezeEvent.from_dict(kind, data)
        case EventKind.PLATFORM_INCIDENT | EventKind.PLATFORM_INCIDENT_ENDED:
            return PlatformEvent.from_dict(kind, data)
        case EventKind.PR_ENVIRONMENT_GUARDED | EventKind.PR_ENVIRONMENT_DROPPED:
            return PrEnvironmentEvent.from_dict(kind, data)


def from_record(record: EventRecord) -> AnyEvent:
    """The typed event of a stored one."""
    return parse(record.kind, record.data)


def rule_of(event: AnyEvent) -> str | None:
    """The rule an event is about, if it is about one."""
    match event:
        case RuleEvent(rule=rule) | RollbackEvent(rule=rule):
            return rule or None
        case HoldEvent(evidence=evidence):
            return evidence.rule
        case EscalationEvent(evidence=evidence, failed=failed):
            return evidence.rule or (failed.rule if failed is not None else None)
        case GenericEvent(data=data):
            rule = data.get("rule")
            return rule if isinstance(rule, str) and rule else None
    return None


class EventSink(Protocol):
    """What :func:`write_event` writes to (the store)."""

    async def record_event(
        self, service: str | None, kind: str, at: float, data: Mapping[str, Any]
    ) -> int: ...


async def write_event(store: EventSink, service: str | None, event: Event, at: float) -> int:
    """Append a typed event to the decision trail; returns its id."""
    return await store.record_event(service, event.kind.value, at, event.to_dict())
