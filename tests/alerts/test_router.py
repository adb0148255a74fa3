"""The router: tier policy decides who hears what, and when."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.alerts.channels.base import ChannelConfig
from monitor.alerts.model import Notification, Severity, Status
from monitor.alerts.outbox import Outbox
from monitor.alerts.router import Router
from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.errors import StoreError
from monitor.planning import build_plan
from monitor.store import open_store
from monitor.store.sqlite import SQLiteStore
from monitor.telemetry import Metrics

CONFIG = """
[[services]]
name = "web-production"
tier = "production"
health_url = "http://127.0.0.1:9/health"
[tiers.production]
rules = ["health-failing"]

[[services]]
name = "web-staging"
tier = "staging"
health_url = "http://127.0.0.1:9/health"
[tiers.staging]
rules = ["health-failing"]

[[services]]
name = "web-preview"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


class Recorder:
    """A channel that keeps what it is sent (the outbox delivers to it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.got.append(notification)


@dataclass
class World:
    store: SQLiteStore
    router: Router
    outbox: Outbox
    metrics: Metrics
    clock: FakeClock

    async def record(self, service: str, event: str, **data: object) -> None:
        await self.store.record_event(service, event, self.clock.time(), data)

    async def queued(self, channel: str = "pager") -> list[str]:
        return [m.payload["title"] for m in reversed(await self.store.outbox(channel))]

    def suppressed(self, tier: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "railguard_alerts_suppressed_total", {"tier": tier, "reason": reason}
        )
        return value or 0.0


@pytest.fixture
async def world(clock: FakeClock, tmp_path: Path, write) -> AsyncIterator[World]:  # type: ignore[no-untyped-def]
    plan = build_plan(write(CONFIG), load_environment({}), {})
    store = await open_store(tmp_path / "state.db")
    metrics = Metrics(CollectorRegistry())
    channels = {
        "pager": ChannelConfig(min_severity=Severity.CRITICAL),
        "chat": ChannelConfig(tiers=("staging",)),
    }
    outbox = Outbox(store, {n: Recorder(n) for n in channels}, clock=clock, metrics=metrics)
    services = {s.name: s for s in plan.services}
    router = Router(
        store,
        outbox,
        channels,
        services,
        clock=clock,
        metrics=metrics,
        status_url="http://railguard/status",
    )
    yield World(store, router, outbox, metrics, clock)
    await store.close()


def _new_process(world: World, decided: Callable[[str], float | None] | None = None) -> Router:
    """The router of a restarted railguard (or of a new leader) on the same store."""
    return Router(
        world.store,
        world.outbox,
        world.router.channels,
        world.router.services,
        clock=world.clock,
        metrics=world.metrics,
        decided=decided,
    )


async def test_production_pages_at_once_staging_waits_preview_only_counts(world: World) -> None:
    for service in ("web-production", "web-staging", "web-preview"):
        await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    assert await world.router.route_new() == 3
    assert await world.queued("pager") == ["web-production: health-failing firing"]
    assert await world.queued("chat") == []  # staging is for the digest; chat wants staging
    assert world.suppressed("staging", "digest") == 1
    assert world.suppressed("preview", "off") == 1
    (message,) = await world.store.outbox("pager")
    note = Notification.from_dict(message.payload)
    assert (note.severity, note.status, note.tier) == (
        Severity.CRITICAL,
        Status.FIRING,
        "production",
    )
    assert note.key == "railguard/web-production/health-failing"
    assert note.text == "status 500"
    assert note.url == "http://railguard/status"


async def test_one_incident_from_firing_through_rollback_to_resolution(world: World) -> None:
    service = "web-production"
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rule_firing", rule="health-failing", reason="again")  # dup
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.record(service, "rollback_succeeded", rule="health-failing", to="d1", took_s=42)
    await world.record(service, "rule_resolved", rule="health-failing")
    await world.router.route_new()
    messages = [
        Notification.from_dict(m.payload) for m in reversed(await world.store.outbox("pager"))
    ]
    assert [m.kind for m in messages] == [
        "rule_firing",
        "rollback_started",
        "rollback_succeeded",
        "rule_resolved",
    ]
    assert {m.key for m in messages} == {"railguard/web-production/health-failing"}
    assert [m.status for m in messages][-2:] == [Status.RESOLVED, Status.RESOLVED]
    assert messages[2].fields["took"] == "42s"
    assert len({m.started_at for m in messages}) == 1  # one incident, one start
    assert world.suppressed("production", "duplicate") == 1


async def test_symptoms_are_held_while_a_rollback_runs(world: World) -> None:
    await _rollback_running(world)
    await world.record("web-production", "rule_firing", rule="memory-high")
    await world.router.route_new()
    assert await world.queued() == []
    assert world.suppressed("production", "held") == 1


async def test_routing_resumes_after_a_restart_without_repeats(world: World) -> None:
    await world.record("web-production", "rule_firing", rule="health-failing")
    await world.router.route_new()
    await world.record("web-production", "escalation", kind="rollback_failed", why="it broke")
    router = _new_process(world)  # a new process
    assert await router.route_new() == 1  # only the new event
    assert await world.queued() == [
        "web-production: health-failing firing",
        "web-production: a person is needed (rollback_failed)",
    ]


async def test_the_daily_digest_is_sent_once_and_caught_up_after_downtime(world: World) -> None:
    from monitor.alerts.digest import Digest

    def digest() -> Digest:
        return Digest(
            world.store,
            world.outbox,
            world.router.channels,
            list(world.router.services.values()),
            clock=world.clock,
        )

    clock = world.clock  # 2023-11-14 22:13 UTC; staging's digest_at is 09:00
    assert await digest().send_due() == []  # the first start only opens the period
    await world.record("web-staging", "rule_firing", rule="health-failing", reason="status 503")
    await world.record("web-staging", "rollback_succeeded", rule="health-failing", to="d1")
    await world.record("web-production", "rule_firing", rule="health-failing")  # not staging's
    await world.router.route_new()
    assert await world.queued("chat") == []  # staging's incident waits for the digest
    await clock.advance(10 * 3600 + 60)  # 2023-11-15 08:14: not yet
    assert await digest().send_due() == []
    await clock.advance(3600)  # 09:14
    (summary,) = await digest().send_due()
    assert summary.title == "staging daily summary 2023-11-15: 1 incidents, 1 rollbacks"
    assert "web-staging: 1 rollbacks, 1 rule firings" in summary.text
    assert "status 503" in summary.text
    assert summary.fields["rule firings"] == "1"
    assert await world.queued("chat") == [summary.title]
    assert await world.queued("pager") == ["web-production: health-failing firing"]  # warning
    assert await digest().send_due() == []  # a restart the same day sends nothing again
    await clock.advance(3 * 86400)  # down for three days: one catch-up digest
    (late,) = await digest().send_due()
    assert late.title.startswith("staging daily summary 2023-11-18: 0 incidents")
    assert "web-staging: quiet" in late.text


async def test_an_open_incident_is_repeated_until_it_resolves(world: World) -> None:
    await world.record("web-production", "escalation", kind="rollback_failed", why="it broke")
    await world.router.route_new()
    assert await world.router.remind() == 0
    await world.clock.advance(3600)
    assert await world.router.remind() == 1
    assert await world.router.remind() == 0  # not again until another interval
    await world.record("web-production", "rule_firing", rule="health-failing")
    await world.router.route_new()
    await world.record("web-production", "rule_resolved", rule="health-failing")
    await world.router.route_new()
    await world.clock.advance(3600)
    assert await world.router.remind() == 1  # the escalation only: the rule resolved
    titles = await world.queued()
    assert titles[1] == "still open after 1h: web-production: a person is needed (rollback_failed)"
    assert titles[-1].startswith("still open after 2h: ")


async def test_open_incidents_and_their_reminders_survive_a_restart(world: World) -> None:
    await world.record("web-production", "escalation", kind="rollback_failed", why="it broke")
    await world.record("web-production", "rule_firing", rule="health-failing")
    await world.record("web-production", "rule_resolved", rule="health-failing")
    await world.router.route_new()
    router = _new_process(world)  # a new process
    assert await router.restore() == 3
    assert await world.queued() == [
        "web-production: a person is needed (rollback_failed)",
        "web-production: health-failing firing",
        "web-production: health-failing resolved",
    ]  # nothing sent again
    await world.clock.advance(3600)
    assert await router.remind() == 1  # the escalation is still open; the rule is not


async def test_a_digest_sent_early_covers_up_to_now_and_the_scheduled_one_goes_on(
    world: World,
) -> None:
    from monitor.alerts.digest import Digest

    def digest() -> Digest:
        services = list(world.router.services.values())
        channels = world.router.channels
        return Digest(world.store, world.outbox, channels, services, clock=world.clock)

    clock = world.clock  # 2023-11-14 22:13 UTC; staging's digest_at is 09:00
    assert await digest().send_now("preview") is None  # not a digest tier
    await world.record("web-staging", "rule_firing", rule="health-failing", reason="status 503")
    await clock.advance(1)
    early = await digest().send_now("staging")  # no digest yet: from the last 09:00
    assert early is not None
    assert early.title == "staging daily summary 2023-11-14: 1 incidents, 0 rollbacks"
    assert early.id == "digest-staging-2023-11-14-early-1700000001"
    await clock.advance(60)
    await world.record("web-staging", "rollback_succeeded", rule="health-failing", to="d1")
    await clock.advance(11 * 3600)  # 2023-11-15 09:14: the scheduled digest, from the early one
    (scheduled,) = await digest().send_due()
    assert scheduled.title == "staging daily summary 2023-11-15: 0 incidents, 1 rollbacks"
    assert await world.queued("chat") == [early.title, scheduled.title]


# -- Railway's own incidents: about no service --------------------------------------------------


async def record_platform(world: World, kind: str, **data: object) -> None:
    await world.store.record_event(None, kind, world.clock.time(), data)


async def test_railways_incident_is_one_incident_told_to_every_channel_that_takes_it(
    world: World,
) -> None:
    incident = {"key": "inc-1", "notice": "incident", "message": "Edge failing"}
    await record_platform(world, "platform_incident", status="INVESTIGATING", **incident)
    await record_platform(world, "platform_incident", status="MONITORING", **incident)  # dup
    await world.clock.advance(600)
    await record_platform(world, "platform_incident_ended", lasted_s=600, **incident)
    assert await world.router.route_new() == 3
    # A warning, never a page (the pager takes critical only); no tier, so the staging-only
    # chat channel hears it too: every guarded tier's rollbacks were held.
    assert await world.queued("pager") == []
    messages = [
        Notification.from_dict(m.payload) for m in reversed(await world.store.outbox("chat"))
    ]
    assert [(m.title, m.status) for m in messages] == [
        ("Railway incident: Edge failing", Status.FIRING),
        ("Railway incident over: Edge failing", Status.RESOLVED),
    ]
    assert {m.key for m in messages} == {"railguard/railway/platform_incident"}
    assert {m.severity for m in messages} == {Severity.WARNING}
    assert {(m.service, m.tier) for m in messages} == {(None, None)}
    assert messages[1].started_at == messages[0].at
    assert world.suppressed("railway", "duplicate") == 1
    await world.clock.advance(7200)
    assert await world.router.remind() == 0  # over: nothing to remind of


async def test_an_open_railway_incident_survives_a_router_restart(world: World) -> None:
    await record_platform(world, "platform_incident", key="inc-1", notice="incident", message="x")
    await world.router.route_new()
    router = _new_process(world)
    await router.restore()
    await record_platform(world, "platform_incident", key="inc-1", notice="incident", message="x")
    await router.route_new()
    assert await world.queued("chat") == ["Railway incident: x"]  # not told twice


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ({"production": ("critical", "immediate", True)}, Severity.WARNING),
        ({"production": ("info", "immediate", True)}, Severity.INFO),
        ({"production": ("critical", "digest", True)}, None),  # nobody is told at once
        ({"production": ("critical", "immediate", False)}, None),  # nothing of it is held
        (
            {"production": ("critical", "off", True), "staging": ("info", "immediate", True)},
            Severity.INFO,
        ),
    ],
)
def test_how_loudly_railways_incident_is_told(
    tiers: dict[str, tuple[str, str, bool]], expected: Severity | None, write: Callable[..., Path]
) -> None:
    from monitor.alerts.router import platform_severity

    text = ""
    for tier, (severity, delivery, auto) in tiers.items():
        text += (
            f'[[services]]\nname = "{tier}"\ntier = "{tier}"\n'
            f'health_url = "http://127.0.0.1:9/health"\n'
            f'[tiers.{tier}]\nseverity = "{severity}"\ndelivery = "{delivery}"\n'
            f'auto_rollback = {"true" if auto else "false"}\nrules = ["health-failing"]\n\n'
        )
    plan = build_plan(write(text), load_environment({}), {})
    assert platform_severity(plan.services) == expected


async def test_a_railway_incident_nobody_is_told_of_at_once_is_only_counted(
    clock: FakeClock, tmp_path: Path, write: Callable[..., Path]
) -> None:
    plan = build_plan(
        write(CONFIG.replace('tier = "production"', 'tier = "staging"')), load_environment({}), {}
    )
    store = await open_store(tmp_path / "quiet.db")
    try:
        metrics = Metrics(CollectorRegistry())
        channels = {"all": ChannelConfig()}
        outbox = Outbox(store, {"all": Recorder("all")}, clock=clock, metrics=metrics)
        services = {s.name: s for s in plan.services}
        router = Router(store, outbox, channels, services, clock=clock, metrics=metrics)
        assert router.platform_severity is None
        await store.record_event(None, "platform_incident", clock.time(), {"key": "unstable"})
        await store.record_event(None, "rule_firing", clock.time(), {"rule": "r"})  # no service
        await router.route_new()
        assert await store.outbox("all") == []
        value = metrics.registry.get_sample_value(
            "railguard_alerts_suppressed_total", {"tier": "railway", "reason": "off"}
        )
        assert value == 1
    finally:
        await store.close()


# -- a rule firing waits for the controller's decision ----------------------------------------


async def _rollback_running(world: World, service: str = "web-production") -> int:
    """A rollback of ``service`` in the store, as the controller's intent leaves it; its id."""
    now = world.clock.time()
    await world.store.upsert_deployment(
        service, id="d2", status="SUCCESS", created_at=now, can_rollback=True, meta={},
        seen_at=now, live=True,
    )  # fmt: skip
    record = await world.store.begin_rollback(
        service, "d2", "d1", "auto", "railguard", "health-failing", "x", {}, now, dry_run=False
    )
    return record.id


