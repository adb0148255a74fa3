"""The platform_incident guard on the stage: Railway's own incident holds a rollback, and its
end lets the same rollback through, once; garbage from Railway never holds; Railway's
incident is told once when it starts and once when it ends, across restarts."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.model import Notification
from monitor.clock import FakeClock
from monitor.store import open_store
from tests.stage import Stage, released, store_of
from tests.stage import trail as events

BAD = {"v2": {"error_ratio": 0.5}}
CONSOLE = '\n[[channels]]\ntype = "console"\nname = "ops"\nstream = "stderr"\n'


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD)
    await stage.start_servers()
    yield stage
    await stage.close()


async def platform_events(stage: Stage) -> list[tuple[str, dict[str, Any]]]:
    """Railway's incidents in the trail (about no service), oldest first."""
    kinds = ["platform_incident", "platform_incident_ended"]
    found = await store_of(stage).events(kinds=kinds)
    return [(e.kind, dict(e.data)) for e in reversed(found)]


def restarts(stage: Stage) -> float:
    assert stage.daemon is not None
    value = stage.daemon.metrics.registry.get_sample_value(
        "railguard_task_restarts_total", {"task": "railway-poller"}
    )
    return value or 0.0


# -- (a) held during Railway's incident, one rollback once it ends ------------------------------


async def test_a_bad_release_during_railways_incident_is_held_then_rolled_back_once(
    stage: Stage,
) -> None:
    good, bad = await released(stage)
    stage.emu.platform.open_incident("Edge network failing in every region", id="inc-1")
    await stage.run_for(30)  # v2 fails for all of it: the rule fires, Railway is in trouble
    assert stage.applied_rollbacks() == []
    (held,) = await events(stage, "rollback_held")  # once, not once per evaluation
    assert held["guard"] == "platform_incident"
    assert "Edge network failing in every region" in held["why"]
    assert "INVESTIGATING, https://status.railway.com/incidents/inc-1" in held["why"]
    assert held["rule"] == "error-rate"
    assert stage.daemon is not None
    count = stage.daemon.metrics.registry.get_sample_value(
        "railguard_rollback_held_total",
        {"service": "web", "tier": "production", "guard": "platform_incident"},
    )
    assert count == 1

    stage.emu.platform.open_incident("Edge network failing", status="MONITORING", id="inc-1")
    await stage.run_for(6)  # still open while Railway monitors its fix
    assert stage.applied_rollbacks() == []

    stage.emu.platform.close_incident()  # the rule still fires: the same decision goes ahead
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.from_deployment, record.state) == (bad, "succeeded")
    assert [kind for kind, _ in await platform_events(stage)] == [
        "platform_incident",
        "platform_incident_ended",
    ]


async def test_maintenance_alone_does_not_hold(stage: Stage) -> None:
    """The schema does not say maintenance affects deployments: only Railway saying it is
    not stable, or an open incident, holds."""
    good, _ = await released(stage)
    stage.emu.platform.start_maintenance("Database upgrade")
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    assert await platform_events(stage) == []


async def test_railway_unstable_during_maintenance_holds_and_names_it(stage: Stage) -> None:
    good, _ = await released(stage)
    stage.emu.platform.start_maintenance("Database upgrade", id="m-7")
    stage.emu.platform.stable = False
    await stage.run_for(25)
    assert stage.applied_rollbacks() == []
    (held,) = await events(stage, "rollback_held")
    assert 'not stable, maintenance in progress: "Database upgrade"' in held["why"]
    stage.emu.platform.stable = None
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    started, ended = await platform_events(stage)
    assert (started[1]["key"], started[1]["notice"]) == ("m-7", "maintenance")
    assert ended[0] == "platform_incident_ended"


# -- (b) garbage, absence, refusal: never a hold, never a crash ----------------------------------

