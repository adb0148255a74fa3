"""The daily digest for tiers whose delivery is ``digest`` (staging, by default).

At each such tier's ``digest_at`` (UTC) one summary goes to every channel that wants it:
the period's incidents, rollbacks and holds per service, with counts, and the current state
(frozen services). The period starts where the last digest ended (a cursor in the store),
so a daemon that was down at ``digest_at`` sends the missed digest when it comes back; the
digest's id is its tier and date, so the outbox never queues it twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from monitor.alerts.channels.base import ChannelConfig
from monitor.alerts.model import Notification, Severity, Status
from monitor.alerts.outbox import Outbox
from monitor.clock import Clock
from monitor.events import EventKind, from_record
from monitor.leadership import SOLO, Acting
from monitor.plan import ServicePlan
from monitor.render import COUNTED, describe
from monitor.store import EventRecord, FreezeRecord

log = structlog.get_logger("railguard.alerts")

# Listed one per line, in words (monitor/render.py; COUNTED names what is counted).
LISTED = frozenset(
    {
        EventKind.RULE_FIRING,
        EventKind.ROLLBACK_SUCCEEDED,
        EventKind.ROLLBACK_FAILED,
        EventKind.REBUILD_SLOW,
        EventKind.ESCALATION,
    }
)
MAX_LINES = 20


class DigestStore(Protocol):
    """What the digest reads from the store."""

    async def events(
        self,
        service: str | None = None,
        since: float | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 200,
    ) -> list[EventRecord]: ...

    async def frozen(self, service: str, now: float) -> FreezeRecord | None: ...

    async def cursor(self, name: str) -> str | None: ...

    async def set_cursor(self, name: str, value: str) -> None: ...


def last_scheduled(digest_at: str, now: float) -> float:
    """The most recent ``HH:MM`` UTC at or before ``now``."""
    hours, minutes = (int(part) for part in digest_at.split(":"))
    today = datetime.fromtimestamp(now, UTC).replace(
        hour=hours, minute=minutes, second=0, microsecond=0
    )
    if today.timestamp() > now:
        today -= timedelta(days=1)
    return today.timestamp()


class Digest:
    """Sends each digest tier's summary once a day, catching up after downtime."""

    def __init__(
        self,
        store: DigestStore,
        outbox: Outbox,
        channels: Mapping[str, ChannelConfig],
        services: Sequence[ServicePlan],
        *,
        clock: Clock,
        status_url: str | None = None,
        acting: Acting = SOLO,
    ) -> None:
        self.store = store
        self.acting = acting
        self.outbox = outbox
        self.channels = dict(channels)
        self.clock = clock
        self.status_url = status_url
        self.last_beat: float | None = None  # when run() last looked (monotonic)
        self.tiers: dict[str, list[ServicePlan]] = {}
        for service in services:
            if service.policy.delivery == "digest":
                self.tiers.setdefault(service.tier, []).append(service)

    async def run(self) -> None:
        """Send digests as they fall due, until cancelled."""
        while True:
            self.last_beat = self.clock.monotonic()
            if self.acting.leading():  # the leader's digest is the one sent
                await self.send_due()
            await self.clock.sleep(60.0)  # digest_at has minute resolution

    async def send_due(self) -> list[Notification]:
        """Send every digest whose time has come and that was not sent yet."""
        sent = []
        now = self.clock.time()
        for tier, services in self.tiers.items():
            due = last_scheduled(services[0].policy.digest_at, now)
            cursor = await self.store.cursor(f"digest/{tier}")
            if cursor is None:
                # First start: the period begins now; nothing before it is ours to report.
                await self.store.set_cursor(f"digest/{tier}", str(due))
                continue
            since = float(cursor)
            if since >= due:
                continue
            notification = await self._summary(tier, services, since, due)
            await self._queue(tier, notification, due)
            sent.append(notification)
        return sent

    async def _queue(self, tier: str, notification: Notification, until: float) -> None:
        for name, config in self.channels.items():
            if config.wants(notification):
                await self.outbox.put(name, notification)
        await self.store.set_cursor(f"digest/{tier}", str(until))
        log.info("digest queued", tier=tier, title=notification.title)

    async def send_now(self, tier: str) -> Notification | None:
        """Send ``tier``'s digest early, covering everything since the last one (the demo
        does not wait for ``digest_at``); the next scheduled digest starts from here."""
        services = self.tiers.get(tier)
        if not services:
            return None
        now = self.clock.time()
        cursor = await self.store.cursor(f"digest/{tier}")
        since = (
            last_scheduled(services[0].policy.digest_at, now) if cursor is None else float(cursor)
        )
        notification = await self._summary(tier, services, since, now, early=True)
        await self._queue(tier, notification, now)
        return notification

    async def _summary(
        self,
        tier: str,
        services: Sequence[ServicePlan],
        since: float,
        until: float,
        *,
        early: bool = False,
    ) -> Notification:
        day = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d")
        totals: Counter[EventKind] = Counter()
        lines: list[str] = []
        frozen = []
        for service in services:
            events = [
                e
                for e in await self.store.events(service.name, since=since, limit=1000)
                if e.at < until
            ]
            counts = Counter(EventKind(e.kind) for e in events if e.kind in COUNTED)
            totals.update(counts)
            summary = ", ".join(f"{n} {COUNTED[k]}" for k, n in sorted(counts.items()))
            lines.append(f"{service.name}: {summary or 'quiet'}")
            for event in sorted(events, key=lambda e: e.at):
                if event.kind in LISTED and len(lines) < MAX_LINES:
                    when = datetime.fromtimestamp(event.at, UTC).strftime("%m-%d %H:%M")
                    lines.append(f"  {when} {describe(from_record(event)).line}")
            freeze = await self.store.frozen(service.name, until)
            if freeze is not None:
                frozen.append(f"{service.name} ({freeze.reason})")
        if frozen:
            lines.append("frozen now: " + "; ".join(frozen))
        incidents = totals[EventKind.RULE_FIRING]
        rollbacks = totals[EventKind.ROLLBACK_SUCCEEDED] + totals[EventKind.ROLLBACK_FAILED]
        fields = {label: str(totals[kind]) for kind, label in COUNTED.items()}
        # An early digest must not take the id of the scheduled one that follows it that day.
        return Notification(
            id=f"digest-{tier}-{day}" + (f"-early-{until:.0f}" if early else ""),
            key=f"railguard/digest/{tier}",
            kind="digest",
            status=Status.FIRING,
            severity=Severity(services[0].policy.severity),
            title=f"{tier} daily summary {day}: {incidents} incidents, {rollbacks} rollbacks",
            text="\n".join(lines),
            at=until,
            started_at=since,
            tier=tier,
            fields=fields,
            url=self.status_url,
        )
