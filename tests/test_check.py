"""``railguard check`` warnings: a valid config that will not do what it says (exit 0, each
``warning:`` line naming the key and the numbers), and ``--strict`` failing on them (exit 1)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.environment import load_environment
from monitor.planning import build_plan
from tests.conftest import ROOT

Write = Callable[..., Path]

RAILWAY_SERVICE = """
[[services]]
name = "web"
tier = "preview"
service_id = "svc"
environment_id = "env-a"
health_url = "http://127.0.0.1:9/health"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("RAILGUARD_", "RAILWAY_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAILWAY_API_TOKEN", "api-token-value")


def check(path: Path, *flags: str) -> tuple[int, str, list[str]]:
    out = io.StringIO()
    code = main(["check", "--config", str(path), *flags], stdout=out)
    text = out.getvalue()
    return code, text, [line for line in text.splitlines() if line.startswith("warning: ")]


def budget(per_hour: int, poll: str, reserve: float) -> str:
    return (
        RAILWAY_SERVICE
        + f'[railway]\nrequests_per_hour = {per_hour}\npoll_interval = "{poll}"\n'
        + f"reserve = {reserve}\n"
    )


# -- the Railway API budget -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("poll", "warned"),
    [("35s", True), ("36s", False), ("1m", False)],  # 3600/36 = 100/hour: the whole plan
)
def test_polling_over_the_plans_limit_warns(write: Write, poll: str, warned: bool) -> None:
    path = write(budget(100, poll, 0))
    code, text, warnings = check(path)
    assert code == 0
    if not warned:
        assert warnings == []
        assert text.rstrip().endswith("config OK")
        return
    (line,) = warnings
    assert line.startswith(f"warning: {path}: railway.requests_per_hour: polling needs ")
    assert "102.857 requests/hour (one request per poll_interval 35s), 103% of the plan's " in line
    assert "100/hour" in line
    assert "set railway.poll_interval to at least 36s, or take a bigger plan (Free 100, " in line
    assert "fewer services do not help" in line
    assert text.rstrip().endswith("config OK (1 warning)")


def test_the_issue_case_120_percent_says_what_to_change(write: Write) -> None:
    # Railway's Free plan (100/hour) polled every 30s: 120 an hour.
    code, _, warnings = check(write(budget(100, "30s", 0.2)))
    assert code == 0
    (line,) = warnings
    assert "polling needs 120 requests/hour (one request per poll_interval 30s), 120% of " in line
    assert "railguard slows polling to 80/hour (about one request every 45s), keeping 20/hour" in (
        line
    )
    assert "set railway.poll_interval to at least 45s" in line


@pytest.mark.parametrize(("poll", "warned"), [("44s", True), ("45s", False)])
def test_polling_into_the_reserve_warns(write: Write, poll: str, warned: bool) -> None:
    # 100/hour less a 20% reserve leaves polling 80/hour: every 45s.
    path = write(budget(100, poll, 0.2))
    code, _, warnings = check(path)
    assert code == 0
    if not warned:
        assert warnings == []
        return
    (line,) = warnings
    assert line.startswith(f"warning: {path}: railway.reserve: polling needs 81.8182 requests")
    assert "more than the 80/hour the reserve (0.2) leaves of the plan's 100/hour" in line
    assert "set railway.poll_interval to at least 45s" in line
    assert line.endswith("or lower railway.reserve")


def test_pr_environment_looks_count_and_the_suggestion_fits_them(write: Write) -> None:
    text = budget(100, "1m", 0) + 'project_id = "p"\n[pr_environments]\nevery = "1m"\n'
    text += '[[pr_environments.services]]\nfrom = "web"\n'
    text += 'health_url = "http://127.0.0.1:9/{environment}/health"\n'
    path = write(text)
    code, _, warnings = check(path)  # 60 polls + 60 looks an hour
    assert code == 0
    budget_lines = [w for w in warnings if "railway.requests_per_hour" in w]
    (line,) = budget_lines
    assert "polling needs 120 requests/hour (one request per poll_interval 1m and one per " in line
    assert "pr_environments look every 1m)" in line
    assert "at least 1m12s" in line  # 50 polls + 50 looks
    env = load_environment({"RAILWAY_API_TOKEN": "t"})
    plan = build_plan(path, env, {})
    from monitor.checks import polling_cost

    assert polling_cost(plan, 72.0) == 100.0


def test_no_poll_interval_fits_a_tiny_plan(write: Write) -> None:
    code, _, warnings = check(write(budget(1, "30s", 0.5)))
    assert code == 0
    (line,) = warnings
    assert "no poll_interval up to 1h fits, or take a bigger plan" in line
    assert "railguard cannot poll at all" in line


