"""Railway's own incidents in the decision trail: one event when one starts, one when it ends.

The poller reads ``platformStatus`` with every poll (:mod:`monitor.railway.platform`) and the
controller holds automatic rollbacks while the latest reading says Railway is in trouble (the
``platform_incident`` guard, level-triggered: nothing is kept but the latest poll). This
module tells people: a ``platform_incident`` event when Railway's trouble starts and a
``platform_incident_ended`` event when it ends, about no service, one each per incident
however many polls see it. What was said last is read back from the store's newest platform
event, so a restart neither repeats an incident's start nor misses its end. An unknown or
stale status says nothing: only a readable answer starts or ends an incident.
"""

from __future__ import annotations

from dataclasses import replace

import structlog

from monitor.errors import RailguardError
from monitor.events import EventKind, PlatformEvent, from_record, write_event
from monitor.leadership import SOLO, Acting
from monitor.railway.platform import PlatformStatus
from monitor.store import Store

log = structlog.get_logger("railguard.railway")

PLATFORM_KINDS = (EventKind.PLATFORM_INCIDENT.value, EventKind.PLATFORM_INCIDENT_ENDED.value)


def started(status: PlatformStatus) -> PlatformEvent | None:
    """The start event of the trouble ``status`` reports (None: Railway is fine)."""
    key = status.key
    if key is None:
        return None
    named = status.named
    notice = None
    if named is not None:
        notice = "incident" if named is status.open_incident else "maintenance"
    return PlatformEvent(
        kind=EventKind.PLATFORM_INCIDENT,
        key=key,
        notice=notice,
        message=named.message if named is not None else "",
        status=named.status if named is not None else None,
        url=named.url if named is not None else None,
        since=named.since if named is not None else None,
    )


class PlatformWatch:
    """Records Railway's incidents as the poller's readings start and end them."""

    def __init__(self, store: Store, acting: Acting = SOLO) -> None:
        self.store = store
        self.acting = acting
        self._open: tuple[PlatformEvent, float] | None = None  # said to start, not yet ended
        self._restored = False

    async def observe(self, status: PlatformStatus) -> None:
        """After a poll that read Railway's status: say what started or ended, once.

        A store that fails is logged; the next poll's reading tries again (what was said is
        only remembered once it is written). A standby says nothing, and reads what the
        leader said when it takes over."""
        if not self.acting.leading():
            self._restored = False
            return
        try:
            if not self._restored:
                await self._restore()
            await self._compare(status)
        except RailguardError as e:
            log.warning("could not record Railway's incident; trying again", error=str(e))

    async def _restore(self) -> None:
        newest = await self.store.events(kinds=PLATFORM_KINDS, limit=1)
        if newest:
            event = from_record(newest[0])
            if isinstance(event, PlatformEvent) and event.kind is EventKind.PLATFORM_INCIDENT:
                self._open = (event, newest[0].at)
        self._restored = True

    async def _compare(self, status: PlatformStatus) -> None:
        now = status.at
        if self._open is not None and self._open[0].key != status.key:
            event, began = self._open
            ended = replace(
                event, kind=EventKind.PLATFORM_INCIDENT_ENDED, lasted_s=max(0.0, now - began)
            )
            await write_event(self.store, None, ended, now)
            self._open = None
            log.info("Railway's incident is over", incident=event.key, message=event.message)
        start = started(status)
        if start is not None and self._open is None:
            await write_event(self.store, None, start, now)
            self._open = (start, now)
            log.warning("Railway reports an incident", incident=start.key, why=status.describe())
