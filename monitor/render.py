"""Events in words: the one vocabulary of notifications, the daily digest and /status.

:func:`describe` turns a typed event (:mod:`monitor.events`) into :class:`Words`: a title
(``error-rate firing``, ``rollback #1 succeeded: v2 → v1``), a one-line summary (why), and the
key facts in order. Each consumer lays them out its own way: the router puts the service
before the title and the facts into a notification's fields, the digest lists title and
summary under the service, the status page shows them as a timeline row. Describing never
fails: an event an older version wrote, or one this version does not know, still reads as
something. A deployment is named by its release label; without one (events older versions
wrote carry none, and the caller may know none) by the start of its id, the same way
everywhere: ``rollback #2 succeeded: deployment 1a2b3c4d → v1``, ``deployment 1a2b3c4d
failed``. The facts keep the whole id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.events import (
    AnyEvent,
    DeploymentEvent,
    EscalationEvent,
    EventKind,
    FreezeEvent,
    GenericEvent,
    HoldEvent,
    PlatformEvent,
    PrEnvironmentEvent,
    RollbackEvent,
    RuleEvent,
)
from monitor.model import format_duration

# What the digest counts, in the plural ("3 rule firings").
COUNTED: dict[EventKind, str] = {
    EventKind.RULE_FIRING: "rule firings",
    EventKind.ROLLBACK_SUCCEEDED: "rollbacks",
    EventKind.ROLLBACK_FAILED: "failed rollbacks",
    EventKind.ROLLBACK_HELD: "rollbacks held back",
    EventKind.ESCALATION: "escalations",
    EventKind.BLIND: "blind spells",
    EventKind.DEPLOYMENT_FAILED: "failed deployments",
}

SHORT_ID = 8
"""How much of a deployment id a title shows when the deployment has no release label
(Railway's ids are UUIDs: their first block tells deployments apart)."""

_RULE_TITLES: dict[EventKind, str] = {
    EventKind.RULE_FIRING: "{rule} firing",
    EventKind.RULE_RESOLVED: "{rule} resolved",
    EventKind.BLIND: "railguard is blind to {rule}",
    EventKind.SIGHT_RESTORED: "railguard sees {rule} again",
}
_ROLLBACK_STATES: dict[EventKind, str] = {
    EventKind.ROLLBACK_STARTED: "started",
    EventKind.ROLLBACK_SUCCEEDED: "succeeded",
    EventKind.ROLLBACK_FAILED: "failed",
    EventKind.ROLLBACK_ABANDONED: "abandoned",
    EventKind.ROLLBACK_DRY_RUN: "dry run",
    EventKind.REBUILD_SLOW: "past the 5-minute deploy goal",
}


@dataclass(frozen=True, slots=True)
class Words:
    """An event in words."""

    title: str  # one short line, without the service
    summary: str = ""  # one line: why, or what it means
    facts: tuple[tuple[str, str], ...] = ()  # the key facts, in order (name, value)

    @property
    def details(self) -> tuple[str, ...]:
        """The facts as lines (``took: 42s``)."""
        return tuple(f"{name}: {value}" for name, value in self.facts)

    @property
    def line(self) -> str:
        """Title and summary on one line."""
        return f"{self.title}: {self.summary}" if self.summary else self.title


def describe(event: AnyEvent, releases: Mapping[str, str] | None = None) -> Words:
    """``event`` in words; ``releases`` maps deployment ids to release labels, for events
    that do not carry their labels (older ones). Never raises."""
    try:
        return _describe(event, releases or {})
    except Exception as e:  # a value whose str() fails, say: the kind still reads
        return Words(_kind_words(event.kind), f"(unreadable: {e!r})")


def deployments_of(event: AnyEvent) -> tuple[str, ...]:
    """The deployment ids an event names (for a caller to look their release labels up)."""
    match event:
        case RollbackEvent(from_=a, to=b):
            return tuple(d for d in (a, b) if d)
        case DeploymentEvent(deployment=d):
            return (d,) if d else ()
    return ()


def short_id(deployment: str | None) -> str:
    """The start of a deployment's id, as a title shows a deployment without a release label
    (events older versions wrote carry none); the facts keep the whole id."""
    return (deployment or "")[:SHORT_ID]


def _kind_words(kind: str) -> str:
    return kind.replace("_", " ")


def _facts(*pairs: tuple[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple((name, str(value)) for name, value in pairs if value not in (None, ""))


def _describe(event: AnyEvent, releases: Mapping[str, str]) -> Words:
    def label(release: str | None, deployment: str | None) -> str:
        """A rollback's end: ``v2``, else ``deployment 1a2b3c4d``."""
        found = release or (releases.get(deployment) if deployment else None)
        if found:
            return found
        return f"deployment {short_id(deployment)}" if deployment else "?"

    def deployment_name(release: str | None, deployment: str) -> str:
        """The deployment a deployment event is about: ``v9``, else ``1a2b3c4d``."""
        return release or releases.get(deployment) or short_id(deployment) or "?"

    match event:
        case RuleEvent(kind=kind, rule=rule, reason=reason):
            title = _RULE_TITLES[kind].format(rule=rule or "?")
            return Words(title, reason, _facts(("rule", rule)))
        case RollbackEvent():
            moved = label(event.from_release, event.from_), label(event.to_release, event.to)
            return _rollback(event, *moved)
        case HoldEvent(guard=guard, why=why, evidence=evidence, deployment=deployment):
            facts = _facts(("rule", evidence.rule), ("guard", guard), ("deployment", deployment))
            return Words(f"rollback held back ({guard})", why, facts)
        case EscalationEvent(escalation=escalation, why=why, evidence=evidence, failed=failed):
            named = dict(_facts(("rule", evidence.rule), ("kind", escalation)))
            if failed is not None:
                moved = (
                    label(failed.from_release, failed.from_),
                    label(failed.to_release, failed.to),
                )
                named |= dict(_rollback(failed, *moved).facts)
            return Words(f"a person is needed ({escalation})", why, tuple(named.items()))
        case DeploymentEvent(kind=EventKind.DEPLOYMENT_FAILED):
            what = deployment_name(event.release, event.deployment)
            facts = _facts(("deployment", event.deployment))
            return Words(f"deployment {what} failed", event.status or "", facts)
        case DeploymentEvent():
            what = deployment_name(event.release, event.deployment)
            baked = f" {format_duration(event.baked_s)}" if event.baked_s is not None else ""
            summary = f"served{baked} with every rule inactive"
            if event.inferred:
                summary += " (inferred from Railway's history)"
            facts = _facts(("deployment", event.deployment))
            return Words(f"deployment {what} verified healthy", summary, facts)
        case FreezeEvent(kind=kind, reason=reason, actor=actor, until=until):
            summary = f"{actor}: {reason}".strip(": ")
            if until is not None:
                summary += f" (until {datetime.fromtimestamp(until, UTC):%Y-%m-%d %H:%M} UTC)"
            return Words(f"automatic rollback {kind.value}", summary, _facts(("actor", actor)))
        case PlatformEvent():
            return _platform(event)
        case PrEnvironmentEvent(kind=kind, environment=env, environment_id=id, template=template):
            what = "guarded" if kind is EventKind.PR_ENVIRONMENT_GUARDED else "dropped (it is gone)"
            return Words(
                f"PR environment {env} {what}",
                f"{template} in PR environment {env}",
                _facts(("environment_id", id)),
            )
        case GenericEvent(kind=kind, data=data, problem=problem):
            if problem is not None:
                return Words(_kind_words(kind), f"(unreadable: {problem})")
            why = data.get("why") or data.get("reason") or ""
            return Words(_kind_words(kind), str(why), _facts(("rule", data.get("rule"))))
    raise AssertionError(f"not an event: {event!r}")  # pragma: no cover


def _platform(event: PlatformEvent) -> Words:
    """``Railway incident: Edge failing in us-west`` / ``Railway incident over: ...``."""
    ended = event.kind is EventKind.PLATFORM_INCIDENT_ENDED
    what = event.notice if event.notice in ("incident", "maintenance") else None
    if what is None:
        title = "Railway is stable again" if ended else "Railway says it is not stable"
    else:
        title = f"Railway {what}{' over' if ended else ''}: {event.message or '?'}"
    if ended:
        lasted = f"after {format_duration(event.lasted_s)}; " if event.lasted_s is not None else ""
        summary = f"{lasted}automatic rollbacks are decided again"
    else:
        status = f"{event.status}: " if event.status else ""
        summary = f"{status}automatic rollbacks are held until Railway is stable"
    facts = _facts((what or "key", event.key), ("status", event.status), ("url", event.url))
    return Words(title, summary, facts)


def _rollback(event: RollbackEvent, moved_from: str, moved_to: str) -> Words:
    noun = "rebuild" if event.kind is EventKind.REBUILD_SLOW else "rollback"
    title = (
        f"{noun} #{event.rollback if event.rollback is not None else '?'} "
        f"{_ROLLBACK_STATES[event.kind]}: {moved_from} → {moved_to}"
    )
    took = None if event.took_s is None else format_duration(event.took_s)
    if event.kind is EventKind.ROLLBACK_STARTED:
        manual = event.trigger == "manual"
        who = (event.actor or "hand") if manual else f"rule {event.rule or '?'}"
        summary = f"by {who}: {event.reason}" if event.reason else f"by {who}"
    elif event.kind is EventKind.ROLLBACK_DRY_RUN:
        why = event.why or "would roll back"
        summary = (
            f"{why} (nothing sent): {event.reason}" if event.reason else f"{why} (nothing sent)"
        )
    else:
        after = f"{took} after the decision" if took is not None else ""
        summary = "; ".join(part for part in (event.why, after) if part)
    facts = _facts(
        ("rule", event.rule),
        ("from", event.from_),
        ("from_release", event.from_release),
        ("to", event.to),
        ("to_release", event.to_release),
        ("new", event.new),
        ("actor", event.actor),
        ("trigger", event.trigger),
        ("took", took),
    )
    return Words(title, summary, facts)
