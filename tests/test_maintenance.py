"""Maintenance windows: parsing (one-off, recurring, zones, DST, garbage), the controller
holding while one is in force and rolling back once it ends, and /status's view of them.

The controller's scenarios run on the rollback stage (tests/stage.py): a FakeClock that
starts at 2023-11-14 22:13:20 UTC (a Tuesday), so windows are written around that moment.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.alerts.model import Notification
from monitor.cli import main
from monitor.clock import FakeClock
from monitor.environment import load_environment
from monitor.maintenance import (
    MaintenanceWindow,
    describe_windows,
    in_force,
    maintenance_json,
    upcoming,
)
from monitor.planning import build_plan
from monitor.wallclock import instant, zone_of
from tests.stage import Stage, known_good, store_of
from tests.stage import trail as events

Write = Callable[..., Path]

SERVICES = """
[tiers.production]
rules = ["health-failing"]

[[services]]
name = "web"
tier = "production"
health_url = "http://127.0.0.1:9/health"

[[services]]
name = "docs"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""

BERLIN = zone_of("Europe/Berlin")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def window(**kw: Any) -> MaintenanceWindow:
    """A window as the config file would give it (validated with a file's context)."""
    return MaintenanceWindow.model_validate({"name": "w", "reason": "why", **kw}, context={})


def weekly(**kw: Any) -> MaintenanceWindow:
    """Every Saturday 02:00 for 2h in Berlin."""
    return window(
        **{"zone": "Europe/Berlin", "days": ["sat"], "at": "02:00", "duration": "2h", **kw}
    )


# -- parsing -------------------------------------------------------------------------------


def test_a_one_off_window_is_read_in_its_zone(write: Write) -> None:
    path = write(
        SERVICES
        + """
[[maintenance]]
name = "db-upgrade"
reason = "PostgreSQL 16"
zone = "Europe/Berlin"
start = "2026-12-05T22:00"
end = 2026-12-06T01:30:00
services = ["web"]
"""
    )
    plan = build_plan(path, load_environment({}), {})
    (w,) = plan.config.maintenance
    assert (w.start, w.end) == (utc(2026, 12, 5, 21), utc(2026, 12, 6, 0, 30))  # CET is +1
    web, docs = plan.services
    assert web.maintenance == (w,)
    assert docs.maintenance == ()
    assert describe_windows(plan.config.maintenance) == [
        "maintenance windows (1):",
        "  db-upgrade: from 2026-12-05 22:00 CET to 2026-12-06 01:30 CET, services web: "
        "PostgreSQL 16",
    ]


def test_an_offset_or_a_date_is_taken_as_written() -> None:
    w = window(start="2026-06-01T10:00+02:00", end="2026-06-02")
    assert (w.start, w.end) == (utc(2026, 6, 1, 8), utc(2026, 6, 2))  # zone UTC by default


def test_a_recurring_window_for_a_tier(write: Write) -> None:
    path = write(
        SERVICES
        + """
[[maintenance]]
name = "backups"
reason = "weekly database backup"
zone = "Europe/Berlin"
days = ["Saturday", "sun"]
at = 02:00:00
duration = "2h30m"
tier = "production"
"""
    )
    plan = build_plan(path, load_environment({}), {})
    (w,) = plan.config.maintenance
    assert (w.days, w.recurring) == ((5, 6), True)
    assert [len(s.maintenance) for s in plan.services] == [1, 0]
    assert w.describe() == (
        "backups: sat, sun at 02:00 Europe/Berlin for 2h30m, tier production: "
        "weekly database backup"
    )


def test_daily_means_every_day() -> None:
    assert (
        window(days="daily", at="03:00", duration="10m")
        .describe()
        .startswith("w: every day at 03:00 UTC for 10m")
    )


def test_a_window_for_all_services_covers_pr_environments_too() -> None:
    w = window(days=["mon"], at="03:00", duration="1h")
    assert w.applies_to("web-pr-12", "preview")
    tiered = window(days=["mon"], at="03:00", duration="1h", tier="staging")
    assert not tiered.applies_to("web", "production")
    assert tiered.applies_to("api", "staging")


