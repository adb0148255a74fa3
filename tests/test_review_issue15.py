"""Review of issue 15's changes ([[apps]], check warnings, maintenance windows, the alert
router waiting for the controller): each test is a hole found, then closed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.maintenance import in_force

Write = Callable[..., Path]

SERVICES = """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


@pytest.mark.parametrize(
    ("days", "duration", "gap"),
    [
        ('"daily"', "24h", "1d"),  # back to back: never a moment without
        ('"daily"', "30h", "1d"),
        ('["sat"]', "7d", "7d"),  # the longest duration allowed, weekly
        ('["sat", "sun"]', "1d", "1d"),
        ('["mon", "wed", "fri", "sun"]', "2d", "1d"),  # sun -> mon is one day
    ],
)
def test_a_recurring_window_that_never_ends_exits_2(
    write: Write, capsys: pytest.CaptureFixture[str], days: str, duration: str, gap: str
) -> None:
    """A recurring window whose occurrences meet or overlap holds rollback for ever: a
    permanent freeze nobody asked for, not a window (the 7d cap alone misses it)."""
    body = f'days = {days}\nat = "02:00"\nduration = "{duration}"'
    path = write(f'{SERVICES}\n[[maintenance]]\nname = "w"\nreason = "r"\n{body}\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: maintenance[0].duration: must be less than {gap}" in err, err
    assert "Traceback" not in err


def test_a_recurring_window_shorter_than_its_gaps_is_fine(write: Write) -> None:
    body = 'days = ["mon", "thu"]\nat = "02:00"\nduration = "71h"'
    path = write(f'{SERVICES}\n[[maintenance]]\nname = "w"\nreason = "r"\n{body}\n')
    assert main(["check", "--config", str(path)]) == 0
    from monitor.environment import load_environment
    from monitor.planning import build_plan

    (window,) = build_plan(path, load_environment({}), {}).config.maintenance
    sunday = 1_765_108_800.0  # 2025-12-07 12:00 UTC: thursday 02:00 + 71h is over
    assert in_force([window], sunday) is None
    assert in_force([window], sunday - 12 * 3600) is not None


APP = """
[[apps]]
name = "app"
{app}
[apps.environments.preview]
tier = "preview"
url = "http://127.0.0.1:9"

[apps.environments.staging]
tier = "staging"
url = "http://127.0.0.1:9"
error_rate = {{ source = "exposition", url = "/metrics" }}
"""


@pytest.mark.parametrize(
    ("app", "said"),
    [
        # The app's own override reaches preview, whose tier has no such rule: the file
        # wrote it at the app's table, not at the environment's.
        (
            '[apps.rules.error-rate]\nfor = "1m"',
            "apps[0].rules.error-rate: tier 'preview' does not use rule 'error-rate'",
        ),
        (
            "[apps.rules.health-failing]\nthreshold = 2",
            "apps[0].rules.health-failing (app-preview): always fires",
        ),
    ],
)
def test_a_mistake_in_an_apps_own_table_is_named_where_the_file_wrote_it(
    write: Write, capsys: pytest.CaptureFixture[str], app: str, said: str
) -> None:
    path = write(APP.format(app=app))
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: {said}" in err, err


@pytest.mark.parametrize("zone", ["localtime", "posixrules"])
def test_the_machines_own_zone_is_not_a_windows_zone(
    write: Write, capsys: pytest.CaptureFixture[str], zone: str
) -> None:
    """``localtime`` is a file in the tz directory (a link to /etc/localtime), not a tz
    database name: the same config would hold at other hours on a laptop (where check ran)
    and in railguard's container (UTC, or no such file)."""
    body = f'zone = "{zone}"\ndays = ["sat"]\nat = "02:00"\nduration = "2h"'
    path = write(f'{SERVICES}\n[[maintenance]]\nname = "w"\nreason = "r"\n{body}\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: maintenance[0].zone: not a time zone: '{zone}'" in err, err
