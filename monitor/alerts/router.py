"""The alert router: from the store's event log to notifications, by each tier's policy.

The router tails the events the daemon records (rule firing and resolved, blind, rollbacks,
guards, escalations, verified and failed deployments, freezes) and keeps its place in a
cursor, so a restart neither loses an event nor queues one twice (a notification's id is its
event's id, and the outbox refuses a message it already has). Per the service's tier:
``immediate`` queues the notification for every channel whose filters want it; ``digest``
leaves the event for the daily summary; ``off`` only logs and counts. One incident per
(service, rule): a rule firing again while its incident is open is not repeated, and while
a rollback of the service runs the symptom alerts are held, since the rollback's own
notifications tell the story. An incident still open after the tier's ``remind_every`` gets
its last message again, marked as a reminder; at start the router replays the last week of
routed events (sending nothing) to remember which incidents are still open. Railway's own
incidents (about no service) are one incident at a time, sent to every channel that takes
their severity (:func:`platform_severity`). The words (title, text, fields) are
:func:`monitor.render.describe`'s, as in the digest and on /status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import structlog

from monitor.alerts.channels.base import ChannelConfig
from monitor.alerts.model import Notification, Severity, Status
from monitor.alerts.outbox import Outbox
from monitor.clock import Clock
from monitor.events import EventKind, from_record, rule_of
from monitor.leadership import SOLO, Acting
from monitor.model import format_duration
from monitor.plan import ServicePlan
from monitor.render import describe
from monitor.store import EventRecord, RollbackRecord
from monitor.store.outbox import OutboxRecord, OutboxState
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.alerts")

CURSOR = "alert-router"
# The incidents whose firing was held (a JSON list of keys, beside the cursor): a restart, or
# a new leader, still knows their end is a rollback's to tell and that they were never told.
HELD = "alert-router-held"
SYMPTOM_ENDS = frozenset({EventKind.RULE_RESOLVED, EventKind.SIGHT_RESTORED})
SYMPTOMS = frozenset({EventKind.RULE_FIRING, EventKind.BLIND, EventKind.PLATFORM_INCIDENT})
RESOLVING = frozenset(
    {
        EventKind.RULE_RESOLVED,
        EventKind.ROLLBACK_SUCCEEDED,
        EventKind.SIGHT_RESTORED,
        EventKind.UNFROZEN,
        EventKind.PLATFORM_INCIDENT_ENDED,
    }
)
# Railway's own incidents: about no service, one incident at a time.
PLATFORM = frozenset({EventKind.PLATFORM_INCIDENT, EventKind.PLATFORM_INCIDENT_ENDED})
PLATFORM_KEY = "railguard/railway/platform_incident"
PLATFORM_TIER = "railway"  # its label in railguard_alerts_suppressed_total
# Events about the health of the whole service rather than one rule.
SERVICE_WIDE = frozenset(
    {
        EventKind.ESCALATION,
        EventKind.FROZEN,
        EventKind.UNFROZEN,
        EventKind.DEPLOYMENT_FAILED,
        EventKind.DEPLOYMENT_VERIFIED,
    }
)


GAP_WAIT = 60.0
"""How long the cursor waits before an event id not seen yet (seconds): longer than a
transaction of the store's takes (a statement gives up after 15 s)."""


class EventLog(Protocol):
    """What the router reads from the store."""

    async def events(
        self,
        service: str | None = None,
        since: float | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 200,
    ) -> list[EventRecord]: ...

    async def events_after(self, last_id: int, limit: int = 500) -> list[EventRecord]: ...

    async def cursor(self, name: str) -> str | None: ...

    async def outbox(
        self, channel: str | None = None, state: OutboxState | None = None, limit: int = 200
    ) -> list[OutboxRecord]: ...

    async def set_cursor(self, name: str, value: str) -> None: ...

    async def rollbacks(
        self,
        service: str | None = None,
        *,
        unfinished: bool = False,
        since: float | None = None,
        limit: int = 100,
    ) -> list[RollbackRecord]: ...


