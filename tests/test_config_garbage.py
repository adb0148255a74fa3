"""Garbage config files: ``railguard check`` exits 0 or 2 (never 1, never a traceback), an
exit 2 names a key path, and no message ever holds a secret from the environment."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.cli import main

SECRET = "s3cr3t-0123456789abcdef"
SECRETS = {
    "RAILWAY_API_TOKEN": SECRET + "-api",
    "SLACK_WEBHOOK_URL": f"https://hooks.example/{SECRET}-slack",
    "DATABASE_URL": f"postgresql://railguard:{SECRET}-db@db.internal:5432/railguard",
}
UNKNOWN = ("RAILGUARD_FOO", SECRET + "-foo")  # refused at once: set only where tested
BASE = """
[railway]
poll_interval = "30s"

[[services]]
name = "web"
tier = "staging"
health_url = "http://127.0.0.1:9/health"
interval = "15s"
error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }

[[channels]]
type = "slack"
url = "${SLACK_WEBHOOK_URL}"
"""
# (table, key) pairs where a mistake hurts: every number and duration, and some strings.
PLACES = (
    [
        ("railway", k)
        for k in (
            "requests_per_hour",
            "requests_per_second",
            "poll_interval",
            "reserve",
            "project_id",
        )
    ]
    + [
        ("tiers.staging", k)
        for k in (
            "bake",
            "grace",
            "cooldown",
            "rollback_timeout",
            "rebuild",
            "rebuild_timeout",
            "max_rollbacks_per_day",
            "remind_every",
            "digest_at",
            "rules",
        )
    ]
    + [("daemon", k) for k in ("max_concurrent_probes", "shutdown_timeout", "stagger")]
    + [("services.rules.health-failing", k) for k in ("for", "threshold", "max_gap", "tolerance")]
    + [("services.health", k) for k in ("url", "timeout", "max_body_bytes", "expected_status")]
    + [("services.health.release", k) for k in ("header", "json_path")]
    + [("", k) for k in ("rule_files", "status_url", "bogus")]
)
SERVICE_KEYS = ["interval", "health_url", "name", "tier", "service_id", "environment_id"]

units = st.sampled_from(["ms", "s", "m", "h", "d", "", "x", "S"])
durations = st.one_of(
    st.tuples(st.integers(-10, 10**25), units).map(lambda t: f"{t[0]}{t[1]}"),
    st.tuples(st.floats(allow_nan=True), units).map(lambda t: f"{t[0]}{t[1]}"),
    st.sampled_from(
        [
            "1ms",
            "3650d",
            "1e400s",
            "9" * 400 + "s",
            "99999999999999999999d",
            "-1s",
            "1h-1s",
            "\u0661s",
        ]
    ),
    st.text(max_size=12),
)
references = st.sampled_from(
    ["${RAILWAY_API_TOKEN}", "${RAILGUARD_FOO}", "http://${SLACK_WEBHOOK_URL}/x", "${NOPE}"]
)


def toml_string(text: str) -> str:
    escaped = "".join(
        c
        if c.isprintable() and c not in '"\\' and not 0xD800 <= ord(c) <= 0xDFFF
        else f"\\u{ord(c):04x}"
        if ord(c) < 0x10000 and not 0xD800 <= ord(c) <= 0xDFFF
        else ""
        for c in text
    )
    return f'"{escaped}"'


scalars = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats().map(lambda f: {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(f), repr(f))),
    st.booleans().map(lambda b: str(b).lower()),
    durations.map(toml_string),
    references.map(toml_string),
    st.text(max_size=20).map(toml_string),
    st.sampled_from(["[]", "{}", '["a", 1]', "1979-05-27T07:32:00Z", "{ x = 1 }"]),
)


def splice(table: str, key: str, value: str) -> str:
    """BASE with ``key = value`` in ``table`` (a new table, appended, for the nested ones)."""
    if table == "":
        return f"{key} = {value}\n" + BASE
    if table == "railway":
        return (
            BASE.replace('poll_interval = "30s"\n', f'poll_interval = "30s"\n{key} = {value}\n', 1)
            if key != "poll_interval"
            else BASE.replace('poll_interval = "30s"', f"poll_interval = {value}")
        )
    if table.startswith("services."):
        return BASE.replace("\n[[channels]]", f"[{table}]\n{key} = {value}\n\n[[channels]]")
    return BASE + f"\n[{table}]\n{key} = {value}\n"


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(["check", "--config", str(path)], stdout=out)
    return code, out.getvalue(), capsys.readouterr().err


KEY_PATH = re.compile(r": (\(top level\)|[a-z_]+(\[\d+\]|\.[\w-]+)*)( \([^)]*\))?: ")
FAST = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def assert_clean(code: int, err: str, *, key_path: bool = True) -> None:
    assert code in (0, 2), err
    assert "Traceback" not in err
    for value in SECRETS.values():
        assert value not in err
    if code == 2 and key_path:
        assert KEY_PATH.search(err) or "not valid" in err, err


@FAST
@given(place=st.sampled_from(PLACES), value=scalars)
def test_a_value_spliced_anywhere_is_ok_or_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    secrets_set: None,
    place: tuple[str, str],
    value: str,
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_text(splice(*place, value))
    code, _, err = check(path, capsys)
    assert_clean(code, err)
    if code == 2 and "not valid TOML" not in err:
        assert str(path) in err


@FAST
@given(key=st.sampled_from(SERVICE_KEYS), value=scalars)
def test_a_service_key_set_to_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets_set: None, key: str, value: str
) -> None:
    text = re.sub(rf"(?m)^{key} = .*$", "", BASE)
    text = text.replace(
        'tier = "staging"',
        f'tier = "staging"\n{key} = {value}'.replace('tier = "staging"\ntier', "tier"),
    )
    if key == "tier":
        text = BASE.replace('tier = "staging"', f"tier = {value}")
    path = tmp_path / "railguard.toml"
    path.write_text(text)
    code, _, err = check(path, capsys)
    assert_clean(code, err)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.binary(max_size=300)
    | st.integers(1, 50_000).map(lambda n: b"a = " + b"[" * n + b"]" * n)
)
def test_random_bytes_are_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets_set: None, data: bytes
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_bytes(data)
    code, _, err = check(path, capsys)
    assert code == 2, err
    assert_clean(code, err, key_path=False)
    assert str(path) in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('interval = "1ms"', "services[0].interval: must be at least 1s: probing"),
        ('interval = "99999999999999999999d"', "services[0].interval: duration too long"),
        (f'interval = "{"9" * 400}s"', "services[0].interval: duration too long"),
        ('interval = "${RAILWAY_API_TOKEN}"', "services[0].interval: not a duration: '${RAILWAY"),
        ('health_url = "x"', "services[0].health_url: must be an http:// or https:// URL"),
        ('health_url = "${RAILWAY_API_TOKEN}"', "(got '${RAILWAY_API_TOKEN}')"),
    ],
)
def test_named_mistakes_in_a_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets_set: None, text: str, expected: str
) -> None:
    key = text.split(" ")[0]
    base = re.sub(rf"(?m)^{key} = .*\n", "", BASE)
    path = tmp_path / "railguard.toml"
    path.write_text(base.replace('tier = "staging"', f'tier = "staging"\n{text}'))
    code, _, err = check(path, capsys)
    assert code == 2
    assert expected in err
    assert_clean(code, err)


@pytest.mark.parametrize(
    ("table", "text", "expected"),
    [
        ("services.rules.health-failing", 'for = "3650d"', "health-failing.for: duration too long"),
        (
            "services.rules.health-failing",
            'for = "25h"',
            "health-failing.for: must be at most 1d: a longer window",
        ),
        ("tiers.staging", 'grace = "2d"', "tiers.staging.grace: must be at most 1d"),
        ("tiers.staging", "max_rollbacks_per_day = 1000", "max_rollbacks_per_day: Input should be"),
        ("daemon", 'shutdown_timeout = "1h"', "daemon.shutdown_timeout: must be at most 10m"),
        ("railway", "requests_per_hour = 1000000000", "railway.requests_per_hour"),
        ("services.rules.health-failing", "threshold = inf", "threshold: must be a finite number"),
    ],
)
def test_limits_name_the_key_and_the_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    secrets_set: None,
    table: str,
    text: str,
    expected: str,
) -> None:
    key, _, value = text.partition(" = ")
    path = tmp_path / "railguard.toml"
    path.write_text(splice(table, key, value))
    code, _, err = check(path, capsys)
    assert code == 2, err
    assert expected in err
    assert f"(got {value})" in err or f"(got '{value.strip(chr(34))}')" in err, err


RAILWAY_BASE = BASE.replace(
    'health_url = "http://127.0.0.1:9/health"',
    'service_id = "svc"\nenvironment_id = "env"\n'
    'health = { url = "http://127.0.0.1:9/health", release = RELEASE }',
)


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        (
            '{ header = "X Deployment" }',
            "services[0].health.release.header: not an HTTP header name (write the name the app "
            "sends, e.g. \"X-Railway-Deployment-Id\") (got 'X Deployment')",
        ),
        (
            '{ json_path = "railway..id" }',
            "services[0].health.release.json_path: not a json path (dotted keys, e.g. "
            "\"railway.deployment_id\") (got 'railway..id')",
        ),
        ("{ header = 7 }", "services[0].health.release.header: Input should be a valid string"),
        (
            '{ header = "X-Railway-Deployment-Id", json_path = "deployment" }',
            "services[0].health.release: set header or json_path (one of them): where the app "
            "echoes RAILWAY_DEPLOYMENT_ID or RAILWAY_GIT_COMMIT_SHA",
        ),
        ("{ }", "services[0].health.release: set header or json_path (one of them)"),
        ('{ header = "X-Id", commit = true }', "services[0].health.release.commit: unknown key"),
        ('"X-Railway-Deployment-Id"', "services[0].health.release: Input should be"),
    ],
)
def test_a_bad_release_check_names_the_key_and_the_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    secrets_set: None,
    release: str,
    expected: str,
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_text(RAILWAY_BASE.replace("RELEASE", release))
    code, _, err = check(path, capsys)
    assert code == 2, err
    assert expected in err
    assert_clean(code, err)


def test_a_release_check_needs_railway_ids_and_a_get(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets_set: None
) -> None:
    path = tmp_path / "railguard.toml"
    text = RAILWAY_BASE.replace("RELEASE", '{ header = "X-Railway-Deployment-Id" }')
    path.write_text(text.replace('service_id = "svc"\nenvironment_id = "env"\n', ""))
    code, _, err = check(path, capsys)
    assert code == 2
    assert "services[0]: health.release needs service_id and environment_id" in err
    head = RAILWAY_BASE.replace("RELEASE", '{ json_path = "deployment" }, method = "HEAD"')
    path.write_text(head)
    code, _, err = check(path, capsys)
    assert code == 2
    assert "services[0].health: a HEAD response has no body: release.json_path needs GET" in err
    path.write_text(RAILWAY_BASE.replace("RELEASE", '{ header = "X-Railway-Deployment-Id" }'))
    code, out, err = check(path, capsys)
    assert code == 0, err
    assert "release check: the answering deployment in the header X-Railway-Deployment-Id" in out


def test_a_long_window_sampled_often_is_checked_quickly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], secrets_set: None
) -> None:
    text = BASE.replace(
        "\n[[channels]]",
        '[services.rules.health-failing]\nfor = "24h"\ntolerance = 0.5\n\n[[channels]]',
    )
    path = tmp_path / "railguard.toml"
    path.write_text(text.replace('interval = "15s"', 'interval = "1s"'))
    code, _, err = check(path, capsys)
    assert code == 0, err


def test_an_unknown_railguard_variable_is_named_not_shown(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    secrets_set: None,
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_text(BASE)
    monkeypatch.setenv(*UNKNOWN)
    code, _, err = check(path, capsys)
    assert code == 2
    assert "unknown variable RAILGUARD_FOO" in err
    assert UNKNOWN[1] not in err
    assert_clean(code, err, key_path=False)