@pytest.mark.parametrize(
    ("now", "active", "next_start"),
    [
        # Saturday 2026-11-28 02:00-04:00 CET is 01:00-03:00 UTC.
        (utc(2026, 11, 28, 0, 59), None, utc(2026, 11, 28, 1)),
        (utc(2026, 11, 28, 1), (utc(2026, 11, 28, 1), utc(2026, 11, 28, 3)), utc(2026, 12, 5, 1)),
        (
            utc(2026, 11, 28, 2, 59),
            (utc(2026, 11, 28, 1), utc(2026, 11, 28, 3)),
            utc(2026, 12, 5, 1),
        ),
        (utc(2026, 11, 28, 3), None, utc(2026, 12, 5, 1)),  # the end is not in the window
        (utc(2026, 11, 21, 3), None, utc(2026, 11, 28, 1)),
    ],
)
def test_a_weekly_window_in_force_and_next(
    now: float, active: tuple[float, float] | None, next_start: float | None
) -> None:
    w = weekly()
    current = in_force([w], now)
    assert (None if current is None else (current.starts_at, current.ends_at)) == active
    later = upcoming([w], now)
    assert (None if later is None else later.starts_at) == next_start


def test_dst_a_start_in_the_spring_gap_is_the_gap_end() -> None:
    """2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST; 02:30 does not exist."""
    gap = window(zone="Europe/Berlin", days=["sun"], at="02:30", duration="2h")
    now = utc(2026, 3, 28, 12)
    nxt = upcoming([gap], now)
    assert nxt is not None
    assert nxt.starts_at == utc(2026, 3, 29, 1)  # 03:00 CEST
    assert nxt.ends_at - nxt.starts_at == 7200  # the whole duration, from the gap's end
    assert nxt.hold_reason() == "maintenance window w until 2026-03-29 05:00 CEST: why"
    assert instant(datetime(2026, 3, 29, 2, 0), BERLIN) == utc(2026, 3, 29, 1)
    assert instant(datetime(2026, 3, 29, 2, 59, 59), BERLIN) == utc(2026, 3, 29, 1)
    assert instant(datetime(2026, 3, 29, 3, 0), BERLIN) == utc(2026, 3, 29, 1)
    # The week after, 02:30 exists again (CEST).
    after = upcoming([gap], nxt.ends_at)
    assert after is not None
    assert after.starts_at == utc(2026, 4, 5, 0, 30)


def test_dst_a_repeated_time_is_the_first_and_a_duration_is_elapsed_time() -> None:
    """2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET; 02:30 happens twice."""
    twice = window(zone="Europe/Berlin", days=["sun"], at="02:30", duration="1h")
    nxt = upcoming([twice], utc(2026, 10, 24, 12))
    assert nxt is not None
    assert nxt.starts_at == utc(2026, 10, 25, 0, 30)  # 02:30 CEST, the first of the two
    assert nxt.ends_at == utc(2026, 10, 25, 1, 30)  # one real hour: 02:30 CET on the wall
    night = window(zone="Europe/Berlin", days=["sat"], at="23:00", duration="6h")
    sat = upcoming([night], utc(2026, 10, 24, 12))
    assert sat is not None
    assert sat.ends_at - sat.starts_at == 6 * 3600  # 23:00 CEST to 04:00 CET: 6 real hours


def test_a_window_longer_than_a_day_is_in_force_across_midnights() -> None:
    weekend = window(zone="UTC", days=["sat"], at="00:00", duration="2d")
    sunday_night = utc(2026, 11, 29, 23, 59)
    current = in_force([weekend], sunday_night)
    assert current is not None
    assert current.starts_at == utc(2026, 11, 28)