async def _rollback_succeeds(world: World, id: int, service: str = "web-production") -> None:
    """The rollback ``id`` reached Railway and recovered; its success recorded."""
    now = world.clock.time()
    await world.store.advance_rollback(id, "sent", at=now)
    await world.store.advance_rollback(id, "succeeded", at=now, new_deployment="d3")
    await world.record(service, "rollback_succeeded", rule="health-failing", to="d1")


async def test_a_firing_waits_for_the_controllers_decision_and_is_held_by_its_rollback(
    world: World,
) -> None:
    """The moment between a rule firing and the controller's intent (it asks Railway first):
    routing waits for the decision instead of paging a symptom the rollback then holds."""
    decided: dict[str, float] = {}
    world.router.decided = decided.get
    service = "web-production"
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record("web-staging", "rule_firing", rule="health-failing")  # behind it
    await world.clock.advance(1.0)
    assert await world.router.route_new() == 1  # undecided: it waits (web-staging does not)
    assert await world.queued() == []
    decided[service] = world.clock.time() - 5.0  # an older decision does not count
    assert await world.router.route_new() == 0
    await _rollback_running(world)
    decided[service] = world.clock.time()  # decided: the intent is in the store
    assert await world.router.route_new() == 1
    assert await world.queued() == []
    assert world.suppressed("production", "held") == 1
    # Its end, while the rollback runs, is the rollback's to tell too.
    await world.record(service, "rule_resolved", rule="health-failing")
    await world.router.route_new()
    assert await world.queued() == []
    assert world.suppressed("production", "held") == 2


