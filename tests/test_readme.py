"""README's local walk-through, run as written (ports and /tmp paths made the test's own).

A new user's first minutes: the sample app, railguard on examples/local.toml, a fault, the
rule pending then firing, the recovery, a clean stop. The block runs in bash with the real
clock: it waits for what it shows (the app listening, railguard ready, the rule's state)
the way README tells a person to, so it takes as long as the example's windows (about 40 s).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
MARK = "<!-- walkthrough -->\n```sh\n"
LIMIT = 180.0  # a broken walk-through fails instead of hanging the suite


def walkthrough() -> str:
    """The shell block README marks ``<!-- walkthrough -->``."""
    readme = (ROOT / "README.md").read_text()
    assert readme.count(MARK) == 1, "README has one walk-through block"
    return readme.split(MARK, 1)[1].split("```", 1)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def made_ours(block: str, tmp: Path, app: int, railguard: int) -> str:
    """The block with the test's ports and files; nothing else changes."""
    block = re.sub(r"\b8001\b", str(app), block)
    block = re.sub(r"\b8080\b", str(railguard), block)
    return block.replace("/tmp/railguard.", f"{tmp}/railguard.")


@pytest.mark.long_running
@pytest.mark.sqlite_only  # README's block keeps its state in RAILGUARD_STATE, a SQLite file
async def test_readmes_local_walkthrough_works_as_written(tmp_path: Path) -> None:
    app, railguard = free_port(), free_port()
    script = tmp_path / "walkthrough.sh"
    script.write_text(made_ours(walkthrough(), tmp_path, app, railguard))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILGUARD_", "DATABASE_URL"))}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(railguard),
        "RAILGUARD_HOST": "127.0.0.1",
        "PRODUCTION_URL": f"http://127.0.0.1:{app}",  # the example's defaults name 8001
        "STAGING_URL": f"http://127.0.0.1:{app}",
        "PREVIEW_URL": f"http://127.0.0.1:{app}",
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-e",
        "-o",
        "pipefail",
        str(script),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its background jobs go with it if it fails
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), LIMIT)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode()
    log = tmp_path / "railguard.log"
    detail = f"{text}\n--- railguard.log ---\n{log.read_text() if log.exists() else ''}"
    assert proc.returncode == 0, detail
    states = re.findall(r'rule="health-failing",service="web-production".*\} (\d)\.0$', text, re.M)
    # What README says a person sees: pending (1) before firing (2), then resolved (0).
    assert "1" in states, detail
    assert "2" in states, detail
    assert states.index("1") < states.index("2") < len(states) - 1, detail
    assert states[-1] == "0", detail
    assert "rule resolved" in text, detail
    assert "health 1 not < 1" in text, detail
    assert "railguard exited 0" in text, detail
    assert "Traceback" not in log.read_text(), detail
