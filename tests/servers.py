"""Real servers from Debian's packages for tests: found, started on a free port, stopped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

READY_WITHIN = 15.0


def binary(names: Sequence[str], package: str) -> str:
    """The first of ``names`` on PATH; skip without it, but fail in CI (which installs it)."""
    found = next((path for name in names if (path := shutil.which(name))), None)
    if found is None:
        reason = f"needs {names[0]} (apt-get install {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI installs it from .ci/apt-packages")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    # No proxy: a proxy from the environment must not stand between the test and 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/-/ready", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start(
    name: str, command: Callable[[str], list[str]], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Run ``command(listen_address)`` until ``/-/ready`` answers; a lost port race retries."""
    for _ in range(3):
        url = f"http://127.0.0.1:{_free_port()}"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command(url.removeprefix("http://")), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_WITHIN
        while process.poll() is None and time.monotonic() < deadline:
            if _ready(url):
                return process, url
            time.sleep(0.02)  # polling the readiness endpoint: waiting for I/O, bounded
        stop(process)
        if "address already in use" not in log.read_text(errors="replace"):
            break
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    pytest.fail(f"{name} did not become ready within {READY_WITHIN:g}s:\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it will not go."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
