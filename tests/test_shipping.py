"""What Railway runs: the Dockerfile and railway.toml agree with the daemon and with CI.

No Docker engine runs here, so the image is checked by what it is made of: every file the
package build needs is copied in, it installs the way CI does (``pip install .``), it runs
as a non-root user with /data for the state, and its health check and Railway's are the
daemon's liveness route, on Railway's ``PORT``.
"""

from __future__ import annotations

import io
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from monitor.cli import main
from monitor.clock import SystemClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.planning import build_plan

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
RAILWAY = tomllib.loads((ROOT / "railway.toml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
Write = Callable[..., Path]


def instructions(name: str) -> list[str]:
    """The arguments of every ``name`` instruction (continuation lines joined)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    prefix = name.upper() + " "
    return [line[len(prefix) :].strip() for line in joined.splitlines() if line.startswith(prefix)]


def test_railway_builds_this_dockerfile_and_checks_the_liveness_route() -> None:
    build, deploy = RAILWAY["build"], RAILWAY["deploy"]
    assert build["builder"] == "DOCKERFILE"
    assert (ROOT / build["dockerfilePath"]).is_file()
    assert deploy["healthcheckPath"] == "/healthz"
    assert deploy["restartPolicyType"] == "ON_FAILURE"
    (check,) = instructions("HEALTHCHECK")
    assert "/healthz" in check
    assert "os.environ.get('PORT'" in check  # Railway chooses the port


def test_the_image_holds_everything_the_package_build_needs() -> None:
    copied = set()
    for args in instructions("COPY"):
        if "--from=" in args:  # from the build stage, not from the repository
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        copied.update(words[:-1])
        for source in words[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {"pyproject.toml", PYPROJECT["project"]["readme"], *wheel["packages"]}
    needed |= set(wheel["force-include"])
    assert needed <= copied, f"not copied into the image: {needed - copied}"


def test_the_image_installs_like_ci_and_runs_unprivileged_with_a_data_volume() -> None:
    runs = instructions("RUN")
    assert any("pip install --quiet ." in run for run in runs)  # as make installs the package
    assert any("mkdir -p /data" in run and "chown 10001:10001 /data" in run for run in runs)
    assert instructions("USER") == ["10001:10001"]
    assert instructions("ENTRYPOINT") == ['["railguard"]']
    assert instructions("CMD")[-1] == '["run"]'


async def test_the_healthcheck_path_answers_on_the_port_railway_gives(write: Write) -> None:
    config = write(
        '[[services]]\nname = "web"\ntier = "preview"\n'
        'health_url = "http://127.0.0.1:9/health"\ninterval = "1s"\n'
    )
    env = load_environment({"PORT": "0", "RAILGUARD_HOST": "127.0.0.1"})
    daemon = Daemon(build_plan(config, env, {}), clock=SystemClock())
    await daemon.startup()
    try:
        url = f"http://127.0.0.1:{daemon.port}{RAILWAY['deploy']['healthcheckPath']}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
    finally:
        await daemon.shutdown()


def test_the_three_tier_example_passes_check_with_railway_variables_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAILWAY_API_TOKEN", "token")
    monkeypatch.setenv("APP_SERVICE_ID", "svc")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/x")
    for tier in ("PRODUCTION", "STAGING", "PREVIEW"):
        monkeypatch.setenv(f"{tier}_ENV_ID", f"env-{tier.lower()}")
        monkeypatch.setenv(f"{tier}_URL", f"https://{tier.lower()}.example")
    out = io.StringIO()
    path = ROOT / "examples" / "railway-three-tier.toml"
    assert main(["check", "--config", str(path)], stdout=out) == 0
    plan = out.getvalue()
    for name in ("app-production", "app-staging", "app-preview"):
        assert name in plan


def test_railway_gives_the_bounded_shutdown_the_time_it_needs() -> None:
    from monitor.settings import DaemonConfig

    # SIGTERM, then SIGKILL after drainingSeconds (Railway's default is 0s): the shutdown
    # budget plus a second for open requests must fit, with a second to spare.
    draining = RAILWAY["deploy"]["drainingSeconds"]
    assert isinstance(draining, int)  # Railway's parser wants a number, not a string
    assert DaemonConfig().shutdown_timeout + 2 <= draining