ABSENT = object()
GARBAGE: list[Any] = [
    None,
    ABSENT,  # the field missing from the answer
    "down",
    [[[[]]]],
    {"isStable": "false"},
    {"isStable": None, "incident": None, "maintenance": None},
    {"isStable": False, "incident": 5, "maintenance": None},  # would be an incident, read loosely
    {"isStable": False, "incident": {"id": "i", "message": "x"}, "maintenance": None},
    {
        "isStable": False,
        "incident": {"id": "i", "message": "x", "status": "ONGOING", "url": "u"},
        "maintenance": None,
    },
]


def garble_platform(stage: Stage) -> None:
    """Every answer's platformStatus replaced by the next piece of garbage."""
    real_run = stage.emu._run
    pieces = itertools.cycle(GARBAGE)

    def run(incoming: Any, scope: Any) -> tuple[int, Any]:
        status, body = real_run(incoming, scope)
        data = body.get("data")
        if isinstance(data, dict) and "platform" in data:
            data = dict(data)
            piece = next(pieces)
            if piece is ABSENT:
                del data["platform"]
            else:
                data["platform"] = piece
            body = {**body, "data": data}
        return status, body

    stage.emu._run = run  # type: ignore[method-assign]


async def test_a_garbled_or_absent_platform_status_never_holds_nor_crashes(
    stage: Stage,
) -> None:
    stage.emu.platform.open_incident("Real, but unreadable")  # what garbage hides
    garble_platform(stage)
    good, _ = await released(stage)
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    assert "platform_incident" not in [e["guard"] for e in await events(stage, "rollback_held")]
    assert await platform_events(stage) == []
    assert stage.daemon is not None
    poller = stage.daemon.poller
    assert poller is not None
    assert poller.polls >= 2 * len(GARBAGE)  # every piece of garbage was read, some twice
    assert (poller.platform, poller.last_failure) == (None, None)
    assert poller.platform_problem is not None
    assert restarts(stage) == 0


async def test_railway_refusing_platform_status_never_holds_nor_blinds(stage: Stage) -> None:
    """platformStatus is non-null: Railway's error on it nulls the whole answer. The poll
    asks again without it; no service is blind for it, and nothing is held."""
    stage.emu.platform.open_incident("Unseen")
    stage.emu.platform.error = "Internal server error"
    good, _ = await released(stage)
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    assert [e["guard"] for e in await events(stage, "rollback_held")] == []
    asked = [r for r in stage.emu.requests if r.operation_name == "RailguardTick"]
    assert sum("platformStatus" in r.fields for r in asked) == 1  # then it rests for 10m
    assert restarts(stage) == 0


# -- (c) one event each, across restarts --------------------------------------------------------


async def test_railways_incident_is_recorded_and_told_once_each_across_restarts(
    stage: Stage, tmp_path: Path
) -> None:
    store = await open_store(tmp_path / "state.db")
    stage.extra_config = CONSOLE
    stage.deploy("v1", ago=7200)
    try:
        await stage.start_daemon(store=store)
        stage.emu.platform.open_incident("Deploys paused", status="IDENTIFIED", id="inc-2")
        await stage.run_for(10)  # five polls see it
        for _ in range(2):  # restarts while it is open
            await stage.stop_daemon()
            await stage.start_daemon(store=store)
            await stage.run_for(10)
        assert [kind for kind, _ in await platform_events(stage)] == ["platform_incident"]
        stage.emu.platform.close_incident()
        await stage.run_for(6)
        await stage.stop_daemon()
        await stage.start_daemon(store=store)  # a restart once it is over
        await stage.run_for(6)
        said = await platform_events(stage)
        assert [kind for kind, _ in said] == ["platform_incident", "platform_incident_ended"]
        named = {"key": "inc-2", "status": "IDENTIFIED", "message": "Deploys paused"}
        assert named.items() <= said[0][1].items()
        assert said[1][1]["lasted_s"] >= 30
        told = [Notification.from_dict(m.payload) for m in reversed(await store.outbox("ops"))]
        assert [(n.title, n.status.value) for n in told if n.service is None] == [
            ("Railway incident: Deploys paused", "firing"),
            ("Railway incident over: Deploys paused", "resolved"),
        ]
    finally:
        await stage.stop_daemon()
        await store.close()