async def test_a_controller_that_cannot_decide_does_not_silence_a_firing(world: World) -> None:
    world.router.decided = {}.get  # never decides (Railway down, say)
    await world.record("web-production", "rule_firing", rule="health-failing", reason="500")
    interval = world.router.services["web-production"].interval
    longest = max(r.for_ for r in world.router.services["web-production"].rules)
    await world.clock.advance(longest + 2 * interval + 29.0)
    assert await world.router.route_new() == 0
    await world.clock.advance(1.0)
    assert await world.router.route_new() == 1
    assert await world.queued() == ["web-production: health-failing firing"]


@pytest.mark.parametrize(
    ("outcome", "told"), [("succeeded", False), ("failed", True)], ids=["succeeded", "failed"]
)
async def test_a_held_symptoms_end_is_told_only_when_no_rollback_closed_its_incident(
    world: World, outcome: str, told: bool
) -> None:
    service = "web-production"
    id = await _rollback_running(world)
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.router.route_new()
    now = world.clock.time()
    if outcome == "succeeded":
        await _rollback_succeeds(world, id, service)
    else:
        await world.store.advance_rollback(id, "failed", at=now, error="refused")
        await world.record(service, "rollback_failed", rule="health-failing", to="d1")
    await world.record(service, "rule_resolved", rule="health-failing")
    await world.router.route_new()
    kinds = [Notification.from_dict(m.payload).kind for m in await world.store.outbox("pager")]
    assert ("rule_resolved" in kinds) is told, kinds
    assert "rule_firing" not in kinds


