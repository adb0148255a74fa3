"""Restart safety with a real SIGKILL: railguard killed with the rollback mutation in flight
(the intent written and the attempt counted, Railway still answering), and right after the
mutation reached Railway; restarted on the same state file.

Exactly one rollback mutation may ever reach Railway, and the incident must complete. The
daemon runs as a separate process on the system clock, with second-long windows (this file
takes about half a minute of real time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from monitor.clock import SystemClock
from tests.stage import Stage

# Many seconds of wall time: started first (conftest), so the wait overlaps other tests.
pytestmark = pytest.mark.long_running

BAD = {"v2": {"error_ratio": 0.5}}


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(SystemClock(), tmp_path, BAD)
    # A lost mutation is resent after this (20s by default): the restarted daemon waits it
    # out when the kill came before Railway had the mutation.
    stage.config_template = stage.config_template.replace(
        'poll_interval = "2s"', 'poll_interval = "2s"\nreconcile_window = "4s"'
    )
    await stage.start_servers()
    stage.deploy("v1", ago=7200)
    stage.deploy("v1.1", ago=3600)
    stage.deploy("v2", ago=60)  # the bad release went live a minute ago
    yield stage
    await stage.close()


def rollback_rows(db: Path) -> list[tuple[int, str, str | None, int]]:
    """(id, state, new_deployment, attempts) of every rollback, as another process reads it."""
    url = os.environ.get("DATABASE_URL")  # the suite on PostgreSQL (tests/store_backend.py)
    if url:
        import psycopg

        with psycopg.connect(url) as conn:
            try:
                return list(
                    conn.execute(
                        "SELECT id, state, new_deployment, attempts FROM rollbacks ORDER BY id"
                    )
                )
            except psycopg.errors.UndefinedTable:  # not created yet
                return []
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            return list(
                conn.execute(
                    "SELECT id, state, new_deployment, attempts FROM rollbacks ORDER BY id"
                )
            )
        except sqlite3.OperationalError:  # not created yet
            return []


class Railguard:
    """railguard run, as a process."""

    def __init__(self, stage: Stage, db: Path) -> None:
        self.stage, self.db = stage, db
        self.log = db.with_suffix(".log")  # kept with the test's tmp_path for a post-mortem
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILGUARD_", "RAILWAY_"))}
        env |= self.stage.environ | {
            "RAILGUARD_STATE": str(self.db),
            "RAILGUARD_HOST": "127.0.0.1",
            "PORT": "0",
            "RAILGUARD_LOG_FORMAT": "json",
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(self.stage.write_config()),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout=10)


async def drive(stage: Stage, until: Callable[[], bool], limit: float = 40.0) -> None:
    """Keep the app on the active release and under traffic until ``until()`` (real time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not until():
        assert loop.time() < deadline, "the scenario did not get there in time"
        stage.sync_app()
        await stage.send_traffic(2)
        await asyncio.sleep(0.02)  # the load generator's pace


@pytest.mark.parametrize("moment", ["mutation in flight", "after the mutation"])
async def test_a_killed_daemon_never_sends_a_rollback_twice(
    stage: Stage, tmp_path: Path, moment: str
) -> None:
    db = tmp_path / "state.db"
    railguard = Railguard(stage, db)
    try:
        await _play(stage, railguard, db, moment)
    finally:  # a failing test must not leave a daemon running
        if railguard.proc is not None and railguard.proc.returncode is None:
            railguard.kill()
            await railguard.proc.wait()


async def _play(stage: Stage, railguard: Railguard, db: Path, moment: str) -> None:
    if moment == "mutation in flight":
        # Railway answers slowly, so the kill lands after the attempt was counted, while
        # the mutation is still on its way: Railway applies it, railguard never hears so.
        stage.emu.set_faults(latency=0.8)
        await railguard.start()
        await drive(stage, lambda: stage.emu.in_flight["mutation"] > 0)
        assert any(row[3] == 1 for row in rollback_rows(db))  # counted before it was sent
        railguard.kill()
        assert stage.rollbacks_sent() == []  # not applied yet: the answer is 0.8 s away
        stage.emu.set_faults(latency=0.0)
    else:
        await railguard.start()
        await drive(stage, lambda: len(stage.rollbacks_sent()) == 1)
        railguard.kill()
    await railguard.proc.wait()  # type: ignore[union-attr]

    await railguard.start()  # same state file
    await drive(stage, lambda: any(row[1] == "succeeded" for row in rollback_rows(db)))
    assert await railguard.stop() == 0
    sent = stage.rollbacks_sent()
    assert len(sent) == 1
    assert stage.active_release() == "v1.1"
    # Both times the restarted railguard found the replacement on Railway and followed it:
    # one intent, one mutation, never sent again.
    assert [row[1] for row in rollback_rows(db)] == ["succeeded"]