def test_of_two_windows_in_force_the_one_that_ends_last_is_shown() -> None:
    short = window(name="short", start="2026-01-01T00:00", end="2026-01-01T01:00")
    long = window(name="long", start="2026-01-01T00:30", end="2026-01-01T03:00")
    current = in_force([short, long], utc(2026, 1, 1, 0, 45))
    assert current is not None
    assert current.window.name == "long"
    assert in_force([short, long], utc(2026, 1, 1, 3)) is None  # the end is not in it


def _direct(w: MaintenanceWindow, now: float) -> tuple[Any, Any]:
    """The state worked out from scratch: every occurrence around ``now``."""
    around = list(w.occurrences(now, now + 8 * 86400))
    active = [o for o in around if o.starts_at <= now]
    later = [o for o in around if now < o.starts_at <= now + 7 * 86400]
    return (
        max(((o.starts_at, o.ends_at) for o in active), key=lambda p: p[1], default=None),
        min(((o.starts_at, o.ends_at) for o in later), default=None),
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"zone": "Europe/Berlin", "days": ["sun"], "at": "02:30", "duration": "2h"},
        {"zone": "America/New_York", "days": ["daily"], "at": "01:30", "duration": "90m"},
        {"zone": "Europe/Berlin", "days": ["fri"], "at": "18:00", "duration": "3d"},
        # Daily, 23h30m: the 23-hour day of the spring change makes two occurrences overlap.
        {"zone": "Europe/London", "days": ["daily"], "at": "00:00", "duration": "23h30m"},
        {"zone": "Australia/Lord_Howe", "days": ["sat", "sun"], "at": "02:00", "duration": "1h"},
        {"start": "2026-03-28T10:00", "end": "2026-04-02T10:00", "zone": "Europe/Berlin"},
    ],
)
def test_the_remembered_state_is_the_state_worked_out_afresh(kw: dict[str, Any]) -> None:
    """A window remembers its state until it can change; asked at any time, in any order
    (a clock that jumps back too), it answers what a fresh look at the calendar says."""
    import random

    w = window(**kw)
    times = [utc(2026, 3, 15) + i * 37 * 60.0 for i in range(26 * 24 * 60 // 37)]
    times += [utc(2026, 10, 18) + i * 37 * 60.0 for i in range(14 * 24 * 60 // 37)]
    shuffled = random.Random(7).sample(times, len(times))
    edges = [t for o in w.occurrences(times[0], times[-1]) for t in (o.starts_at, o.ends_at)]
    edges += [t + d for t in edges for d in (-1.0, 1.0, -7 * 86400, 1 - 7 * 86400)]
    for now in times + shuffled + edges:
        active, later = w.state(now)
        got = (
            None if active is None else (active.starts_at, active.ends_at),
            None if later is None else (later.starts_at, later.ends_at),
        )
        assert got == _direct(w, now), datetime.fromtimestamp(now, UTC)
    assert w == window(**kw)  # what it remembers does not make it another window


def test_maintenance_json_is_the_status_shape() -> None:
    w = window(name="db", reason="upgrade", start="2026-01-01T00:00", end="2026-01-01T01:00")
    before = maintenance_json([w], utc(2025, 12, 31, 12))
    assert before == {
        "active": None,
        "next": {
            "name": "db",
            "starts_at": utc(2026, 1, 1),
            "ends_at": utc(2026, 1, 1, 1),
            "reason": "upgrade",
            "zone": "UTC",
        },
    }
    during = maintenance_json([w], utc(2026, 1, 1, 0, 30))
    assert during["active"] == before["next"]
    assert during["next"] is None
    assert maintenance_json([], utc(2026, 1, 1)) == {"active": None, "next": None}
    week = maintenance_json([w], utc(2025, 12, 25))  # exactly 7 days ahead: shown
    assert week["next"] == before["next"]
    far = maintenance_json([w], utc(2025, 12, 24, 23, 59))  # 7 days and a minute: not yet
    assert far == {"active": None, "next": None}


def test_describe_windows_says_when_each_is_next() -> None:
    w = weekly(name="backups")
    past = window(name="old", start="2020-01-01T00:00", end="2020-01-01T01:00")
    lines = describe_windows([w, past], utc(2026, 11, 28, 1, 30))
    assert lines[1].endswith("(in force until 2026-11-28 04:00 CET)")
    assert lines[2].endswith("(over)")
    assert describe_windows([w], utc(2026, 11, 27))[1].endswith("(next from 2026-11-28 02:00 CET)")
    future = window(name="later", start="2027-01-01T00:00", end="2027-01-01T01:00")
    assert describe_windows([future], utc(2026, 11, 27))[1].endswith("(to come)")
    assert describe_windows([]) == ["maintenance windows: none"]


MISTAKES = [
    (
        'start = "2026-12-05T22:00"\nend = "2026-12-05T21:00"',
        "maintenance[0].end: must be after start (2026-12-05 22:00 UTC) (got '2026-12-05T21:00')",
    ),
    (
        'start = "2026-12-05T22:00"\nend = "2027-12-05T22:00"',
        "maintenance[0].end: must be at most 31 days after start",
    ),
    (
        'zone = "Mars/Olympus"\ndays = ["sat"]\nat = "02:00"\nduration = "2h"',
        "maintenance[0].zone: unknown time zone: 'Mars/Olympus'",
    ),
    ('zone = ""\nstart = 2026-12-24\nend = 2026-12-27', "maintenance[0].zone: not a time zone: ''"),
    ('days = ["sat"]\nat = "2:0"\nduration = "1h"', "maintenance[0].at: not a time of day: '2:0'"),
    ("start = 2026-12-24\nend = 2026-12-23", "maintenance[0].end: must be after start"),
    (
        'zone = "../../etc/passwd"\ndays = ["sat"]\nat = "02:00"\nduration = "2h"',
        "maintenance[0].zone: unknown time zone",
    ),
    (
        'days = ["sabado"]\nat = "02:00"\nduration = "2h"',
        "maintenance[0].days: not a day: 'sabado'",
    ),
    ('days = [6]\nat = "02:00"\nduration = "2h"', "maintenance[0].days: not a day: 6"),
    ('days = []\nat = "02:00"\nduration = "2h"', "maintenance[0].days: a list of days"),
    ('days = ["sat"]\nat = "25:00"\nduration = "2h"', "maintenance[0].at: not a time of day"),
    ('days = ["sat"]\nat = "2pm"\nduration = "2h"', "maintenance[0].at: not a time of day: '2pm'"),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "two hours"',
        "maintenance[0].duration: not a duration: 'two hours'",
    ),
    ('days = ["sat"]\nat = "02:00"\nduration = "0s"', "maintenance[0].duration: must be more"),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "8d"',
        "maintenance[0].duration: must be at most 7d",
    ),
    ('days = ["sat"]\nat = "02:00"', "maintenance[0]: a recurring window needs duration too"),
    ('start = "2026-12-05T22:00"', "maintenance[0]: a one-off window needs end too"),
    ("", "maintenance[0]: say when: start and end (one-off), or days, at and duration"),
    (
        'start = "2026-12-05T22:00"\nend = "2026-12-05T23:00"\ndays = ["sat"]',
        "maintenance[0]: a window is one-off (start, end) or recurring",
    ),
    (
        'start = "soon"\nend = "2026-12-05T23:00"',
        "maintenance[0].start: not a date and time: 'soon'",
    ),
    ("start = 5\nend = 6", "maintenance[0].start: a date and time such as"),
    (
        'start = "0001-01-01T00:00"\nend = "0001-01-02T00:00"',
        "maintenance[0].start: not a plausible time: '0001-01-01 00:00:00' (years 2000-2199)",
    ),
    (
        'start = "2026-01-01T00:00"\nend = 9999-12-31T23:59:59-14:00',
        "maintenance[0].end: not a plaus",
    ),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "1h"\nservices = ["wbe"]',
        "maintenance[0].services[0]: no service named 'wbe' (services: docs, web)",
    ),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "1h"\ntier = "prod"',
        "maintenance[0].tier: no tier named 'prod'",
    ),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "1h"\nservices = []',
        "maintenance[0].services: an empty list",
    ),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "1h"\nservices = ["web"]\ntier = "production"',
        "maintenance[0]: a window is for a tier or for named services, not both",
    ),
    (
        'days = ["sat"]\nat = "02:00"\nduration = "1h"\nwhen = "x"',
        "maintenance[0].when: unknown key",
    ),
]


