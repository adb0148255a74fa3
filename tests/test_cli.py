"""The command line: check prints the plan, mistakes exit 2 naming the problem."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.cli import main
from tests.conftest import ROOT

Write = Callable[..., Path]

GOOD = """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"
"""


def test_check_prints_the_plan(write: Write) -> None:
    out = io.StringIO()
    assert main(["check", "--config", str(write(GOOD))], stdout=out) == 0
    text = out.getvalue()
    assert "web [preview] every 15s: http://127.0.0.1:9/health" in text
    assert "health-failing: health < 1 for 3m (max_gap 30s)" in text
    assert "production: auto-rollback, severity critical, alerts immediate" in text
    assert "staging: auto-rollback, severity warning, alerts digest at 09:00 UTC" in text
    assert "rules health-failing, error-rate, memory-high, deployment-crashed" in text
    assert "skipped" not in text  # preview has no deployment rule to skip
    assert "railway: https://backboard.railway.com/graphql/v2, polling 0 requests/hour" in text
    assert text.rstrip().endswith("config OK")


def test_check_counts_railway_polling(write: Write) -> None:
    text = GOOD + 'service_id = "svc"\nenvironment_id = "env"\n'
    text += '[railway]\npoll_interval = "10s"\nrequests_per_hour = 1000\n'
    out = io.StringIO()
    assert main(["check", "--config", str(write(text))], stdout=out) == 0
    assert "polling 360 requests/hour of 1000 (36%), 200/hour kept for rollbacks" in out.getvalue()


def test_check_says_which_rules_a_service_cannot_have(write: Write) -> None:
    text = GOOD.replace('"preview"', '"staging"')
    text += 'error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }\n'
    out = io.StringIO()
    assert main(["check", "--config", str(write(text))], stdout=out) == 0
    assert (
        "    deployment-crashed: skipped: the deployment signal comes from Railway and needs "
        "the service's service_id and environment_id"
    ) in out.getvalue()


@pytest.mark.parametrize(
    ("table", "line"),
    [
        (
            '{ source = "promql", url = "http://127.0.0.1:9/prom", selector = \'job="web"\' }',
            "    latency p95 from promql http://127.0.0.1:9/prom",
        ),
        ('{ source = "health" }', "    latency p95 from health"),
        (
            '{ source = "exposition", url = "http://127.0.0.1:9/metrics" }',
            "    latency p95 from exposition http://127.0.0.1:9/metrics",
        ),
    ],
)
def test_check_says_where_latency_comes_from(write: Write, table: str, line: str) -> None:
    out = io.StringIO()
    assert main(["check", "--config", str(write(GOOD + f"latency = {table}\n"))], stdout=out) == 0
    assert line + "\n" in out.getvalue()


BASELINES = """
[tiers.production]
rules = ["health-failing", "latency-p95-regression", "error-rate-regression", "latency-p99-high"]

[[services]]
name = "web"
tier = "production"
health_url = "http://127.0.0.1:9/health"
error_rate = { source = "exposition", url = "http://127.0.0.1:9/metrics" }
latency = { source = "exposition", url = "http://127.0.0.1:9/metrics" }
"""


def test_check_prints_baseline_and_latency_rules(write: Write) -> None:
    on_railway = BASELINES + 'service_id = "svc"\nenvironment_id = "env"\n'
    on_railway += '[services.rules.latency-p99-high]\nthreshold = "800ms"\n'
    out = io.StringIO()
    assert main(["check", "--config", str(write(on_railway))], stdout=out) == 0
    text = out.getvalue()
    assert "    latency p95/p99 from exposition http://127.0.0.1:9/metrics\n" in text
    assert "latency-p95-regression: latency_p95 > 1.5x baseline for 5m (max_gap 30s)" in text
    assert "error-rate-regression: error_rate > 1% and > 2x baseline for 2m" in text
    assert "latency-p99-high: latency_p99 > 800ms for 5m" in text
    # Without Railway there are no releases, so no baseline: the rules are skipped, and said so.
    out = io.StringIO()
    assert main(["check", "--config", str(write(BASELINES))], stdout=out) == 0
    assert (
        "    latency-p95-regression: skipped: a baseline is a known-good release's own record"
    ) in out.getvalue()


def test_a_latency_override_must_be_a_duration(
    write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    text = BASELINES + '[services.rules.latency-p99-high]\nthreshold = "5%"\n'
    assert main(["check", "--config", str(write(text))]) == 2
    err = capsys.readouterr().err
    assert "services[0].rules.latency-p99-high.threshold (web): latency_p99 is a duration" in err


def test_bad_config_exits_2_naming_the_key(
    write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(GOOD + 'interval = "often"\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"railguard: {path}: services[0].interval: not a duration: 'often'" in err


def test_config_from_environment(
    write: Write, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAILGUARD_CONFIG", str(write(GOOD)))
    assert main(["check"]) == 0
    monkeypatch.delenv("RAILGUARD_CONFIG")
    assert main(["check"]) == 2
    assert "no config file: pass --config FILE or set RAILGUARD_CONFIG" in capsys.readouterr().err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name
)
def test_examples_pass_check(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RAILGUARD_"):
            monkeypatch.delenv(name)
    # The variables an example expects its user to set (those without a default).
    for name in re.findall(r"\$\{([A-Z_]+)\}", example.read_text()):
        monkeypatch.setenv(name, "http://127.0.0.1:9" if name.endswith("_URL") else "id")
    out = io.StringIO()
    assert main(["check", "--config", str(example)], stdout=out) == 0, out.getvalue()


def test_run_fails_with_1_when_the_port_is_taken(
    write: Write, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("PORT", str(taken.getsockname()[1]))
        monkeypatch.setenv("RAILGUARD_HOST", "127.0.0.1")
        monkeypatch.setenv("RAILGUARD_LOG_FORMAT", "json")
        assert main(["run", "--config", str(write(GOOD))]) == 1
    err = capsys.readouterr().err
    assert '"event": "railguard failed"' in err
    assert "address already in use" in err.lower()


def test_python_dash_m_monitor(write: Write) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "monitor", "check", "--config", str(write(GOOD))],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout


def test_unsafe_lease_terms_exit_2(
    write: Write, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAILGUARD_LEASE_TTL", "3s")
    assert main(["check", "--config", str(write(GOOD))]) == 2
    err = capsys.readouterr().err
    assert "railguard: environment: RAILGUARD_LEASE_TTL: renew_every 3s must be shorter" in err
