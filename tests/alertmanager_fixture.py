"""A real Prometheus Alertmanager for tests, on a free port, with one receiver that sends nothing.

Use it by importing the fixture into a test module::

    from tests.alertmanager_fixture import alertmanager_server  # noqa: F401

and asking for ``alertmanager`` (its base URL). It is started once per test session, so tests
give their alerts keys of their own. Without Debian's ``prometheus-alertmanager`` binary
(listed in .ci/apt-packages) the tests are skipped, except in CI (``CI=true``), where they
fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

BINARIES = ("prometheus-alertmanager", "alertmanager")
READY_WITHIN = 15.0
"""Bounds a broken start only; Alertmanager is ready in well under a second."""
CONFIG = """\
route:
  receiver: "null"
receivers:
  - name: "null"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ready(url: str) -> bool:
    # No proxy: a proxy from the environment must not stand between the test and 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/-/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start(binary: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start Alertmanager and wait until it answers ready; a lost race for the port retries."""
    config, log = root / "alertmanager.yml", root / "alertmanager.log"
    config.write_text(CONFIG)
    for _ in range(3):
        url = f"http://127.0.0.1:{_free_port()}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.path={root / 'data'}",
                    f"--web.listen-address={url.removeprefix('http://')}",
                    # Empty: no gossip port, so parallel sessions cannot form a cluster.
                    "--cluster.listen-address=",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_WITHIN
        while process.poll() is None and time.monotonic() < deadline:
            if _ready(url):
                return process, url
            time.sleep(0.02)  # polling the readiness endpoint: waiting for I/O, bounded
        _stop(process)
        if "address already in use" not in log.read_text(errors="replace"):
            break
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    pytest.fail(f"alertmanager did not become ready within {READY_WITHIN:g}s:\n{tail}")


@pytest.fixture(scope="session", name="alertmanager")
def alertmanager_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of an Alertmanager started once per test session."""
    binary = next((path for name in BINARIES if (path := shutil.which(name))), None)
    if binary is None:
        reason = "needs Alertmanager (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI installs it from .ci/apt-packages")
        pytest.skip(reason)
    process, url = _start(binary, tmp_path_factory.mktemp("alertmanager"))
    try:
        yield url
    finally:
        _stop(process)