@pytest.mark.parametrize(("body", "said"), MISTAKES)
def test_a_bad_window_exits_2_naming_file_key_and_value(
    write: Write, capsys: pytest.CaptureFixture[str], body: str, said: str
) -> None:
    path = write(f'{SERVICES}\n[[maintenance]]\nname = "w"\nreason = "r"\n{body}\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {said}" in err, err


def test_two_windows_with_one_name_exit_2(write: Write, capsys: pytest.CaptureFixture[str]) -> None:
    one = (
        '[[maintenance]]\nname = "w"\nreason = "r"\ndays = ["sat"]\nat = "02:00"\nduration = "1h"\n'
    )
    path = write(SERVICES + one + one)
    assert main(["check", "--config", str(path)]) == 2
    assert f"{path}: maintenance[1].name: two windows are named 'w'" in capsys.readouterr().err


def test_the_example_has_both_kinds() -> None:
    """(tests/test_cli.py runs `check` on every example.)"""
    from tests.conftest import ROOT

    example = ROOT / "examples" / "maintenance.toml"
    environ = dict.fromkeys(
        re.findall(r"\$\{([A-Z_]+)\}", example.read_text()), "http://127.0.0.1:9"
    )
    plan = build_plan(example, load_environment({}), environ)
    assert len(plan.config.maintenance) >= 2
    assert {w.recurring for w in plan.config.maintenance} == {True, False}


# -- the controller --------------------------------------------------------------------------

BAD = {"v2": {"error_ratio": 0.5}}
CONSOLE = '\n[[channels]]\ntype = "console"\nname = "ops"\nstream = "stderr"\n'


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD)
    await stage.start_servers()
    yield stage
    await stage.close()


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def one_off(start: float, end: float, **extra: str) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return (
        f'\n[[maintenance]]\nname = "deploy-freeze"\nreason = "migration"\n'
        f'start = "{iso(start)}"\nend = "{iso(end)}"\n{lines}'
    )


