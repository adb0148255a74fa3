"""Railway's incidents in the decision trail: one event when one starts, one when it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import StoreError
from monitor.events import EventKind, PlatformEvent, from_record
from monitor.platform_watch import PLATFORM_KINDS, PlatformWatch
from monitor.railway.platform import Notice, PlatformStatus
from monitor.store import open_store
from monitor.store.sqlite import SQLiteStore

AT = 1_700_000_000.0
INCIDENT = Notice("inc-1", "Edge failing", "INVESTIGATING", "https://status.railway.com/i", AT)
STABLE = PlatformStatus(AT, True)


def trouble(at: float, incident: Notice | None = INCIDENT, **kw: Any) -> PlatformStatus:
    return PlatformStatus(at, kw.pop("stable", False), incident, kw.pop("maintenance", None))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await open_store(tmp_path / "state.db")
    yield store
    await store.close()


async def said(store: SQLiteStore) -> list[PlatformEvent]:
    records = await store.events(kinds=PLATFORM_KINDS)
    events = [from_record(r) for r in reversed(records)]
    assert all(r.service is None for r in records)  # about no service
    assert all(isinstance(e, PlatformEvent) for e in events)
    return events  # type: ignore[return-value]


async def test_one_event_per_incident_however_many_polls(store: SQLiteStore) -> None:
    watch = PlatformWatch(store)
    await watch.observe(STABLE)
    for i in range(5):
        await watch.observe(trouble(AT + 30 * i))
    await watch.observe(PlatformStatus(AT + 150, True))
    await watch.observe(PlatformStatus(AT + 180, True))
    events = await said(store)
    assert [e.kind for e in events] == [
        EventKind.PLATFORM_INCIDENT,
        EventKind.PLATFORM_INCIDENT_ENDED,
    ]
    start, end = events
    assert (start.key, start.notice, start.message, start.status) == (
        "inc-1",
        "incident",
        "Edge failing",
        "INVESTIGATING",
    )
    assert start.url == "https://status.railway.com/i"
    assert (end.key, end.message, end.lasted_s) == ("inc-1", "Edge failing", 150.0)


async def test_a_restart_neither_repeats_the_start_nor_misses_the_end(
    store: SQLiteStore,
) -> None:
    await PlatformWatch(store).observe(trouble(AT))
    again = PlatformWatch(store)  # a new run of railguard
    await again.observe(trouble(AT + 60))
    assert [e.kind for e in await said(store)] == [EventKind.PLATFORM_INCIDENT]
    await PlatformWatch(store).observe(PlatformStatus(AT + 90, True))
    await PlatformWatch(store).observe(PlatformStatus(AT + 120, True))
    events = await said(store)
    assert [e.kind for e in events] == [
        EventKind.PLATFORM_INCIDENT,
        EventKind.PLATFORM_INCIDENT_ENDED,
    ]
    assert events[1].lasted_s == 90.0  # from the start event the store kept


async def test_the_next_incident_ends_the_last_one_first(store: SQLiteStore) -> None:
    watch = PlatformWatch(store)
    await watch.observe(trouble(AT))
    other = Notice("inc-2", "Deploys paused", "IDENTIFIED", None, None)
    await watch.observe(trouble(AT + 30, other))
    events = await said(store)
    assert [(e.kind, e.key) for e in events] == [
        (EventKind.PLATFORM_INCIDENT, "inc-1"),
        (EventKind.PLATFORM_INCIDENT_ENDED, "inc-1"),
        (EventKind.PLATFORM_INCIDENT, "inc-2"),
    ]


async def test_a_status_update_of_the_same_incident_says_nothing(store: SQLiteStore) -> None:
    watch = PlatformWatch(store)
    await watch.observe(trouble(AT))
    monitoring = Notice("inc-1", "Edge failing", "MONITORING", None, AT)
    await watch.observe(trouble(AT + 30, monitoring, stable=True))
    assert len(await said(store)) == 1


async def test_unstable_with_nothing_named_or_maintenance(store: SQLiteStore) -> None:
    watch = PlatformWatch(store)
    maintenance = Notice("m-1", "Database upgrade", "INPROGRESS", None, AT)
    await watch.observe(trouble(AT, None, maintenance=maintenance))
    await watch.observe(trouble(AT + 30, None))
    await watch.observe(PlatformStatus(AT + 60, True, None, maintenance))  # stable again
    events = await said(store)
    assert [(e.kind.value, e.key, e.notice) for e in events] == [
        ("platform_incident", "m-1", "maintenance"),
        ("platform_incident_ended", "m-1", "maintenance"),
        ("platform_incident", "unstable", None),
        ("platform_incident_ended", "unstable", None),
    ]


async def test_a_failing_store_is_tried_again_at_the_next_poll(store: SQLiteStore) -> None:
    watch = PlatformWatch(store)
    real = store.record_event
    calls = {"n": 0}

    async def flaky(*args: Any, **kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise StoreError("database is locked")
        return await real(*args, **kw)

    store.record_event = flaky  # type: ignore[method-assign]
    await watch.observe(trouble(AT))  # logged, never raised into the poller
    assert await said(store) == []
    await watch.observe(trouble(AT + 30))
    assert [e.kind for e in await said(store)] == [EventKind.PLATFORM_INCIDENT]
