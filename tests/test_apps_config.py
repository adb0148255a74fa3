"""``[[apps]]``: one app in several environments expands to the services a person would write,
and a mistake in it exits 2 naming the key the file wrote."""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.cli import main
from monitor.environment import load_environment
from monitor.errors import ConfigError
from monitor.plan import Plan
from monitor.planning import build_plan
from tests.conftest import ROOT
from tests.test_config_garbage import KEY_PATH, scalars

Write = Callable[..., Path]

ENVIRON = {
    "APP_SERVICE_ID": "svc-app",
    "PRODUCTION_ENV_ID": "env-production",
    "STAGING_ENV_ID": "env-staging",
    "PREVIEW_ENV_ID": "env-preview",
    "PRODUCTION_URL": "https://app.example.com",
    "STAGING_URL": "https://staging.app.example.com",
    "PREVIEW_URL": "https://preview.app.example.com",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/secret",
}

# examples/railway-three-tier.toml before it used [[apps]]: the same setup, by hand.
THREE_TIER_BY_HAND = """
[railway]
requests_per_hour = 1000
poll_interval = "30s"
reserve = 0.2

[[services]]
name = "app-production"
tier = "production"
service_id = "${APP_SERVICE_ID}"
environment_id = "${PRODUCTION_ENV_ID}"
health_url = "${PRODUCTION_URL}/health"
interval = "15s"
error_rate = { source = "railway" }
memory = { source = "railway" }
latency = { source = "railway" }

[[services]]
name = "app-staging"
tier = "staging"
service_id = "${APP_SERVICE_ID}"
environment_id = "${STAGING_ENV_ID}"
health_url = "${STAGING_URL}/health"
interval = "15s"
error_rate = { source = "railway" }

[[services]]
name = "app-preview"
tier = "preview"
service_id = "${APP_SERVICE_ID}"
environment_id = "${PREVIEW_ENV_ID}"
health_url = "${PREVIEW_URL}/health"
interval = "15s"

[[channels]]
type = "slack"
url = "${SLACK_WEBHOOK_URL}"
"""


def plan_at(path: Path, environ: dict[str, str] | None = None) -> Plan:
    return build_plan(path, load_environment({}), ENVIRON if environ is None else environ)


def plan_of(write: Write, text: str, name: str = "railguard.toml") -> Plan:
    return plan_at(write(textwrap.dedent(text), name))


def assert_same_services(by_apps: Plan, by_hand: Plan) -> None:
    """Everything the daemon takes from a service: its config, policy, rules, skipped rules."""
    assert [s.name for s in by_apps.services] == [s.name for s in by_hand.services]
    for got, want in zip(by_apps.services, by_hand.services, strict=True):
        assert got.config == want.config, got.name
        assert got == want
    assert by_apps.railway_requests_per_hour() == by_hand.railway_requests_per_hour()


def test_the_three_tier_example_expands_to_the_services_it_used_to_write(write: Write) -> None:
    by_apps = plan_at(ROOT / "examples" / "railway-three-tier.toml")
    by_hand = plan_of(write, THREE_TIER_BY_HAND)
    assert_same_services(by_apps, by_hand)
    assert by_apps.config.channels == by_hand.config.channels
    production = by_apps.services[0].config
    assert production.health_url == "https://app.example.com/health"
    assert (production.service_id, production.environment_id) == ("svc-app", "env-production")
    assert [(a.app, a.environment, a.service) for a in by_apps.config.apps] == [
        ("app", "production", "app-production"),
        ("app", "staging", "app-staging"),
        ("app", "preview", "app-preview"),
    ]
    assert by_hand.config.apps == ()