async def holds(stage: Stage) -> list[dict[str, Any]]:
    return await events(stage, "rollback_held")


async def test_a_window_holds_and_the_next_evaluation_after_it_rolls_back(stage: Stage) -> None:
    """Level-triggered: the window was in force before railguard started (nothing saw it
    begin), and ends while the rule still fires."""
    t0 = stage.clock.time()
    ends = t0 + 45
    stage.extra_config = CONSOLE + one_off(t0 - 3600, ends)
    good = await known_good(stage)  # 12s
    stage.deploy("v2")
    await stage.run_for(30)  # the rule fires (for 5s) well inside the window
    assert stage.applied_rollbacks() == []
    (held,) = await holds(stage)  # once per episode, not once per evaluation
    assert held["guard"] == "maintenance"
    assert held["why"] == (
        f"maintenance window deploy-freeze until "
        f"{datetime.fromtimestamp(ends, UTC):%Y-%m-%d %H:%M} UTC: migration"
    )
    assert held["rule"] == "error-rate"  # the evidence, as for any other hold
    assert held["samples"]
    assert stage.clock.time() < ends
    await stage.run_for(15)  # the window ends; the rule still fires
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert record.decided_at >= ends
    assert record.decided_at - ends < 3  # at the first evaluations after it
    assert stage.daemon is not None
    held_count = stage.daemon.metrics.registry.get_sample_value(
        "railguard_rollback_held_total",
        {"service": "web", "tier": "production", "guard": "maintenance"},
    )
    assert held_count == 1
    # Alerts as during a freeze: the rule's alert, the hold's, then the rollback's.
    told = [Notification.from_dict(m.payload) for m in await store_of(stage).outbox("ops")]
    at = {n.title: n.at for n in told}
    assert at["web: error-rate firing"] < ends
    assert at["web: rollback held back (maintenance)"] < ends
    assert at["web: rollback #1 started: v2 → v1.1"] >= ends
    (hold,) = [n for n in told if n.title.endswith("(maintenance)")]
    assert hold.text == held["why"]


