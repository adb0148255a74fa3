"""No secret in what railguard shows: `railguard check`, config errors, logs and /status show
URLs as the config wrote them (``${VAR}``), with passwords and secret parameters hidden."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.cli import main
from monitor.clock import FakeClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.model import Sample, Signal
from monitor.planning import build_plan
from monitor.redact import Redactor, redact_url, secret_name
from monitor.scheduler import ServiceWorker
from monitor.telemetry import Metrics
from tests.helpers import until

Write = Callable[..., Path]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://app/health", "https://app/health"),
        ("https://app/health?token=abc&v=1", "https://app/health?token=***&v=1"),
        ("https://user:pw@host:8443/x", "https://user:***@host:8443/x"),
        ("https://user@host/x", "https://user@host/x"),
        ("https://user:${PASS}@host/?token=${T}", "https://user:${PASS}@host/?token=${T}"),
        ("https://h/?token=${T:-literal}", "https://h/?token=***"),  # the default is in the file
        ("https://h/?apiKey=1&signal=ok&code=9", "https://h/?apiKey=***&signal=ok&code=***"),
        (
            "https://h/o?X-Amz-Signature=ab&X-Amz-Date=1",
            "https://h/o?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("https://h/cb#access_token=ab&state=1", "https://h/cb#access_token=***&state=1"),
        ("https://h/p?sig=&password", "https://h/p?sig=&password"),  # nothing to hide
        ("not a url: token=abc", "not a url: token=abc"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        *((n, True) for n in ("token", "access_token", "apiKey", "client_secret", "password")),
        *((n, True) for n in ("auth", "X-Amz-Signature", "sig", "code", "PASSWD", "key")),
        *((n, False) for n in ("v", "tenant", "signal", "region", "page", "format")),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_the_redactor_prefers_the_written_form_and_knows_every_value() -> None:
    redactor = Redactor(
        {"TOKEN": "s3cr3t/v+al", "PORT": "80"},
        {"https://a/h?t=s3cr3t/v+al": "https://a/h?t=${TOKEN}"},
    )
    assert redactor.url("https://a/h?t=s3cr3t/v+al") == "https://a/h?t=${TOKEN}"
    # Not a configured URL (a redirect, an error message): the value, even encoded, is found.
    assert redactor.url("https://b/?q=s3cr3t%2Fv%2Bal") == "https://b/?q=${TOKEN}"
    said = redactor.text("failed: URL('https://u:p@b/?token=abc') s3cr3t/v+al at :80")
    assert said == "failed: URL('https://u:***@b/?token=***') ${TOKEN} at :80"  # 80: too short
    sample = Sample(Signal.HEALTH, 1.0, 0.0, "s3cr3t/v+al", {"url": "https://a/?t=s3cr3t/v+al"})
    assert redactor.sample(sample).detail == {"url": "https://a/?t=${TOKEN}"}
    clean = Sample(Signal.HEALTH, 1.0, 1.0, "", {"status": 200})
    assert redactor.sample(clean) is clean


# -- railguard check -------------------------------------------------------------------------

SECRETS = {
    "HEALTH_TOKEN": "health-token-value-1",
    "PROBE_PASS": "probe-password-value-2",
    "METRICS_PATH_KEY": "metrics-path-value-3",
    "PROM_PASS": "prom-password-value-4",
    "PROM_TENANT": "prom-tenant-value-5",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/slack-value-6",
    "HOOK_URL": "https://hooks.example.com/in?token=hook-token-value-7",
    "HOOK_TOKEN": "hook-bearer-value-8",
    "AM_KEY": "am-key-value-9",
    "PD_KEY": "pagerduty-key-value-10",
    "STATUS_SIG": "status-sig-value-11",
    "RAILWAY_API_URL": "https://backboard.example.com/graphql?access_token=env-token-value-12",
    "RAILGUARD_ADMIN_TOKEN": "admin-token-value-13",
}
LITERALS = ("literal-auth-value-14", "literal-password-value-15")

CONFIG = """
status_url = "https://railguard.example.com/status?sig=${STATUS_SIG}"

[[services]]
name = "web"
tier = "preview"
health_url = "https://app.example.com/health?token=${HEALTH_TOKEN}"

[[services]]
name = "api"
tier = "preview"
health = { url = "https://probe:${PROBE_PASS}@api.example.com/ready?v=1" }
error_rate = { source = "exposition", url = "https://api.example.com/m/${METRICS_PATH_KEY}" }
[services.memory]
source = "promql"
url = "https://reader:${PROM_PASS}@prom.example.com/?tenant=${PROM_TENANT}"
query = "up"

[[services]]
name = "worker"
tier = "preview"
health_url = "https://worker.example.com/health"
[services.error_rate]
source = "exposition"
url = "https://worker.example.com/metrics?auth=literal-auth-value-14"
[services.memory]
source = "exposition"
url = "https://scrape:literal-password-value-15@worker.example.com/m"
limit = "1GiB"

[[channels]]
type = "slack"
url = "${SLACK_WEBHOOK_URL}"

[[channels]]
type = "webhook"
url = "${HOOK_URL}"
headers = { Authorization = "Bearer ${HOOK_TOKEN}" }

[[channels]]
type = "alertmanager"
url = "https://am.example.com/?key=${AM_KEY}"