async def test_a_firing_held_under_another_rules_rollback_is_closed_by_its_success(
    world: World,
) -> None:
    """Two rules fire on one bad release: the first's rollback holds both firings, and its
    success closes the incident for both: neither rule's end is told (README: a held
    firing's resolved notice is told only when a failed rollback left the incident open)."""
    service = "web-production"
    id = await _rollback_running(world)  # for health-failing
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.record(service, "rule_firing", rule="error-rate", reason="50% 5xx")  # held too
    await world.router.route_new()
    await _rollback_succeeds(world, id, service)
    await world.record(service, "rule_resolved", rule="error-rate")
    await world.record(service, "rule_resolved", rule="health-failing")
    await world.router.route_new()
    told = [Notification.from_dict(m.payload) for m in await world.store.outbox("pager")]
    kinds = [(n.kind, n.key.rsplit("/", 1)[1]) for n in reversed(told)]
    assert ("rule_resolved", "error-rate") not in kinds, kinds
    assert [k for k, _ in kinds] == ["rollback_started", "rollback_succeeded"], kinds
    assert world.router._open == {}


async def test_a_firing_that_waits_holds_back_only_its_own_services_alerts(
    world: World, write: Callable[..., Path]
) -> None:
    """A firing waits for the controller as long as the service's longest ``for`` (a day,
    at most) and two intervals: another service's alerts, a failed rollback's page among
    them, do not wait with it. The service's own later alerts keep their order behind it,
    and a restart routes nothing twice."""
    api = '\n[[services]]\nname = "api"\ntier = "production"\nhealth_url = "http://x/health"\n'
    plan = build_plan(write(CONFIG + api), load_environment({}), {})
    world.router.services = {s.name: s for s in plan.services}
    decided: dict[str, float] = {}
    world.router.decided = decided.get  # nothing decided on web-production yet
    await world.record("web-production", "rule_firing", rule="health-failing", reason="500")
    await world.record("api", "rollback_failed", rule="health-failing", to="d1", reason="x")
    await world.record("web-production", "rule_resolved", rule="health-failing")
    await world.clock.advance(1.0)
    assert await world.router.route_new() == 1
    assert await world.queued() == ["api: rollback #? failed: ? → deployment d1"]  # at once
    assert await world.router.route_new() == 0  # nothing twice while it waits
    # A restart (or a new leader) while it waits: what was told is not told again.
    again = _new_process(world, decided=decided.get)
    await again.restore()
    await again.route_new()
    assert await world.queued() == ["api: rollback #? failed: ? → deployment d1"]
    decided["web-production"] = world.clock.time()  # decided: nothing to hold it
    assert await again.route_new() == 2
    assert await world.queued() == [
        "api: rollback #? failed: ? → deployment d1",
        "web-production: health-failing firing",
        "web-production: health-failing resolved",
    ]
    assert await again.route_new() == 0
    assert int(await world.store.cursor("alert-router") or 0) == 3


