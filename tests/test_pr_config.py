"""``[pr_environments]``: validated at start (exit 2 naming the key and the value), shown by
``railguard check``, and each PR environment's services planned from their templates."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.environment import load_environment
from monitor.errors import ConfigError
from monitor.plan import Plan
from monitor.planning import build_plan
from monitor.pr_config import fill, service_name
from monitor.pr_plan import pr_service_plans
from monitor.railway.environments import PrEnvironment

Write = Callable[..., Path]

BASE = """
[railway]
project_id = "proj-1"
poll_interval = "30s"

[tiers.production]
rules = ["health-failing", "error-rate", "deployment-crashed"]

[[services]]
name = "web"
tier = "production"
service_id = "svc-web"
environment_id = "env-prod"
interval = "10s"
health = { url = "https://web.example.com/health", timeout = "2s", expected_status = [200] }
error_rate = { source = "exposition", url = "https://web.example.com/metrics" }
memory = { source = "railway" }

[services.rules.health-failing]
for = "1m"
[services.rules.error-rate]
for = "1m"
"""
PR = """
[pr_environments]
[[pr_environments.services]]
from = "web"
health_url = "https://web-{environment}.up.railway.app/health"
"""


def plan_of(write: Write, text: str, environ: dict[str, str] | None = None) -> Plan:
    environ = environ or {}
    path = write(textwrap.dedent(text))
    return build_plan(path, load_environment(environ), environ)


def test_a_pr_environment_gets_the_templates_services_on_the_preview_tier(write: Write) -> None:
    plan = plan_of(write, BASE + PR)
    assert plan.pr_environments is not None
    assert plan.project_id == "proj-1"
    (service,) = pr_service_plans(plan, PrEnvironment("env-pr-7", "web-pr-7"))
    config = service.config
    assert service.name == "web.web-pr-7"
    assert (service.tier, service.policy.auto_rollback, service.policy.delivery) == (
        "preview",
        False,
        "off",
    )
    assert (config.service_id, config.environment_id) == ("svc-web", "env-pr-7")
    assert config.interval == 10.0
    check = service.health
    assert check is not None
    assert check.url == "https://web-web-pr-7.up.railway.app/health"
    assert (check.timeout, check.expected_status) == (2.0, [200])
    # The app's own exposition is the base environment's: only Railway's signals are copied.
    assert config.error_rate is None
    assert config.memory is not None
    assert [r.name for r in service.rules] == ["health-failing"]
    assert service.rules[0].for_ == 60.0  # the template's override, for the tier's rules


def test_check_shows_it_and_counts_its_requests(write: Write) -> None:
    plan = plan_of(write, BASE + PR.replace("[pr_environments]", '[pr_environments]\nevery = "2m"'))
    text = plan.describe()
    assert (
        "pr environments: the project proj-1's, looked for every 2m, guarded as tier preview"
        in text
    )
    assert "  web -> web.<environment>: https://web-{environment}.up.railway.app/health" in text
    assert plan.railway_requests_per_hour() == 120 + 30
    assert plan.run_problems() == [
        "services web are on Railway, but neither RAILWAY_API_TOKEN nor "
        "RAILWAY_PROJECT_TOKEN is set"
    ]


def test_the_project_may_come_from_railway_project_id(write: Write) -> None:
    text = BASE.replace('project_id = "proj-1"\n', "") + PR
    plan = plan_of(write, text, {"RAILWAY_PROJECT_ID": "proj-env"})
    assert plan.project_id == "proj-env"
    with pytest.raises(
        ConfigError, match=r"pr_environments: needs railway.project_id \(or RAILWAY_PROJECT_ID\)"
    ):
        plan_of(write, text)


def test_disabled_it_is_not_guarded_nor_checked(write: Write) -> None:
    text = BASE.replace('project_id = "proj-1"\n', "") + PR
    plan = plan_of(write, text.replace("[pr_environments]", "[pr_environments]\nenabled = false"))
    assert plan.pr_environments is None
    assert pr_service_plans(plan, PrEnvironment("e", "n")) == ()
    assert "pr environments" not in plan.describe()


def test_a_project_token_cannot_list_pr_environments(write: Write) -> None:
    plan = plan_of(write, BASE + PR)
    plan = Plan(
        path=plan.path,
        config=plan.config,
        env=load_environment({"RAILWAY_PROJECT_TOKEN": "t"}),
        services=plan.services,
        rules=plan.rules,
    )
    assert plan.run_problems() == [
        "pr_environments needs RAILWAY_API_TOKEN: a project token sees one environment, "
        "not the project's PR environments"
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            ('from = "web"', 'from = "api"'),
            "pr_environments.services[0].from: no configured service named 'api' (services: web)",
            id="unknown-template",
        ),
        pytest.param(
            ("[pr_environments]", '[pr_environments]\ntier = "qa"'),
            "pr_environments.tier: no tier named 'qa'",
            id="unknown-tier",
        ),
        pytest.param(
            ("{environment}.up", "{env}.up"),
            "pr_environments.services[0].health_url: unknown placeholder {env} "
            "(known: {environment}, {environment_id}, {service})",
            id="unknown-placeholder",
        ),
        pytest.param(
            ("https://web-{environment}.up.railway.app/health", "web-{environment}/health"),
            "must be an http:// or https:// URL with a host, once its placeholders are filled in",
            id="not-a-url",
        ),
        pytest.param(
            ("{environment}.up", "{environment.up"),
            "pr_environments.services[0].health_url: not a URL template",
            id="unbalanced-brace",
        ),
        pytest.param(
            ("[pr_environments]", '[pr_environments]\nevery = "1s"'),
            "pr_environments.every",
            id="too-often",
        ),
        pytest.param(
            ("[pr_environments]", "[pr_environments]\nsurprise = 1"),
            "pr_environments.surprise: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            ('health_url = "https://web-{environment}.up.railway.app/health"\n', ""),
            "pr_environments.services[0] (web.web-pr-1): rule 'health-failing' of tier "
            "'preview' needs the health signal",
            id="no-health-url",
        ),
        pytest.param(
            ('from = "web"\n', 'from = "web"\n[[pr_environments.services]]\nfrom = "web"\n'),
            "service 'web' is listed twice",
            id="twice",
        ),
    ],
)
def test_mistakes_name_the_key_and_the_value(
    write: Write, change: tuple[str, str], expected: str
) -> None:
    text = BASE + PR.replace(*change)
    with pytest.raises(ConfigError) as caught:
        plan_of(write, text)
    assert expected in str(caught.value)


def test_a_template_needs_railway_ids(write: Write) -> None:
    text = (
        BASE + PR + '\n[[services]]\nname = "local"\ntier = "preview"\nhealth_url = "http://x/h"\n'
    )
    with pytest.raises(ConfigError, match="service 'local' has no service_id and environment_id"):
        plan_of(write, text.replace('from = "web"', 'from = "local"'))


def test_names_and_urls_from_railway_are_made_safe() -> None:
    assert service_name("web", "web-pr-7") == "web.web-pr-7"
    assert service_name("web", "feat/new thing!") == "web.feat-new-thing"
    assert len(service_name("web", "x" * 200)) == 100
    url = fill(
        "https://h/{environment}/{service}", environment="a b/c", environment_id="i", service="web"
    )
    assert url == "https://h/a%20b%2Fc/web"
