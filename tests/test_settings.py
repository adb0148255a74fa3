"""Config loading: every mistake names the file, the key path and the value, and exits 2."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.configtypes import parse_duration
from monitor.environment import load_environment
from monitor.errors import ConfigError
from monitor.model import Signal
from monitor.planning import build_plan
from monitor.rules import builtin_rules_path

Write = Callable[..., Path]

SERVICE = """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


def plan_of(write: Write, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = write(textwrap.dedent(text))
    env = load_environment({})
    return build_plan(path, env, environ or {})


def test_minimal_config_gets_tier_defaults(write: Write) -> None:
    plan = plan_of(write, SERVICE)
    (service,) = plan.services
    assert service.tier == "preview"
    assert service.interval == 15.0
    assert [r.name for r in service.rules] == ["health-failing"]
    assert service.rules[0].for_ == 180.0
    assert service.rules[0].max_gap == 30.0  # 2 x interval
    production = plan.config.tiers["production"]
    assert production.auto_rollback is True
    assert production.severity == "critical"
    assert production.delivery == "immediate"
    assert production.rules == ("health-failing", "error-rate", "memory-high", "deployment-crashed")
    staging = plan.config.tiers["staging"]
    assert (staging.severity, staging.delivery, staging.digest_at) == ("warning", "digest", "09:00")
    assert staging.rules == ("health-failing", "error-rate", "deployment-crashed")
    assert plan.config.tiers["preview"].auto_rollback is False
    assert plan.config.tiers["preview"].rules == ("health-failing",)


def test_tier_override_merges_onto_defaults(write: Write) -> None:
    plan = plan_of(
        write,
        SERVICE
        + """
        [tiers.staging]
        digest_at = "7:30"
        [tiers.custom]
        auto_rollback = true
        """,
    )
    staging = plan.config.tiers["staging"]
    assert staging.digest_at == "07:30"
    assert staging.delivery == "digest"  # still the default
    assert plan.config.tiers["custom"].rules == ("health-failing",)


def test_rebuild_is_off_unless_a_tier_turns_it_on(write: Write) -> None:
    plan = plan_of(write, SERVICE + '[tiers.production]\nrebuild = true\nrebuild_timeout = "15m"\n')
    production, staging = plan.config.tiers["production"], plan.config.tiers["staging"]
    assert (production.rebuild, production.rebuild_timeout) == (True, 900.0)
    assert (staging.rebuild, staging.rebuild_timeout) == (False, 600.0)
    described = plan.describe()
    assert "production: auto-rollback (or a rebuild within 15m when no image is left)" in described
    assert "staging: auto-rollback, " in described


def test_service_overrides_window_and_threshold(write: Write) -> None:
    plan = plan_of(
        write,
        SERVICE.replace('tier = "preview"', 'tier = "preview"\ninterval = "5s"')
        + """
        [services.rules.health-failing]
        for = "20s"
        max_gap = "12s"
        tolerance = 0.8
        """,
    )
    rule = plan.services[0].rules[0]
    assert (rule.for_, rule.max_gap, rule.tolerance) == (20.0, 12.0, 0.8)


def test_env_expansion(write: Write) -> None:
    text = SERVICE.replace("http://127.0.0.1:9/health", "${APP_URL}/health")
    plan = plan_of(write, text, {"APP_URL": "http://10.0.0.5:8080"})
    assert plan.services[0].health is not None
    assert plan.services[0].health.url == "http://10.0.0.5:8080/health"
    text = SERVICE.replace("http://127.0.0.1:9/health", "${APP_URL:-http://localhost:1}/h")
    assert plan_of(write, text).services[0].health.url == "http://localhost:1/h"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            SERVICE + "bogus = 1\n", "services[0].bogus: unknown key (got 1)", id="unknown key"
        ),
        pytest.param(
            SERVICE + 'interval = "10 seconds"\n',
            "services[0].interval: not a duration: '10 seconds'",
            id="bad duration",
        ),
        pytest.param(
            SERVICE + "interval = 10\n",
            'services[0].interval: durations are strings with a unit, such as "90s"',
            id="bare number duration",
        ),
        pytest.param(
            SERVICE.replace('"preview"', '"prod"'),
            "services[0].tier: no tier named 'prod' (tiers: preview, production, staging)",
            id="unknown tier",
        ),
        pytest.param(
            SERVICE + '[tiers.preview]\nrules = ["health-failing", "latency"]\n',
            "tiers.preview.rules[1]: unknown rule 'latency'",
            id="unknown rule name",
        ),
        pytest.param(
            SERVICE + "[services.rules.error-rate]\nthreshold = 0.1\n",
            "services[0].rules.error-rate: tier 'preview' does not use rule 'error-rate'",
            id="override of a rule the tier lacks",
        ),
        pytest.param(
            SERVICE.replace('"preview"', '"production"'),
            "rule 'error-rate' of tier 'production' needs the error_rate signal",
            id="signal without a source",
        ),
        pytest.param(
            SERVICE.replace("http://127.0.0.1:9/health", "${NOPE}"),
            "services[0].health_url: environment variable NOPE is not set",
            id="unset variable",
        ),
        pytest.param(
            SERVICE + SERVICE, "two services are named 'web'", id="duplicate service name"
        ),
        pytest.param("", "services: required key is missing", id="no services key"),
        pytest.param("services = []", "no services", id="empty services"),
        pytest.param(
            SERVICE + '[tiers.staging]\ndigest_at = "25:00"\n',
            "tiers.staging.digest_at: not a time of day: '25:00'",
            id="bad digest time",
        ),
        pytest.param(
            SERVICE + '[tiers.staging]\ndelivery = "sometimes"\n',
            "tiers.staging.delivery: Input should be 'immediate', 'digest' or 'off'",
            id="bad delivery",
        ),
        pytest.param(
            SERVICE + '[services.health]\nurl = "http://x/h"\n',
            "set either health_url or health.url, not both",
            id="health twice",
        ),
        pytest.param(
            SERVICE + '[services.rules.health-failing]\nmax_gap = "5s"\n',
            "services[0].rules.health-failing (web): can never fire: max_gap 5s is shorter",
            id="max_gap below interval",
        ),
        pytest.param(
            SERVICE + '[tiers.staging]\nrebuild = "yes"\n',
            "tiers.staging.rebuild: must be true or false (a TOML boolean, without quotes) "
            "(got 'yes')",
            id="rebuild not a boolean",
        ),
        pytest.param(
            SERVICE + "[tiers.staging]\nrebuild = 1\n",
            "tiers.staging.rebuild: must be true or false",
            id="rebuild a number",
        ),
        pytest.param(
            SERVICE + '[tiers.staging]\nrebuild_timeout = "30s"\n',
            "tiers.staging.rebuild_timeout: must be at least 1m: no build is up and verified "
            "sooner (got '30s')",
            id="rebuild timeout too short",
        ),
        pytest.param(
            SERVICE + '[tiers.staging]\nrebuild_timeout = "2h"\n',
            "tiers.staging.rebuild_timeout: must be at most 1h (got '2h')",
            id="rebuild timeout too long",
        ),
        pytest.param("services = [", "not valid TOML", id="toml syntax"),
        pytest.param(
            SERVICE + 'service_id = "s"\n',
            "services[0]: service_id and environment_id go together",
            id="half a Railway id",
        ),
        pytest.param(
            SERVICE + '[services.rules.health-failing]\nthreshold = "lots%"\n',
            "not a percentage: 'lots%'",
            id="bad percentage",
        ),
        pytest.param(
            SERVICE.replace('health_url = "http://127.0.0.1:9/health"', "")
            + 'latency = { source = "health" }\n',
            "services[0].latency: source 'health' times the health probe, but the service has "
            "no health check: add health_url (or [services.health]), or take latency from "
            "another source",
            id="latency from health without a health check",
        ),
        pytest.param(
            SERVICE + 'latency = { source = "health", window = "1m" }\n',
            "services[0].latency: window 1m holds about 4 probes at the service's interval 15s, "
            "fewer than min_probes 5: the quantiles would never be known",
            id="latency window too short for min_probes",
        ),
        pytest.param(
            SERVICE + 'latency = { source = "health", min_probes = 0 }\n',
            "services[0].latency.min_probes: Input should be greater than or equal to 1",
            id="latency from health: field error names the key without the union tag",
        ),
        pytest.param(
            SERVICE + 'latency = { source = "lightstep" }\n',
            "services[0].latency: unknown source 'lightstep' "
            "(one of: exposition, health, promql, railway)",
            id="latency from a source that has none",
        ),
        pytest.param(
            SERVICE + 'latency = { source = "promql", url = "http://p:9090", query = "q" }\n',
            "services[0].latency: query needs requests_query too",
            id="latency query without requests_query",
        ),
    ],
)
def test_config_mistakes_name_key_and_value(write: Write, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_of(write, text)
    message = str(caught.value)
    assert str(write.__self__ if hasattr(write, "__self__") else "") in message
    assert "railguard.toml" in message
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        build_plan(tmp_path / "nope.toml", load_environment({}), {})


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        build_plan(tmp_path, load_environment({}), {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("3m", 180), ("1h30m", 5400), ("250ms", 0.25), ("1.5s", 1.5), ("1d", 86400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "3", "3x", "m3", "3m 2s", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_environment_reads_tokens_as_secrets() -> None:
    env = load_environment(
        {"RAILWAY_API_TOKEN": "tok", "PORT": "9000", "RAILGUARD_LOG_FORMAT": "json", "HOME": "/"}
    )
    assert env.port == 9000
    assert env.railway_api_token is not None
    assert env.railway_api_token.get_secret_value() == "tok"
    assert "'tok'" not in repr(env)
    assert env.railway_api_url == "https://backboard.railway.com/graphql/v2"


def test_environment_unknown_railguard_variable() -> None:
    # Named, never its value: a mistyped name often holds a secret.
    with pytest.raises(ConfigError, match="unknown variable RAILGUARD_ADMINTOKEN ") as caught:
        load_environment({"RAILGUARD_ADMINTOKEN": "s3cr3t-token-value"})
    assert "s3cr3t" not in str(caught.value)


def test_environment_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"environment: PORT: .* \(got 'eighty'\)"):
        load_environment({"PORT": "eighty"})


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param(
            '{ source = "nope" }',
            "services[0].error_rate: unknown source 'nope' (one of: exposition, promql, railway)",
            id="unknown source",
        ),
        pytest.param(
            "{ min_requests = 3 }",
            "services[0].error_rate: missing key 'source' (one of: exposition, promql, railway)",
            id="no source",
        ),
        pytest.param(
            '{ source = "exposition", url = "ftp://x" }',
            "services[0].error_rate.url: must be an http:// or https:// URL with a host "
            "(got 'ftp://x')",
            id="source field error names the key without the union tag",
        ),
    ],
)
def test_source_mistakes(write: Write, table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_of(write, SERVICE + f"error_rate = {table}\n")
    assert expected in str(caught.value)


RAILWAY_SERVICE = SERVICE + 'service_id = "s1"\nenvironment_id = "e1"\n'


def test_railway_latency_table_defaults_and_keys(write: Write) -> None:
    from monitor.sources.railway import RailwayLatency

    plan = plan_of(write, RAILWAY_SERVICE + 'latency = { source = "railway" }\n')
    latency = plan.services[0].config.latency
    assert latency == RailwayLatency(source="railway", step=60.0, min_requests=10)
    text = RAILWAY_SERVICE + 'latency = { source = "railway", step = "30s", min_requests = 3 }\n'
    latency = plan_of(write, text).services[0].config.latency
    assert isinstance(latency, RailwayLatency)
    assert (latency.step, latency.min_requests) == (30.0, 3)


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param('{ source = "railway", step = "0s" }', "services[0].latency.step", id="step"),
        pytest.param(
            '{ source = "railway", min_requests = 0 }',
            "services[0].latency.min_requests",
            id="min_requests",
        ),
        pytest.param(
            '{ source = "railway", url = "http://x" }', "services[0].latency.url", id="extra"
        ),
        pytest.param(
            '{ source = "nope" }',
            "services[0].latency: unknown source 'nope' "
            "(one of: exposition, health, promql, railway)",
            id="source",
        ),
    ],
)
def test_railway_latency_mistakes(write: Write, table: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_of(write, RAILWAY_SERVICE + f"latency = {table}\n")
    assert expected in str(caught.value)


LATENCY_RULES = """
[[rules]]
name = "latency-p95"
signal = "latency_p95"
op = ">"
threshold = "500ms"
for = "2m"

[[rules]]
name = "latency-p99"
signal = "latency_p99"
op = ">"
threshold = "2s"
for = "2m"
"""


def test_a_latency_query_for_several_quantiles_needs_a_place_for_them(write: Write) -> None:
    write(LATENCY_RULES, "latency.toml")
    text = (
        f'rule_files = ["{builtin_rules_path()}", "latency.toml"]\n'
        '[tiers.preview]\nrules = ["latency-p95", "latency-p99"]\n'
        + SERVICE
        + 'latency = { source = "promql", url = "http://p:9090", requests_query = "r", '
        'query = "histogram_quantile(0.95, x)" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        plan_of(write, text)
    assert "services[0].latency.query (web): its rules want latency_p95, latency_p99, but " in str(
        caught.value
    )
    templated = text.replace("(0.95, x)", "({quantile}, x)")
    (service,) = plan_of(write, templated).services
    assert service.latency_signals == (Signal.LATENCY_P95, Signal.LATENCY_P99)


def lease_plan(write: Write, text: str, environ: dict[str, str]):  # type: ignore[no-untyped-def]
    path = write(textwrap.dedent(text) + SERVICE)
    return build_plan(path, load_environment(environ), environ)


def test_the_lease_defaults_take_over_within_15s(write: Write) -> None:
    terms = lease_plan(write, "", {}).config.lease.terms
    assert (terms.ttl, terms.renew_every, terms.margin) == (10.0, 3.0, 2.0)
    assert terms.takeover_within <= 15.0


def test_lease_keys_from_the_file_and_the_environment(write: Write) -> None:
    text = '[lease]\nttl = "20s"\nrenew_every = "5s"\n'
    assert lease_plan(write, text, {}).config.lease.terms.ttl == 20.0
    environ = {"RAILGUARD_LEASE_TTL": "4s", "RAILGUARD_LEASE_RENEW_EVERY": "1s"}
    terms = lease_plan(write, text, environ).config.lease.terms
    # The environment wins; a short lease stops acting a fifth of its ttl before it ends.
    assert (terms.ttl, terms.renew_every, terms.margin) == (4.0, 1.0, 0.8)


def test_unsafe_lease_terms_name_the_key_and_the_value(write: Write) -> None:
    with pytest.raises(ConfigError) as caught:
        lease_plan(write, '[lease]\nrenew_every = "9s"\n', {})
    message = str(caught.value)
    assert "lease.renew_every: renew_every 9s must be shorter than ttl less margin" in message
    assert "(got '9s')" in message
    with pytest.raises(ConfigError, match=r"lease\.ttl: must be at least 1s"):
        lease_plan(write, '[lease]\nttl = "500ms"\n', {})
    with pytest.raises(ConfigError) as caught:
        lease_plan(write, "", {"RAILGUARD_LEASE_RENEW_EVERY": "30s"})
    assert str(caught.value).startswith("environment: RAILGUARD_LEASE_RENEW_EVERY: renew_every")
    assert "(got '30s')" in str(caught.value)
    with pytest.raises(ConfigError, match="environment: RAILGUARD_LEASE_TTL: not a duration"):
        lease_plan(write, "", {"RAILGUARD_LEASE_TTL": "ten"})


def test_check_shows_the_lease_with_a_database_url(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The Environment also reads the process's (where --store=postgres puts DATABASE_URL).
    monkeypatch.delenv("DATABASE_URL", raising=False)
    plan = lease_plan(write, "", {"DATABASE_URL": "postgresql://u:pw@db/railguard"})
    assert (
        "high availability: a leader lease in DATABASE_URL, ttl 10s, renewed every 3s "
        "(a dead leader is replaced within 13s)"
    ) in plan.describe()
    assert "pw" not in plan.describe()
    assert "high availability" not in lease_plan(write, "", {}).describe()


def test_the_test_suites_own_variables_are_not_railguards_mistakes() -> None:
    """RAILGUARD_TEST_* (where the suite's artifacts go, its PostgreSQL) reaches the daemons
    the tests start: it must not stop them (it did, for RAILGUARD_ARTIFACTS)."""
    environ = {"RAILGUARD_TEST_ARTIFACTS": "/tmp/x", "RAILGUARD_TEST_POSTGRES": "postgresql://"}
    assert load_environment(environ).admin_token is None
    with pytest.raises(ConfigError, match="unknown variable RAILGUARD_TESTS_X"):
        load_environment({"RAILGUARD_TESTS_X": "1"})