def test_shared_keys_overrides_and_paths_expand_like_hand_written_services(write: Write) -> None:
    by_apps = plan_of(
        write,
        """
        [[services]]
        name = "worker"
        tier = "preview"
        health_url = "http://127.0.0.1:9/health"

        [[apps]]
        name = "shop"
        service_id = "svc"
        interval = "20s"
        health_path = "/healthz"
        health = { timeout = "2s", expected_status = [200] }
        error_rate = { source = "exposition", url = "/metrics", min_requests = 5 }
        rules = { health-failing = { for = "1m" } }

        [apps.environments.production]
        tier = "production"
        environment_id = "env-p"
        url = "https://shop.test/"
        memory = { source = "railway" }
        health = { timeout = "3s" }
        rules = { error-rate = { threshold = "2%" } }

        [apps.environments.staging]
        name = "shop-stage"
        tier = "staging"
        environment_id = "env-s"
        url = "https://stg.test"
        interval = "30s"
        health_path = "/ready"
        """,
        "apps.toml",
    )
    by_hand = plan_of(
        write,
        """
        [[services]]
        name = "worker"
        tier = "preview"
        health_url = "http://127.0.0.1:9/health"

        [[services]]
        name = "shop-production"
        tier = "production"
        service_id = "svc"
        environment_id = "env-p"
        interval = "20s"
        health = { url = "https://shop.test/healthz", timeout = "3s", expected_status = [200] }
        error_rate = { source = "exposition", url = "https://shop.test/metrics", min_requests = 5 }
        memory = { source = "railway" }
        rules = { health-failing = { for = "1m" }, error-rate = { threshold = "2%" } }

        [[services]]
        name = "shop-stage"
        tier = "staging"
        service_id = "svc"
        environment_id = "env-s"
        interval = "30s"
        health = { url = "https://stg.test/ready", timeout = "2s", expected_status = [200] }
        error_rate = { source = "exposition", url = "https://stg.test/metrics", min_requests = 5 }
        rules = { health-failing = { for = "1m" } }
        """,
        "hand.toml",
    )
    assert_same_services(by_apps, by_hand)
    assert by_apps.config.where(0) == "services[0]"
    assert by_apps.config.where(2) == "apps[0].environments.staging"


def test_an_environment_without_url_has_no_health_check(write: Write) -> None:
    plan = plan_of(
        write,
        """
        [tiers.quiet]
        rules = []

        [[apps]]
        name = "batch"
        [apps.environments.production]
        tier = "quiet"
        """,
    )
    (service,) = plan.services
    assert service.name == "batch-production"
    assert service.health is None