[[channels]]
type = "pagerduty"
routing_key = "${PD_KEY}"
"""


def test_check_shows_every_kind_of_url_without_its_secrets(
    write: Write, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    with capture_logs() as logs:
        assert main(["check", "--config", str(write(CONFIG))], stdout=out) == 0
    shown = out.getvalue() + "".join(capsys.readouterr()) + repr(logs)
    for secret in (*SECRETS.values(), *LITERALS):
        assert secret not in shown
    for line in (
        "web [preview] every 15s: https://app.example.com/health?token=${HEALTH_TOKEN}",
        "api [preview] every 15s: https://probe:${PROBE_PASS}@api.example.com/ready?v=1",
        "    error_rate from exposition https://api.example.com/m/${METRICS_PATH_KEY}",
        "    memory from promql https://reader:${PROM_PASS}@prom.example.com/?tenant=${PROM_TENANT}",
        "    error_rate from exposition https://worker.example.com/metrics?auth=***",
        "    memory from exposition https://scrape:***@worker.example.com/m",
        "  slack-0: slack, info and above, all tiers, to ${SLACK_WEBHOOK_URL}",
        "  webhook-1: webhook, info and above, all tiers, to ${HOOK_URL}",
        "  alertmanager-2: alertmanager, info and above, all tiers, to https://am.example.com/?key=${AM_KEY}",
        "  pagerduty-3: pagerduty, info and above, all tiers, to https://events.pagerduty.com/v2/enqueue",
        "status page: https://railguard.example.com/status?sig=${STATUS_SIG}",
        "railway: https://backboard.example.com/graphql?access_token=***, polling 0",
    ):
        assert line in shown


def test_a_config_error_quotes_a_url_without_its_password(
    write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        '[[services]]\nname = "web"\ntier = "preview"\n'
        'health_url = "ftp://u:literal-pw-16@worker/?token=literal-token-17"\n'
    )
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "services[0].health_url: must be an http:// or https:// URL" in err
    assert "(got 'ftp://u:***@worker/?token=***')" in err
    assert "literal-pw-16" not in err
    assert "literal-token-17" not in err


# -- logs and /status of a running daemon -----------------------------------------------------

DAEMON_CONFIG = """
[tiers.preview]
rules = ["health-failing"]

[[services]]
name = "web"
tier = "preview"
health = {{ url = "http://probe:${{PROBE_PASS}}@127.0.0.1:{port}/health?t=${{HEALTH_TOKEN}}" }}
interval = "10s"

[services.rules.health-failing]
for = "20s"
"""


@pytest.fixture
async def redirect_loop() -> AsyncIterator[TestServer]:
    """A health endpoint that redirects to itself forever: aiohttp's error quotes the URL."""

    async def health(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(request.rel_url))

    app = web.Application()
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_logs_and_status_show_no_secret(
    redirect_loop: TestServer, clock: FakeClock, write: Write
) -> None:
    environ = {"PORT": "0", "RAILGUARD_HOST": "127.0.0.1", **SECRETS}
    config = DAEMON_CONFIG.format(port=redirect_loop.port)
    plan = build_plan(write(config), load_environment(environ), environ)
    daemon = Daemon(plan, clock=clock, metrics=Metrics(CollectorRegistry()))
    async with aiohttp.ClientSession() as http:
        with capture_logs() as logs:
            await daemon.startup()
            assert daemon.scheduler is not None
            (worker,) = daemon.scheduler.workers
            for n in range(1, 5):
                if n > 1:
                    await clock.advance(10)
                await until(lambda n=n: worker.ticks == n, f"tick {n}")  # type: ignore[misc]
            url = f"http://127.0.0.1:{daemon.port}/status/{worker.plan.name}"
            async with http.get(url) as response:
                status = await response.text()
            daemon.request_stop()
            await daemon.main_loop()
            await daemon.shutdown()
    sample = worker.latest[Signal.HEALTH]
    assert sample.reason == "too many redirects (more than 5)"
    # aiohttp's error quotes the URL it requested: the token shows as its reference.
    assert "/health?t=${HEALTH_TOKEN}'" in sample.detail["error"]
    assert sample.detail["url"].startswith("http://probe:***@127.0.0.1:")
    assert "rule firing" in [e["event"] for e in logs]
    shown = repr(logs) + status + repr(sample)
    for secret in (SECRETS["PROBE_PASS"], SECRETS["HEALTH_TOKEN"]):
        assert secret not in shown
    assert "127.0.0.1" in json.loads(status)["service"]["signals"]["health"]["detail"]["url"]


async def test_a_failing_source_says_why_without_the_secret(clock: FakeClock, write: Write) -> None:
    token = SECRETS["HEALTH_TOKEN"]

    class Leaky:
        signals = frozenset({Signal.HEALTH})

        async def collect(self, at: float) -> list[Sample]:
            raise RuntimeError(f"cannot reach https://h/?t={token}&token=literal")

    config = DAEMON_CONFIG.format(port=9)
    plan = build_plan(write(config), load_environment({}), SECRETS)
    worker = ServiceWorker(
        plan.services[0],
        [("health", Leaky())],
        clock=clock,
        metrics=Metrics(CollectorRegistry()),
        semaphore=asyncio.Semaphore(1),
        redactor=plan.redactor,
    )
    with capture_logs() as logs:
        await worker.tick()
    reason = worker.latest[Signal.HEALTH].reason
    said = "RuntimeError('cannot reach https://h/?t=${HEALTH_TOKEN}&token=***')"
    assert reason == f"health source failed: {said}"
    (failed,) = [e for e in logs if e["event"] == "source failed"]
    assert failed["error"] == said
    assert token not in repr(logs)