async def test_a_held_firing_is_still_held_after_a_restart(world: World) -> None:
    """A restart mid-rollback still knows the firing was held: its end is the rollback's to
    tell, and it was never told, so no reminder repeats it (an hour is production's
    ``remind_every``)."""
    service = "web-production"
    id = await _rollback_running(world)
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.router.route_new()
    assert await world.queued() == ["web-production: rollback #? started: ? → deployment d1"]
    router = _new_process(world)
    await router.restore()
    await world.clock.advance(3600)
    await router.remind()
    assert not [t for t in await world.queued() if "firing" in t], await world.queued()
    await _rollback_succeeds(world, id, service)
    await world.record(service, "rule_resolved", rule="health-failing")
    await router.route_new()
    kinds = [Notification.from_dict(m.payload).kind for m in await world.store.outbox("pager")]
    assert "rule_resolved" not in kinds, kinds
    assert "rule_firing" not in kinds, kinds
    assert await world.store.cursor("alert-router-held") == "[]"  # its end came: forgotten


@pytest.mark.parametrize("value", ["{", '{"a": 1}', '["ok", 2]', "null"])
async def test_held_incidents_the_store_garbled_are_forgotten_not_fatal(
    world: World, value: str
) -> None:
    await world.store.set_cursor("alert-router-held", value)
    await world.record("web-production", "rule_firing", rule="health-failing")
    router = _new_process(world)
    assert await router.restore() == 0
    assert await router.route_new() == 1
    assert await world.queued() == ["web-production: health-failing firing"]