class Router:
    """Turns events into notifications for the channels, by tier policy."""

    def __init__(
        self,
        store: EventLog,
        outbox: Outbox,
        channels: Mapping[str, ChannelConfig],
        services: Mapping[str, ServicePlan],
        *,
        clock: Clock,
        metrics: Metrics,
        status_url: str | None = None,
        poll_every: float = 1.0,
        acting: Acting = SOLO,
        decided: Callable[[str], float | None] | None = None,
    ) -> None:
        self.store = store
        self.decided = decided
        self.acting = acting
        self.outbox = outbox
        self.channels = dict(channels)
        self.services = dict(services)
        self.clock = clock
        self.metrics = metrics
        self.status_url = status_url
        self.poll_every = poll_every
        self.last_beat: float | None = None  # when run() last started a round (monotonic)
        self._open: dict[str, float] = {}  # incident key -> when it began
        # Immediate incidents still open: key -> (the last message, when it was sent).
        self._last: dict[str, tuple[Notification, float]] = {}
        self._held: set[str] = set()  # incidents whose firing was held: their end is too
        self._ahead: set[int] = set()  # events routed past one still waiting (route_new)
        self._gaps: dict[int, float] = {}  # an id not seen yet -> when it was first missed
        self._reminders = 0
        self.platform_severity = platform_severity(self.services.values())

    async def restore(self, days: float = 7.0) -> int:
        """Rebuild the open incidents from recent events already routed (after a restart)."""
        last = int(await self.store.cursor(CURSOR) or 0)
        self._held = held_keys(await self.store.cursor(HELD))
        since = self.clock.time() - days * 86400
        events = [e for e in await self.store.events(since=since, limit=10_000) if e.id <= last]
        for event in sorted(events, key=lambda e: e.id):
            await self.route(event, replay=True)
        # An incident's last reminder, not its first message, is when it was last told: a
        # takeover (or a restart) right after one does not repeat it.
        for message in await self.store.outbox(limit=1000):
            payload = message.payload
            told = self._last.get(str(payload.get("key")))
            if payload.get("kind") == "reminder" and told is not None:
                at = float(payload.get("at") or 0.0)
                self._last[told[0].key] = (told[0], max(told[1], at))
        return len(events)

    async def run(self) -> None:
        """Route new events as they are recorded, until cancelled; only while leading.

        A replica that starts leading first restores the open incidents (the last leader
        may have routed events meanwhile), then routes from the shared cursor."""
        restored = False
        while True:
            self.last_beat = self.clock.monotonic()
            if not self.acting.leading():
                restored = False
            else:
                if not restored:
                    self._open.clear()
                    self._last.clear()
                    self._held.clear()
                    self._ahead.clear()
                    await self.restore()
                    restored = True
                await self.route_new()
                await self.remind()
            await self.clock.sleep(self.poll_every)

    async def remind(self) -> int:
        """Repeat the last message of every incident open longer than its tier's interval."""
        now, sent = self.clock.time(), 0
        for key, (last, at) in list(self._last.items()):
            service = self.services.get(last.service or "")
            every = service.policy.remind_every if service is not None else 0.0
            if not every or now - at < every:
                continue
            self._reminders += 1
            open_for = format_duration(now - last.started_at)
            reminder = replace(
                last,
                id=f"reminder-{key}-{int(now)}",
                kind="reminder",
                title=f"still open after {open_for}: {last.title}",
                at=now,
            )
            await self._send(reminder)
            self._last[key] = (last, now)
            sent += 1
        return sent

    async def route_new(self) -> int:
        """Route every event recorded since the last call (or the last run); how many.

        A firing that waits for the controller's decision holds back its service's later
        events (their order is the incident's), not other services': a page about another
        service goes at once. The cursor stays before the first event still waiting; events
        routed past it are remembered (``_ahead``), and after a restart routed again, which
        the outbox refuses to queue twice (a message's id is its event's)."""
        last = int(await self.store.cursor(CURSOR) or 0)
        routed = 0
        waiting: set[str | None] = set()  # services whose events wait behind a firing
        self._gaps = {id: at for id, at in self._gaps.items() if id > last}  # filled, or given up
        gap = False  # an id before this event may yet be committed: the cursor stays
        expected = last + 1
        for event in await self.store.events_after(last):
            gap = gap or (event.id > expected and self._gap_open(expected))
            expected = event.id + 1
            if event.id in self._ahead:
                if not waiting and not gap:  # everything before it is routed: the cursor moves on
                    self._ahead.discard(event.id)
                    await self.store.set_cursor(CURSOR, str(event.id))
                continue
            if event.service in waiting or await self._awaits_decision(event):
                waiting.add(event.service)
                continue
            await self.route(event)
            routed += 1
            if waiting or gap:
                self._ahead.add(event.id)
            else:
                await self.store.set_cursor(CURSOR, str(event.id))
        return routed

    def _gap_open(self, missing: int) -> bool:
        """Whether event ``missing`` may still come: ids are taken when a transaction inserts
        and seen when it commits, so on PostgreSQL another replica's event (a freeze through
        a standby's admin API) or a slow batch's may commit after a later one was routed. A
        gap is waited for ``GAP_WAIT``; a transaction rolled back leaves one for ever."""
        now = self.clock.monotonic()
        return now - self._gaps.setdefault(missing, now) < GAP_WAIT

    async def _awaits_decision(self, event: EventRecord) -> bool:
        """A rule firing on a service the controller may roll back, told at once, before the
        controller has decided on it: wait, or the symptom would be told in the moment
        before the rollback that holds it is recorded (the controller asks Railway first,
        and waits for a whole ``for`` of evidence about a release that just went live). Not
        for ever: a controller that cannot decide (Railway down) lets it through after the
        service's longest ``for``, two intervals and 30 s."""
        if self.decided is None or event.kind != EventKind.RULE_FIRING:
            return False
        service = self.services.get(event.service or "")
        if service is None or not service.policy.auto_rollback:
            return False
        if service.policy.delivery != "immediate":
            return False
        through = self.decided(service.name)
        if through is not None and through >= event.at:
            return False
        if await self._rollback_running(service.name):
            return False  # decided: the rollback holds it
        return self.clock.time() - event.at < service.decision_wait

    async def route(self, event: EventRecord, *, replay: bool = False) -> None:
        """One event: notify, hold for the digest, or only count it.

        ``replay`` only rebuilds what the router remembers (open incidents), sending nothing.
        """
        service = self.services.get(event.service or "")
        kind, typed = event.kind, from_record(event)
        verified = kind == EventKind.DEPLOYMENT_VERIFIED
        if service is not None:
            policy = service.policy
            if verified and not policy.notify_verified:
                return
            name, tier, delivery = service.name, service.tier, policy.delivery
            key = self._key(service.name, kind, rule_of(typed))
            # An incident's messages keep its severity, its resolve included (channels match
            # them by it); a healthy deployment is news, not an incident, and never pages.
            severity = Severity.INFO if verified else Severity(policy.severity)
        elif event.service is None and kind in PLATFORM:
            # Railway's incident: to every channel (no tier) that takes its severity, sent
            # when a tier whose rollbacks it holds delivers at once (platform_severity).
            name, tier, key = None, PLATFORM_TIER, PLATFORM_KEY
            delivery = "off" if self.platform_severity is None else "immediate"
            severity = self.platform_severity or Severity.INFO
        else:
            return
        status = Status.RESOLVED if kind in RESOLVING else Status.FIRING
        if status is Status.FIRING and key in self._open and kind in SYMPTOMS:
            if not replay:
                self.metrics.alerts_suppressed.labels(tier, "duplicate").inc()
            return
        started = self._open.get(key, event.at)
        was_open = key in self._open
        if status is Status.RESOLVED:
            self._open.pop(key, None)
            if kind == EventKind.ROLLBACK_SUCCEEDED:
                # It told the story of every firing it held, another rule's too: closed.
                for told in [k for k in self._held if k.startswith(f"railguard/{name}/")]:
                    self._open.pop(told, None)
        elif not verified:
            self._open.setdefault(key, event.at)
        if delivery != "immediate":
            if not replay:
                reason = "digest" if delivery == "digest" else "off"
                self.metrics.alerts_suppressed.labels(tier, reason).inc()
                log.info("alert not sent now", service=name, kind=kind, delivery=reason)
            return
        if not replay and kind in SYMPTOM_ENDS and key in self._held:
            # Its firing was held, a rollback told the incident: its end is the rollback's
            # to tell (succeeded closed it; a rollback still running will), unless the
            # rollback failed and left the incident open: then this closes it.
            # Decided before it is forgotten in the store: the store failing at the question
            # must leave it held for the retry (a restart restores what the store says).
            quiet = not was_open or await self._rollback_running(name or "")
            await self._hold(key, False)
            if quiet:
                self.metrics.alerts_suppressed.labels(tier, "held").inc()
                return
        held = not replay and kind in SYMPTOMS and name is not None
        if held and await self._rollback_running(name or ""):
            await self._hold(key, True)
            self.metrics.alerts_suppressed.labels(tier, "held").inc()
            return
        if held:  # told: no longer held (one that never ended, its rule dropped meanwhile)
            await self._hold(key, False)
        words = describe(typed)
        notification = Notification(
            id=f"event-{event.id}",
            key=key,
            kind=kind,
            status=status,
            severity=severity,
            title=words.title if name is None else f"{name}: {words.title}",
            text=words.summary,
            at=event.at,
            started_at=started,
            service=name,
            tier=None if service is None else service.tier,
            fields=dict(words.facts),
            url=self.status_url,
        )
        if not replay:
            await self._send(notification)
        if status is Status.RESOLVED:
            self._last.pop(key, None)
        elif not verified and not (replay and key in self._held and kind in SYMPTOMS):
            self._last[key] = (notification, event.at)  # a held firing was never told: no reminder

    async def _hold(self, key: str, held: bool) -> None:
        """Note (or forget) that an incident's firing was held, in the store too."""
        if (key in self._held) == held:
            return
        if held:
            self._held.add(key)
        else:
            self._held.discard(key)
        await self.store.set_cursor(HELD, json.dumps(sorted(self._held)))

    async def _send(self, notification: Notification) -> None:
        for name, config in self.channels.items():
            if config.wants(notification):
                await self.outbox.put(name, notification)

    def _key(self, service: str, kind: str, rule: str | None) -> str:
        if kind in SERVICE_WIDE or not rule:
            return f"railguard/{service}/{kind.removeprefix('un')}"
        return f"railguard/{service}/{rule}"

    async def _rollback_running(self, service: str) -> bool:
        return bool(await self.store.rollbacks(service, unfinished=True, limit=1))


def held_keys(value: str | None) -> set[str]:
    """The held incidents kept beside the cursor; anything but a list of keys is none."""
    try:
        keys = json.loads(value or "[]")
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        log.warning("held incidents unreadable: forgotten", value=str(value)[:200])
        return set()
    return set(keys)


def platform_severity(services: Iterable[ServicePlan]) -> Severity | None:
    """How loudly Railway's own incident is told: as the loudest tier whose automatic
    rollbacks it holds and that is told at once, but never a page (warning at most: nobody
    here can fix Railway; a rollback it holds pages with its own tier's severity). None when
    no such tier delivers at once."""
    loud = [
        Severity(s.policy.severity)
        for s in services
        if s.policy.auto_rollback and s.policy.delivery == "immediate"
    ]
    if not loud:
        return None
    return min(max(loud, key=lambda v: v.rank), Severity.WARNING, key=lambda v: v.rank)