def test_with_database_url_the_budget_warning_speaks_of_replicas(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://railguard@127.0.0.1:9/railguard")
    _, _, warnings = check(write(budget(100, "30s", 0)))
    (line,) = warnings
    assert "with DATABASE_URL every replica polls: requests_per_hour is each replica's " in line


def test_services_without_railway_ids_cost_no_budget(write: Write) -> None:
    text = budget(1, "1s", 0).replace('service_id = "svc"\nenvironment_id = "env-a"\n', "")
    assert check(write(text))[2] == []


# -- alerts that reach no channel -----------------------------------------------------------

TIERS = """
[[services]]
name = "web-production"
tier = "production"
health_url = "http://127.0.0.1:9/health"
error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }
memory = { source = "exposition", url = "http://127.0.0.1:9/metrics", limit = "1GiB" }

[[services]]
name = "web-staging"
tier = "staging"
health_url = "http://127.0.0.1:9/health"
error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }

[[services]]
name = "web-preview"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


def test_alerts_with_no_channel_at_all_warn_for_each_tier_that_sends(write: Write) -> None:
    path = write(TIERS)
    code, _, warnings = check(path)
    assert code == 0
    assert warnings == [
        f"warning: {path}: tiers.production.delivery: immediate alerts (severity critical) for "
        "services web-production reach no channel (no [[channels]] is configured): they only "
        'go to the log. Add a [[channels]] table that takes them, or set delivery = "off"',
        f"warning: {path}: tiers.staging.delivery: digest alerts (severity warning) for "
        "services web-staging reach no channel (no [[channels]] is configured): they only go "
        'to the log. Add a [[channels]] table that takes them, or set delivery = "off"',
    ]  # preview's delivery is off: nothing to send


@pytest.mark.parametrize(
    ("channel", "warned_tiers"),
    [
        ('type = "console"', []),
        ('type = "console"\ntiers = ["production"]', ["staging"]),
        ('type = "console"\ntiers = ["production", "staging"]', []),
        ('type = "console"\nmin_severity = "critical"', ["staging"]),
        ('type = "console"\nmin_severity = "warning"', []),
        ('type = "console"\ntiers = ["preview"]', ["production", "staging"]),
    ],
)
def test_a_channel_whose_filters_leave_a_tier_out_warns_for_that_tier(
    write: Write, channel: str, warned_tiers: list[str]
) -> None:
    code, _, warnings = check(write(TIERS + f"[[channels]]\n{channel}\n"))
    assert code == 0
    assert [re.search(r"tiers\.(\w+)\.delivery", w)[1] for w in warnings] == warned_tiers  # type: ignore[index]
    for line in warnings:
        assert "(every channel's tiers or min_severity leaves them out)" in line


def test_a_tier_turned_off_does_not_warn(write: Write) -> None:
    text = TIERS + '[tiers.production]\ndelivery = "off"\n[tiers.staging]\ndelivery = "off"\n'
    assert check(write(text))[2] == []


def test_a_pr_environment_tier_with_no_channel_warns(write: Write) -> None:
    text = RAILWAY_SERVICE + '[railway]\nproject_id = "p"\n[tiers.pr]\ndelivery = "immediate"\n'
    text += '[pr_environments]\ntier = "pr"\n[[pr_environments.services]]\nfrom = "web"\n'
    text += 'health_url = "http://127.0.0.1:9/{environment}/health"\n'
    path = write(text)
    _, _, warnings = check(path)
    assert any(
        "tiers.pr.delivery: immediate alerts (severity warning) for PR environments reach no "
        "channel" in w
        for w in warnings
    ), warnings


def test_many_services_are_named_up_to_five(write: Write) -> None:
    text = "".join(
        f'[[services]]\nname = "s{i}"\ntier = "staging"\nhealth_url = "http://127.0.0.1:9/h"\n'
        'error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }\n'
        for i in range(7)
    )
    (line,) = check(write(text))[2]
    assert "for services s0, s1, s2, s3, s4 and 2 more reach no channel" in line


# -- a project token across environments ----------------------------------------------------


def two_environments(second: str = "env-b") -> str:
    return (
        RAILWAY_SERVICE
        + RAILWAY_SERVICE.replace('"web"', '"web-2"').replace('"env-a"', f'"{second}"')
        + RAILWAY_SERVICE.replace('"web"', '"web-3"').replace('"env-a"', f'"{second}"')
    )


def test_a_project_token_for_services_in_two_environments_warns(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAILWAY_API_TOKEN")
    monkeypatch.setenv("RAILWAY_PROJECT_TOKEN", "project-token-value")
    code, text, warnings = check(write(two_environments()))
    assert code == 0
    assert warnings == [
        "warning: environment: RAILWAY_PROJECT_TOKEN: a project token sees one environment, but "
        "the services on Railway are in 2 environments (env-a: web; env-b: web-2, web-3): "
        "Railway refuses those the token cannot see, so their Railway signals are unknown and "
        "their rollbacks held. Use a workspace token in RAILWAY_API_TOKEN instead, or one "
        "railguard per environment, each with that environment's project token"
    ]
    assert "project-token-value" not in text


def test_a_project_token_wins_over_an_api_token_and_the_warning_says_so(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILWAY_PROJECT_TOKEN", "project-token-value")
    (line,) = check(write(two_environments()))[2]
    assert "a project token sees one environment (it is used when both are set), but" in line


def test_environment_ids_from_the_environment_are_shown_as_written(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAILWAY_PROJECT_TOKEN", "project-token-value")
    monkeypatch.setenv("STAGING_ENV_ID", "0f2a-staging-environment")
    (line,) = check(write(two_environments("${STAGING_ENV_ID}")))[2]
    assert "(env-a: web; ${STAGING_ENV_ID}: web-2, web-3)" in line


@pytest.mark.parametrize("project_token", [True, False])
def test_one_environment_or_an_api_token_does_not_warn(
    write: Write, monkeypatch: pytest.MonkeyPatch, project_token: bool
) -> None:
    if project_token:
        monkeypatch.setenv("RAILWAY_PROJECT_TOKEN", "project-token-value")
        text = two_environments("env-a")  # all three in one environment
    else:
        text = two_environments()  # an API token sees the project
    assert check(write(text))[2] == []


# -- --strict -------------------------------------------------------------------------------


def test_strict_fails_with_1_on_a_warning_and_passes_without(write: Write) -> None:
    over = write(budget(100, "30s", 0.2), "over.toml")
    code, text, warnings = check(over, "--strict")
    assert code == 1
    assert len(warnings) == 1
    assert text.rstrip().endswith("config valid, but 1 warning (--strict)")
    fine = write(budget(1000, "30s", 0.2), "fine.toml")
    code, text, _ = check(fine, "--strict")
    assert code == 0
    assert text.rstrip().endswith("config OK")


def test_strict_counts_what_run_would_refuse(write: Write, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAILWAY_API_TOKEN")  # services on Railway, and no token to ask it
    code, text, warnings = check(write(TIERS + RAILWAY_SERVICE), "--strict")
    assert code == 1
    assert any("neither RAILWAY_API_TOKEN nor RAILWAY_PROJECT_TOKEN is set" in w for w in warnings)
    assert text.rstrip().endswith("config valid, but 3 warnings (--strict)")


def test_strict_still_exits_2_on_a_bad_config(write: Write) -> None:
    assert check(write('[[services]]\nname = "x"\n'), "--strict")[0] == 2


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name
)
def test_examples_pass_check_strict(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in re.findall(r"\$\{([A-Z_]+)\}", example.read_text()):
        monkeypatch.setenv(name, "http://127.0.0.1:9" if name.endswith("_URL") else f"id-{name}")
    code, text, warnings = check(example, "--strict")
    assert (code, warnings) == (0, []), text


def test_check_lists_the_maintenance_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    example = ROOT / "examples" / "maintenance.toml"
    for name in re.findall(r"\$\{([A-Z_]+)\}", example.read_text()):
        monkeypatch.setenv(name, "http://127.0.0.1:9" if name.endswith("_URL") else f"id-{name}")
    code, text, _ = check(example)
    assert code == 0
    listed = text.split("maintenance windows (", 1)[1].splitlines()[1:]
    assert listed
    assert all(line.startswith("  ") for line in listed[:2])


# -- the leader lease -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "warned"),
    [
        ("", False),  # ttl 10s, every 3s: 8s of acting holds two renewals and more
        ('ttl = "10s"\nrenew_every = "4s"\n', False),
        ('ttl = "10s"\nrenew_every = "4.5s"\n', True),
        ('ttl = "10s"\nrenew_every = "7.9s"\n', True),
    ],
)
def test_a_lease_renewed_too_seldom_to_survive_one_slow_renewal_warns(
    write: Write, monkeypatch: pytest.MonkeyPatch, lease: str, warned: bool
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://railguard:pw@127.0.0.1:9/railguard")
    code, _, warnings = check(write(RAILWAY_SERVICE + "[lease]\n" + lease))
    assert code == 0
    mine = [w for w in warnings if "lease.renew_every" in w]
    assert bool(mine) is warned, warnings
    if warned:
        assert "renew at most every 4s" in mine[0]
        assert "pw" not in mine[0]
        assert check(write(RAILWAY_SERVICE + "[lease]\n" + lease), "--strict")[0] == 1