async def test_a_held_firings_end_the_store_failed_midway_is_not_told_after_the_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the held incident was forgotten in the store before the router asked whether
    a rollback still runs; the store failing at that question killed the loop, and the
    supervisor's restart (restore from the store) no longer knew the firing was held: it
    told the end of an incident nobody was told of."""
    service = "web-production"
    await _rollback_running(world)
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.router.route_new()
    await world.record(service, "rule_resolved", rule="health-failing")  # rollback still runs
    rollbacks = world.store.rollbacks

    async def failing(*args: object, **kwargs: object) -> object:
        raise StoreError("database is locked")

    monkeypatch.setattr(world.store, "rollbacks", failing)
    with pytest.raises(StoreError):
        await world.router.route_new()
    monkeypatch.setattr(world.store, "rollbacks", rollbacks)
    router = _new_process(world)  # run() restarted by the supervisor: restore from the store
    await router.restore()
    await router.route_new()
    kinds = [Notification.from_dict(m.payload).kind for m in await world.store.outbox("pager")]
    assert kinds == ["rollback_started"], kinds


async def test_a_firing_told_after_its_held_one_is_reminded_after_a_restart(
    world: World,
) -> None:
    """Review: a held firing whose rule never resolved (the rule dropped from the config
    after its rollback succeeded, then put back) stayed held for ever; its next firing,
    told, was then taken after a restart for one never told: no reminder repeated it."""
    service = "web-production"
    id = await _rollback_running(world)
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.record(service, "rollback_started", rule="health-failing", to="d1", reason="x")
    await world.router.route_new()
    await _rollback_succeeds(world, id, service)
    await world.router.route_new()
    await world.clock.advance(600)
    await world.record(service, "rule_firing", rule="health-failing", reason="status 500")
    await world.router.route_new()
    assert "web-production: health-failing firing" in await world.queued()
    assert await world.store.cursor("alert-router-held") == "[]"
    router = _new_process(world)
    await router.restore()
    await world.clock.advance(3600)
    assert await router.remind() == 1


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
@pytest.mark.parametrize("restart_after", [0, 1, 2, 3, 4, None])
async def test_a_restart_at_any_step_of_a_held_incident_tells_what_no_restart_tells(
    world: World, outcome: str, restart_after: int | None
) -> None:
    """Review: two rules held under one rollback, a restart (or a new leader) after any
    step: the same messages as without one, and no reminder of a firing never told."""
    service = "web-production"
    id = await _rollback_running(world)
    router = world.router

    async def rollback_ends() -> None:
        now = world.clock.time()
        if outcome == "succeeded":
            await world.store.advance_rollback(id, "sent", at=now)
            await world.store.advance_rollback(id, "succeeded", at=now, new_deployment="d3")
        else:
            await world.store.advance_rollback(id, "failed", at=now, error="refused")
        await world.record(service, f"rollback_{outcome}", rule="health-failing", to="d1")

    steps = [
        lambda: world.record(service, "rule_firing", rule="health-failing", reason="500"),
        lambda: world.record(service, "rollback_started", rule="health-failing", to="d1"),
        lambda: world.record(service, "rule_firing", rule="error-rate", reason="50% 5xx"),
        rollback_ends,
        lambda: world.record(service, "rule_resolved", rule="health-failing"),
        lambda: world.record(service, "rule_resolved", rule="error-rate"),
    ]
    for i, step in enumerate(steps):
        await step()
        await router.route_new()
        if i == restart_after:
            router = _new_process(world)
            await router.restore()
    await world.clock.advance(3600)
    await router.remind()
    told = [Notification.from_dict(m.payload) for m in await world.store.outbox("pager")]
    kinds = sorted((n.kind, n.key.rsplit("/", 1)[1]) for n in told)
    expected = [("rollback_started", "health-failing"), (f"rollback_{outcome}", "health-failing")]
    if outcome == "failed":  # the incidents stay open: their ends are told
        expected += [("rule_resolved", "error-rate"), ("rule_resolved", "health-failing")]
    assert kinds == sorted(expected), kinds
    assert await world.store.cursor("alert-router-held") in (None, "[]")
