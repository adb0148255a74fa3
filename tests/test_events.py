"""Typed events and their one vocabulary: every kind in words, old data, unknown kinds, and
the router, the digest and /status saying the same thing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.channels.base import ChannelConfig
from monitor.alerts.digest import Digest
from monitor.alerts.model import Notification, Severity
from monitor.alerts.outbox import Outbox
from monitor.alerts.router import Router
from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.events import (
    DeploymentEvent,
    EscalationEvent,
    Event,
    EventKind,
    Evidence,
    FreezeEvent,
    GenericEvent,
    HoldEvent,
    PlatformEvent,
    PrEnvironmentEvent,
    RollbackEvent,
    RuleEvent,
    parse,
    rule_of,
    write_event,
)
from monitor.planning import build_plan
from monitor.render import describe
from monitor.status import Labels, words
from monitor.store import EventRecord, open_store
from monitor.store.sqlite import SQLiteStore
from monitor.telemetry import Metrics

FAILED = RollbackEvent(
    kind=EventKind.ROLLBACK_FAILED,
    rollback=4,
    rule="error-rate",
    from_="dep-2",
    to="dep-1",
    from_release="v2",
    to_release="v1",
    new="dep-3",
    why="still failing",
    reason="5xx",
    took_s=125.0,
)
EVIDENCE = Evidence(rule="error-rate", reason="5xx", samples=({"at": 1.0, "value": 0.5},))

# Every kind with full data: (event, title, summary, some facts).
FULL: list[tuple[Event, str, str, dict[str, str]]] = [
    (
        RuleEvent(kind=EventKind.RULE_FIRING, rule="error-rate", reason="7% > 5%"),
        "error-rate firing",
        "7% > 5%",
        {"rule": "error-rate"},
    ),
    (
        RuleEvent(kind=EventKind.RULE_RESOLVED, rule="error-rate", reason="healthy again"),
        "error-rate resolved",
        "healthy again",
        {"rule": "error-rate"},
    ),
    (
        RuleEvent(kind=EventKind.BLIND, rule="memory-high", reason="no samples for 1m"),
        "railguard is blind to memory-high",
        "no samples for 1m",
        {},
    ),
    (
        RuleEvent(kind=EventKind.SIGHT_RESTORED, rule="memory-high", reason="a sample"),
        "railguard sees memory-high again",
        "a sample",
        {},
    ),
    (
        RollbackEvent(
            kind=EventKind.ROLLBACK_STARTED,
            rollback=4,
            rule="error-rate",
            from_="dep-2",
            to="dep-1",
            from_release="v2",
            to_release="v1",
            why="5xx",
            reason="5xx",
            trigger="auto",
            actor="railguard",
        ),
        "rollback #4 started: v2 → v1",
        "by rule error-rate: 5xx",
        {"from": "dep-2", "to_release": "v1", "trigger": "auto"},
    ),
    (
        RollbackEvent(
            kind=EventKind.ROLLBACK_SUCCEEDED,
            rollback=4,
            from_release="v2",
            to_release="v1",
            why="recovered",
            took_s=42.0,
        ),
        "rollback #4 succeeded: v2 → v1",
        "recovered; 42s after the decision",
        {"took": "42s"},
    ),
    (FAILED, "rollback #4 failed: v2 → v1", "still failing; 2m5s after the decision", {}),
    (
        RollbackEvent(kind=EventKind.ROLLBACK_ABANDONED, rollback=5, to="dep-1", why="never sent"),
        "rollback #5 abandoned: ? → deployment dep-1",
        "never sent",
        {"to": "dep-1"},
    ),
    (
        RollbackEvent(
            kind=EventKind.ROLLBACK_DRY_RUN,
            rollback=6,
            from_release="v2",
            to_release="v1",
            why="would roll back",
            reason="5xx",
        ),
        "rollback #6 dry run: v2 → v1",
        "would roll back (nothing sent): 5xx",
        {},
    ),
    (
        HoldEvent(guard="cooldown", why="rollback #3 was 2m ago", evidence=EVIDENCE, rollback=3),
        "rollback held back (cooldown)",
        "rollback #3 was 2m ago",
        {"rule": "error-rate", "guard": "cooldown"},
    ),
    (
        EscalationEvent(
            escalation="loop_breaker",
            why="the release restored by rollback #1 fails too",
            evidence=EVIDENCE,
            rollback=1,
            restored="dep-1",
        ),
        "a person is needed (loop_breaker)",
        "the release restored by rollback #1 fails too",
        {"kind": "loop_breaker", "rule": "error-rate"},
    ),
    (
        EscalationEvent(escalation="rollback_failed", why="still failing", failed=FAILED),
        "a person is needed (rollback_failed)",
        "still failing",
        {"kind": "rollback_failed", "to_release": "v1", "took": "2m5s"},
    ),
    (
        DeploymentEvent(
            kind=EventKind.DEPLOYMENT_FAILED, deployment="dep-9", release="v9", status="CRASHED"
        ),
        "deployment v9 failed",
        "CRASHED",
        {"deployment": "dep-9"},
    ),
    (
        DeploymentEvent(
            kind=EventKind.DEPLOYMENT_VERIFIED,
            deployment="dep-1",
            release="v1",
            live_since=1.0,
            quiet_since=2.0,
            baked_s=600.0,
            bake_s=600.0,
            rules=("error-rate > 0.05 for 30s",),
        ),
        "deployment v1 verified healthy",
        "served 10m with every rule inactive",
        {"deployment": "dep-1"},
    ),
    (
        FreezeEvent(kind=EventKind.FROZEN, reason="incident 42", actor="manual:ana", until=0.0),
        "automatic rollback frozen",
        "manual:ana: incident 42 (until 1970-01-01 00:00 UTC)",
        {"actor": "manual:ana"},
    ),
    (
        FreezeEvent(
            kind=EventKind.UNFROZEN, reason="done", actor="manual:ana", was={"reason": "x"}
        ),
        "automatic rollback unfrozen",
        "manual:ana: done",
        {},
    ),
    (
        PlatformEvent(
            kind=EventKind.PLATFORM_INCIDENT,
            key="inc-7",
            notice="incident",
            message="Edge network failing in every region",
            status="INVESTIGATING",
            url="https://status.railway.com/incidents/inc-7",
            since=1.0,
        ),
        "Railway incident: Edge network failing in every region",
        "INVESTIGATING: automatic rollbacks are held until Railway is stable",
        {"incident": "inc-7", "url": "https://status.railway.com/incidents/inc-7"},
    ),
    (
        PlatformEvent(
            kind=EventKind.PLATFORM_INCIDENT_ENDED,
            key="inc-7",
            notice="incident",
            message="Edge network failing in every region",
            status="INVESTIGATING",
            lasted_s=2520.0,
        ),
        "Railway incident over: Edge network failing in every region",
        "after 42m; automatic rollbacks are decided again",
        {"incident": "inc-7"},
    ),
    (
        PrEnvironmentEvent(
            kind=EventKind.PR_ENVIRONMENT_GUARDED,
            environment="web-pr-7",
            environment_id="env-7",
            template="web",
        ),
        "PR environment web-pr-7 guarded",
        "web in PR environment web-pr-7",
        {"environment_id": "env-7"},
    ),
    (
        PrEnvironmentEvent(
            kind=EventKind.PR_ENVIRONMENT_DROPPED,
            environment="web-pr-7",
            environment_id="env-7",
            template="web",
        ),
        "PR environment web-pr-7 dropped (it is gone)",
        "web in PR environment web-pr-7",
        {"environment_id": "env-7"},
    ),
    (
        RollbackEvent(
            kind=EventKind.REBUILD_SLOW,
            rollback=7,
            from_release="v2",
            to_release="v1",
            new="dep-8",
            why="the rebuild of commit abc (dep-8) has been deploying for 5m3s, past the 5m goal",
            took_s=310.0,
        ),
        "rebuild #7 past the 5-minute deploy goal: v2 → v1",
        "the rebuild of commit abc (dep-8) has been deploying for 5m3s, past the 5m goal; "
        "5m10s after the decision",
        {"new": "dep-8", "took": "5m10s"},
    ),
    (
        EscalationEvent(
            escalation="retention_expired",
            why="retention ran out: ... a rebuild of commit abc would bring it back",
        ),
        "a person is needed (retention_expired)",
        "retention ran out: ... a rebuild of commit abc would bring it back",
        {"kind": "retention_expired"},
    ),
]

# Railway's trouble without an incident: maintenance named, or nothing named.
PLATFORM_WORDS = [
    (
        PlatformEvent(
            kind=EventKind.PLATFORM_INCIDENT,
            key="m-1",
            notice="maintenance",
            message="Database upgrade",
            status="INPROGRESS",
        ),
        "Railway maintenance: Database upgrade",
        "INPROGRESS: automatic rollbacks are held until Railway is stable",
    ),
    (
        PlatformEvent(kind=EventKind.PLATFORM_INCIDENT, key="unstable"),
        "Railway says it is not stable",
        "automatic rollbacks are held until Railway is stable",
    ),
    (
        PlatformEvent(kind=EventKind.PLATFORM_INCIDENT_ENDED, key="unstable"),
        "Railway is stable again",
        "automatic rollbacks are decided again",
    ),
]


@pytest.mark.parametrize(("event", "title", "summary"), PLATFORM_WORDS)
def test_railways_trouble_in_words_whatever_it_names(
    event: PlatformEvent, title: str, summary: str
) -> None:
    said = describe(event)
    assert (said.title, said.summary) == (title, summary)
    assert parse(event.kind, event.to_dict()) == event


def test_the_table_covers_every_kind() -> None:
    assert {event.kind for event, *_ in FULL} == set(EventKind)


@pytest.mark.parametrize(("event", "title", "summary", "facts"), FULL, ids=lambda v: str(v)[:40])
def test_every_kind_in_words_and_back_from_the_store(
    event: Event, title: str, summary: str, facts: dict[str, str]
) -> None:
    said = describe(event)
    assert (said.title, said.summary) == (title, summary)
    assert facts.items() <= dict(said.facts).items()
    assert said.details == tuple(f"{k}: {v}" for k, v in said.facts)
    stored = event.to_dict()
    assert "kind" not in stored or isinstance(event, EscalationEvent)
    assert parse(event.kind, stored) == event  # what is written reads back the same


@pytest.mark.parametrize("kind", list(EventKind))
@pytest.mark.parametrize(
    "data",
    [
        {},  # an older version wrote less
        {"rule": 7, "why": None, "took_s": "soon", "rollback": "x", "samples": "no", "extra": 1},
        {"rollback": float("inf"), "baked_s": float("nan"), "until": True, "was": [1]},
    ],
)
def test_old_or_odd_data_still_reads(kind: EventKind, data: dict[str, Any]) -> None:
    event = parse(kind, data)
    assert not isinstance(event, GenericEvent)  # a known kind stays typed
    said = describe(event)
    assert said.title
    assert "unreadable" not in said.summary
    assert "nan" not in said.line
    assert "inf" not in said.line


def test_an_unknown_kind_is_a_generic_event_never_an_error() -> None:
    event = parse("guard_held", {"guard": "cooldown", "why": "too soon", "rule": "r"})
    assert event == GenericEvent(
        kind="guard_held", data={"guard": "cooldown", "why": "too soon", "rule": "r"}
    )
    said = describe(event)
    assert (said.title, said.summary) == ("guard held", "too soon")
    assert rule_of(event) == "r"
    assert describe(parse("x", {})).title == "x"


def test_unreadable_data_degrades_to_the_kind() -> None:
    class Odd:
        def __str__(self) -> str:
            raise ValueError("corrupt")

    event = parse("rule_firing", {"rule": Odd()})
    assert isinstance(event, GenericEvent)
    said = describe(event)
    assert said.title == "rule firing"
    assert "unreadable" in said.summary


def test_release_labels_come_from_the_event_or_else_the_lookup() -> None:
    old = parse("rollback_succeeded", {"rollback": 2, "from": "dep-2", "to": "dep-1"})
    assert describe(old).title == "rollback #2 succeeded: deployment dep-2 → deployment dep-1"
    said = describe(old, {"dep-1": "v1", "dep-2": "v2"})
    assert said.title == "rollback #2 succeeded: v2 → v1"
    assert describe(parse("deployment_failed", {"deployment": "d"}), {"d": "v3"}).title == (
        "deployment v3 failed"
    )


# Deployment events as a version before release labels stored them: ids only. Each with its
# title, and its title when the caller knows the labels (v7, v6) from elsewhere (the store).
OLD_ID, OLD_TO = "8f1c2b9e-4a5d-4c3b-9a7e-2f6d1c0b5a49", "0d3e6f2a-7b1c-4e9d-8a5f-3c2b1a0e9d87"
OLD_DATA: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "deployment_failed",
        {"deployment": OLD_ID, "status": "CRASHED"},
        "deployment 8f1c2b9e failed",
        "deployment v7 failed",
    ),
    (
        "deployment_verified",
        {"deployment": OLD_ID, "live_since": 1.0, "baked_s": 600.0, "rules": ["r"]},
        "deployment 8f1c2b9e verified healthy",
        "deployment v7 verified healthy",
    ),
    (
        "rollback_succeeded",
        {"rollback": 3, "rule": "error-rate", "from": OLD_ID, "to": OLD_TO, "why": "recovered"},
        "rollback #3 succeeded: deployment 8f1c2b9e → deployment 0d3e6f2a",
        "rollback #3 succeeded: v7 → v6",
    ),
    (
        "escalation",
        {"kind": "rollback_failed", "why": "still failing", "from": OLD_ID, "to": OLD_TO},
        "a person is needed (rollback_failed)",
        "a person is needed (rollback_failed)",
    ),
]


@pytest.mark.parametrize(
    ("kind", "data", "title", "labelled"), OLD_DATA, ids=[row[0] for row in OLD_DATA]
)
def test_an_old_deployment_event_names_its_deployment_by_a_short_id(
    kind: str, data: dict[str, Any], title: str, labelled: str
) -> None:
    event = parse(kind, data)
    said = describe(event)
    assert said.title == title
    assert OLD_ID not in said.line  # named by the start of its id, clearly a deployment
    assert OLD_ID in dict(said.facts).values()  # the facts keep the whole id
    assert describe(event, {OLD_ID: "v7", OLD_TO: "v6"}).title == labelled


# -- one vocabulary: the router, the digest and /status say the same -------------------------

CONFIG = """
[[services]]
name = "web"
tier = "production"
health_url = "http://127.0.0.1:9/health"
[tiers.production]
rules = ["health-failing"]