async def test_a_recurring_window_holds_from_the_clock(stage: Stage) -> None:
    """Daily at 22:13 UTC for 1m: the stage's clock starts at 22:13:20, inside it."""
    stage.extra_config = (
        '\n[[maintenance]]\nname = "nightly"\nreason = "backup"\ndays = ["daily"]\n'
        'at = "22:13"\nduration = "1m"\ntier = "production"\n'
    )
    good = await known_good(stage)
    stage.deploy("v2")
    await stage.run_for(25)  # to 22:13:57
    assert stage.applied_rollbacks() == []
    assert [h["guard"] for h in await holds(stage)] == ["maintenance"]
    await stage.run_for(10)
    assert stage.applied_rollbacks() == [good]


async def test_a_window_for_other_services_does_not_hold(stage: Stage) -> None:
    t0 = stage.clock.time()
    stage.extra_config = one_off(t0 - 60, t0 + 3600, tier='"staging"')
    good = await known_good(stage)
    stage.deploy("v2")
    await stage.run_for(20)
    assert stage.applied_rollbacks() == [good]
    assert await holds(stage) == []


async def test_a_window_starting_during_the_reconcile_window_never_stops_the_resend(
    stage: Stage,
) -> None:
    """The intent was decided before the window: its resend (Railway provably did not apply
    the first attempt) is not a new decision, so it goes ahead, once."""
    t0 = stage.clock.time()
    starts = t0 + 24
    stage.extra_config = one_off(starts, t0 + 3600)
    stage.emu.set_faults(drop_count=1, fault_operations=["DeploymentRollback"])
    good = await known_good(stage)
    stage.deploy("v2")
    store = store_of(stage)
    for _ in range(80):
        await stage.run_for(0.5)
        rows = await store.rollbacks("web")
        if rows and rows[0].attempts == 1:
            break
    else:
        pytest.fail("no attempt was made")
    assert rows[0].decided_at < starts  # decided before the window
    assert stage.applied_rollbacks() == []  # the first attempt was dropped on its way
    await stage.run_for(50)  # the window starts; the reconcile window passes
    assert stage.clock.time() > starts + 20
    assert stage.applied_rollbacks() == [good]
    (record,) = await store.rollbacks("web")
    assert record.state == "succeeded", record.error
    assert await holds(stage) == []


async def test_status_shows_the_window_in_force_and_the_next(stage: Stage) -> None:
    t0 = stage.clock.time()
    stage.extra_config = one_off(t0 - 60, t0 + 600) + (
        '\n[[maintenance]]\nname = "weekly"\nreason = "backup"\ndays = ["wed"]\n'
        'at = "03:00"\nduration = "1h"\nzone = "Europe/Berlin"\nservices = ["web"]\n'
    )
    await known_good(stage)
    assert stage.daemon is not None
    (entry,) = (await stage.daemon.status_document())["services"]
    assert entry["maintenance"]["active"] == {
        "name": "deploy-freeze",
        "starts_at": t0 - 60,
        "ends_at": t0 + 600,
        "reason": "migration",
        "zone": "UTC",
    }
    # 2023-11-15 (Wednesday) 03:00 CET is 02:00 UTC.
    assert entry["maintenance"]["next"] == {
        "name": "weekly",
        "starts_at": utc(2023, 11, 15, 2),
        "ends_at": utc(2023, 11, 15, 3),
        "reason": "backup",
        "zone": "Europe/Berlin",
    }