def test_check_prints_the_services_an_app_expands_to(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RAILWAY_API_TOKEN", "token-123456")
    out = io.StringIO()
    example = ROOT / "examples" / "railway-three-tier.toml"
    assert main(["check", "--config", str(example)], stdout=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "apps (1), as the services they expand to:\n" in text
    # Shown as the file wrote them, never the values the environment filled in.
    assert (
        "  app in production -> app-production [production]: ${PRODUCTION_URL}/health, "
        "service_id ${APP_SERVICE_ID}, environment_id ${PRODUCTION_ENV_ID}\n"
    ) in text
    assert "  app in preview -> app-preview [preview]: ${PREVIEW_URL}/health," in text
    assert text.rstrip().endswith("config OK")


def test_check_prints_literal_ids_and_no_ids(write: Write) -> None:
    path = write(
        textwrap.dedent(
            """
            [[apps]]
            name = "web"
            service_id = "svc-1"
            [apps.environments.preview]
            tier = "preview"
            environment_id = "env-1"
            url = "http://127.0.0.1:9"
            [[apps]]
            name = "docs"
            [apps.environments.preview]
            tier = "preview"
            url = "http://127.0.0.1:9"
            """
        )
    )
    out = io.StringIO()
    assert main(["check", "--config", str(path)], stdout=out) == 0
    text = out.getvalue()
    assert "apps (2), as the services they expand to:" in text
    assert (
        "  web in preview -> web-preview [preview]: http://127.0.0.1:9/health, "
        "service_id svc-1, environment_id env-1"
    ) in text
    assert (
        "  docs in preview -> docs-preview [preview]: http://127.0.0.1:9/health, no Railway ids"
        in text
    )


APP = """
[[apps]]
name = "shop"
service_id = "svc"

[apps.environments.production]
tier = "production"
environment_id = "env-p"
url = "https://shop.example.com"
error_rate = { source = "railway" }
memory = { source = "railway" }
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The shape the expansion relies on, checked before it.
        (
            "apps = 3\n" + APP.split("[[apps]]")[0],
            "apps: must be an array of tables: write [[apps]] (got 3)",
        ),
        ("apps = [1]\n", "apps[0]: must be a table (got 1)"),
        ("[[apps]]\nname = 'x'\nbogus = 1\n", "apps[0].bogus: unknown key (known: environments,"),
        ("[[apps]]\n[apps.environments.p]\ntier = 'preview'\n", "apps[0].name: required key"),
        ("[[apps]]\nname = 7\n[apps.environments.p]\n", "apps[0].name: must be a string (got 7)"),
        ("[[apps]]\nname = 'x'\n", "apps[0].environments: an app needs its environments"),
        ("[[apps]]\nname = 'x'\nenvironments = {}\n", "apps[0].environments: an app needs"),
        ("[[apps]]\nname = 'x'\nenvironments = 'prod'\n", "apps[0].environments: an app needs"),
        (
            "[[apps]]\nname = 'x'\nenvironments = { p = 'preview' }\n",
            "apps[0].environments.p: must be a table (got 'preview')",
        ),
        (
            "[[apps]]\nname = 'x'\nenvironments = { p = ['preview'] }\n",
            "apps[0].environments.p: must be a table\n",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\nurl = 'http://a'\n",
            "apps[0].environments.p.tier: required key is missing",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nhealth_url = 'x'\n",
            "apps[0].environments.p.health_url: unknown key (known: environment_id, error_rate,",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.'a b']\ntier = 'preview'\n",
            "apps[0].environments.a b: the service name 'x-a b' is not one",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nname = '-x'\n",
            "apps[0].environments.p.name: the service name '-x' is not one",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nname = 5\n",
            "apps[0].environments.p.name: must be a string (got 5)",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth_path = 'health'\n"
            "[apps.environments.p]\ntier = 'preview'\n",
            'apps[0].health_path: must be a path on the environment\'s url, such as "/health" '
            "(got 'health')",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nurl = 'http://a'\n"
            "health_path = 3\n",
            "apps[0].environments.p.health_path: must be a string (got 3)",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nurl = 4\n",
            "apps[0].environments.p.url: must be a string (got 4)",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth = { url = 'http://a/h' }\n[apps.environments.p]\n"
            "tier = 'preview'\n",
            "apps[0].health.url: unknown key (known: body_contains,",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth = 'http://a/h'\n"
            "[apps.environments.p]\ntier = 'preview'\n",
            "apps[0].health: must be a table (got 'http://a/h')",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments.p]\ntier = 'preview'\nhealth = 1\n",
            "apps[0].environments.p.health: must be a table (got 1)",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth = { timeout = '2s' }\n[apps.environments.p]\n"
            "tier = 'preview'\n",
            "apps[0].environments.p.url: the health check needs the environment's url",
        ),
        (
            "[[apps]]\nname = 'x'\nerror_rate = { source = 'exposition', url = '/metrics' }\n"
            "[apps.environments.p]\ntier = 'preview'\n",
            "apps[0].error_rate.url: a path needs the environment's url: add url = ... to its "
            "table (got '/metrics')",
        ),
        # Values: checked with the service they become, reported where the file wrote them.
        (
            APP.replace('service_id = "svc"', 'service_id = "svc"\ninterval = "10 seconds"'),
            "apps[0].interval: not a duration: '10 seconds'",
        ),
        (
            APP.replace('url = "https://shop.example.com"', 'url = "ftp://shop"'),
            "apps[0].environments.production.url: must be an http:// or https:// URL with a host "
            "(got 'ftp://shop')",
        ),
        (
            APP.replace('tier = "production"', 'tier = "prod"'),
            "apps[0].environments.production.tier: no tier named 'prod'",
        ),
        (
            APP.replace('tier = "production"', "tier = 5"),
            "apps[0].environments.production.tier: Input should be a valid string (got 5)",
        ),
        (
            APP.replace('environment_id = "env-p"\n', ""),
            "apps[0].environments.production: service_id and environment_id go together",
        ),
        (
            APP.replace('memory = { source = "railway" }', 'memory = { source = "nope" }'),
            "apps[0].environments.production.memory: unknown source 'nope'",
        ),
        (
            APP + 'rules = { error-rate = { for = "2 minutes" } }\n',
            "apps[0].environments.production.rules.error-rate.for: not a duration",
        ),
        (
            APP.replace('service_id = "svc"', 'service_id = "svc"\nrules = 3'),
            "apps[0].rules: Input should be a valid dictionary",
        ),
        (
            APP.replace('service_id = "svc"', 'service_id = "svc"\nhealth = { timeout = "0s" }'),
            "apps[0].health.timeout: timeout must be more than 0s",
        ),
        (
            APP.replace('memory = { source = "railway" }\n', ""),
            "apps[0].environments.production (shop-production): rule 'memory-high' of tier "
            "'production' needs the memory signal",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth = { json_equals = 1 }\n[apps.environments.p]\n"
            "tier = 'preview'\nurl = 'http://a'\n",
            "apps[0].health: json_equals needs json_path",
        ),
        (
            "[[apps]]\nname = 'x'\nhealth = { timeout = '2s' }\n[apps.environments.p]\n"
            "tier = 'preview'\nurl = 'http://a'\nhealth = { json_path = 'a', method = 'HEAD' }\n",
            "apps[0].environments.p.health: a HEAD response has no body",
        ),
        (
            "[[apps]]\nname = 'x'\n[apps.environments." + "e" * 200 + "]\ntier = 'preview'\n",
            "apps[0].environments." + "e" * 200 + ": the service name 'x-" + "e" * 35 + "...",
        ),
        # Names: an app's service may not take a written service's name, nor another app's.
        (
            '[[services]]\nname = "shop-production"\ntier = "preview"\n'
            'health_url = "http://127.0.0.1:9/health"\n' + APP,
            "apps[0].environments.production.name: the service name 'shop-production' this "
            "environment gets is also services[0]'s",
        ),
        (
            APP + APP.replace("[[apps]]\n", "[[apps]]\n", 1),
            "apps[1].environments.production.name: the service name 'shop-production' this "
            "environment gets is also apps[0].environments.production's",
        ),
        (
            "services = 3\n" + APP,
            "services: Input should be a valid tuple",
        ),
    ],
)
def test_a_mistake_in_apps_exits_2_naming_the_key(
    write: Write, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(text)
    out = io.StringIO()
    assert main(["check", "--config", str(path)], stdout=out) == 2, out.getvalue()
    err = capsys.readouterr().err
    assert f"railguard: {path}: {expected}" in err + "\n", err
    assert "Traceback" not in err


def test_a_key_an_app_shares_is_reported_once_however_many_environments(write: Write) -> None:
    text = APP.replace('service_id = "svc"', 'service_id = "svc"\ninterval = "soon"')
    text += '[apps.environments.staging]\ntier = "staging"\nenvironment_id = "env-s"\n'
    text += 'url = "https://s.example.com"\n'
    with pytest.raises(ConfigError) as caught:
        plan_of(write, text)
    assert str(caught.value).count("apps[0].interval: not a duration") == 1


def test_only_apps_is_a_whole_config(write: Write) -> None:
    plan = plan_of(write, APP)
    assert [s.name for s in plan.services] == ["shop-production"]


GARBAGE_PLACES = [
    ("app", k)
    for k in ("name", "service_id", "health_path", "interval", "health", "rules", "error_rate")
] + [
    ("environment", k)
    for k in ("name", "tier", "url", "environment_id", "health_path", "interval", "memory")
]


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(place=st.sampled_from(GARBAGE_PLACES), value=scalars)
def test_garbage_anywhere_in_an_app_is_ok_or_exit_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    place: tuple[str, str],
    value: str,
) -> None:
    monkeypatch.setenv("RAILWAY_API_TOKEN", "s3cr3t-token-value")
    where, key = place
    lines = APP.splitlines()
    text = "\n".join(line for line in lines if not line.startswith(f"{key} = "))
    anchor = "[apps.environments.production]" if where == "environment" else 'name = "shop"'
    if where == "app" and key == "name":
        text = text.replace('name = "shop"', f"name = {value}")
    else:
        text = text.replace(anchor, f"{anchor}\n{key} = {value}")
    path = tmp_path / "railguard.toml"
    path.write_text(text)
    out = io.StringIO()
    code = main(["check", "--config", str(path)], stdout=out)
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    assert "s3cr3t-token-value" not in err + out.getvalue()
    if code == 2 and "not valid TOML" not in err:
        assert str(path) in err
        assert KEY_PATH.search(err), err
        assert re.search(r": apps\[0\]", err), err