[[services]]
name = "api"
tier = "staging"
health_url = "http://127.0.0.1:9/health"
[tiers.staging]
rules = ["health-failing"]
"""


class Recorder:
    def __init__(self) -> None:
        self.got: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.got.append(notification)


@dataclass
class Consumers:
    store: SQLiteStore
    router: Router
    digest: Digest
    clock: FakeClock


@pytest.fixture
async def consumers(clock: FakeClock, tmp_path: Path, write) -> AsyncIterator[Consumers]:  # type: ignore[no-untyped-def]
    plan = build_plan(write(CONFIG), load_environment({}), {})
    store = await open_store(tmp_path / "state.db")
    metrics = Metrics(CollectorRegistry())
    channels = {"all": ChannelConfig(min_severity=Severity.INFO)}
    outbox = Outbox(store, {"all": Recorder()}, clock=clock, metrics=metrics)
    services = {s.name: s for s in plan.services}
    router = Router(store, outbox, channels, services, clock=clock, metrics=metrics)
    digest = Digest(store, outbox, channels, list(services.values()), clock=clock)
    yield Consumers(store, router, digest, clock)
    await store.close()


@pytest.mark.parametrize(
    "event",
    [
        FULL[0][0],  # rule_firing
        FULL[5][0],  # rollback_succeeded
        FULL[6][0],  # rollback_failed
        FULL[11][0],  # escalation after a failed rollback
        FULL[-2][0],  # rebuild_slow
        parse(*OLD_DATA[2][:2]),  # an older version's rollback: no release labels
        parse(*OLD_DATA[3][:2]),  # an older version's escalation after a failed rollback
    ],
    ids=lambda e: str(e.kind),
)
async def test_router_digest_and_status_use_the_same_words(
    consumers: Consumers, event: Event | GenericEvent
) -> None:
    store, at = consumers.store, consumers.clock.time()
    said = describe(event)
    # Production: a notification at once.
    web_id = await write_event(store, "web", event, at)
    await consumers.router.route_new()
    (queued,) = [m for m in await store.outbox("all") if m.payload["id"] == f"event-{web_id}"]
    note = Notification.from_dict(queued.payload)
    assert (note.title, note.text) == (f"web: {said.title}", said.summary)
    assert dict(note.fields) == dict(said.facts)
    # /status: the timeline row of the same event.
    (record,) = [e for e in await store.events("web") if e.id == web_id]
    row = await words(record, Labels(store))
    assert (row.title, row.summary) == (said.title, said.summary)
    # Staging: the daily digest lists it in the same words.
    await write_event(store, "api", event, at)
    await consumers.clock.advance(1)
    summary = await consumers.digest.send_now("staging")
    assert summary is not None
    assert said.line in summary.text


def test_a_stored_record_reads_as_its_typed_event() -> None:
    record = EventRecord(id=1, service="web", kind="rule_firing", at=1.0, data={"rule": "r"})
    assert parse(record.kind, record.data) == RuleEvent(kind=EventKind.RULE_FIRING, rule="r")
