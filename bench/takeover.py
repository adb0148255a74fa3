"""Takeover time: a leader SIGKILLed with a rollback due, to the new leader's rollback.

Two ``railguard run`` replicas (separate processes) share a fresh PostgreSQL database per
trial (``DATABASE_URL``: the lease and the store), on the system clock, guarding one service
of the rollback stage (tests/stage.py: the Railway emulator and a sample app on 127.0.0.1,
in this process, with second-long windows). Each trial:

1. one replica starts and takes the lease (the ``leases`` row names it by
   ``RAILWAY_REPLICA_ID``); the second starts 0 to ``renew_every`` later (random: a replica
   looks at the lease every ``renew_every`` from its start, so this sets where the
   standby's looks fall in the leader's renewal cycle; replicas started together line
   their looks up on the migration lock); once it answers, after another random wait of 0
   to ``renew_every`` (so the kill falls anywhere in the leader's renewal cycle) the bad
   release v2 goes live (half its requests fail), with the tier's ``grace`` at 12 s;
2. the ``error-rate`` rule fires on *both* replicas (the standby is warm), and grace holds
   the rollback on the leader; 0.5 s before grace ends (the leader's next evaluation would
   send the rollback) the bench checks that both replicas say FIRING, exactly one says it
   leads, no rollback reached Railway, and SIGKILLs the leader;
3. it measures, from the kill (``time.time()`` just before the signal):
   - *lease taken*: when the standby took the lease (the new epoch's ``expires_at`` less
     the ttl, by PostgreSQL's clock on this machine), and what was left of the dead
     leader's lease at the kill (its ``expires_at`` less the kill time);
   - *first action*: the new leader's ``deploymentRollback`` reaching the emulator
     (``MutationRecord.at``);
   and checks that exactly one rollback reached Railway (no double action).

In theory the standby takes the lease at its first look after the dead leader's lease
expires: the lease left at the kill (0 to ttl, as the kill falls in the renewal cycle, plus
whatever a renewal in flight had already written) plus 0 to ``renew_every``; at most
``ttl + renew_every``. The action follows after the takeover's reconcile and the next
evaluation (every 1 s here).

    .venv/bin/python bench/takeover.py [--trials 20] [--series default,short]

Series: ``default`` is the shipped lease (ttl 10s, renew 3s), ``short`` ttl 3s renew 1s.
PostgreSQL: ``RAILGUARD_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``);
each trial creates a database and drops it. It prints a line per trial and a summary, and
writes bench/results/takeover.json (replica logs of the last trial and of any failed one in
bench/results/takeover/). Every process and database it made is removed on success, on an
error and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.clock import SystemClock  # noqa: E402
from tests.stage import Stage  # noqa: E402

SERVER = os.environ.get("RAILGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BAD = {"v2": {"error_ratio": 0.5}}
SERIES = {"default": (10.0, 3.0), "short": (3.0, 1.0)}  # ttl, renew_every (seconds)
GRACE = 12.0  # the rollback is held this long after v2 went live ...
KILL_BEFORE = 0.5  # ... and the leader killed this long before the hold ends
RULE = "error-rate"
LOGS = ROOT / "bench" / "results" / "takeover"


def database_url(name: str) -> str:
    return SERVER.rsplit("/", 1)[0] + "/" + name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """``railguard run`` as a process, named in the lease by its replica id."""

    name: str
    port: int
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self, stage: Stage, config: Path, env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAILGUARD_", "RAILWAY_"))}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "run",
            "--config",
            str(config),
            env=base
            | stage.environ
            | env
            | {
                "RAILWAY_REPLICA_ID": self.name,
                "RAILGUARD_STATE": str(config.parent / f"{self.name}.db"),
                "RAILGUARD_HOST": "127.0.0.1",
                "PORT": str(self.port),
                "RAILGUARD_LOG_FORMAT": "json",
            },
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log.open("ab"),
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def kill(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """``railguard_leader`` and the rule's state (0 inactive, 1 pending, 2 firing)."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("railguard_leader "):
                found["leader"] = float(line.split()[-1])
            elif line.startswith("railguard_rule_state{") and f'rule="{RULE}"' in line:
                found["rule"] = float(line.split()[-1])
        return found


@dataclass
class Trial:
    ok: bool = False
    error: str | None = None
    leader: str | None = None
    epoch_before: int | None = None
    lease_left_s: float | None = None  # of the dead leader's lease at the kill
    kill_to_lease_s: float | None = None
    kill_to_action_s: float | None = None
    lease_to_action_s: float | None = None
    rollbacks: int | None = None


async def lease_row(conn: psycopg.AsyncConnection[Any]) -> tuple[str | None, int, float] | None:
    cursor = await conn.execute(
        "SELECT holder, epoch, expires_at FROM leases WHERE name = 'leader'"
    )
    row = await cursor.fetchone()
    return None if row is None else (row[0], int(row[1]), float(row[2]))


async def wait_for(what: str, check: Any, limit: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {limit:.0f} s")
        await asyncio.sleep(every)


async def traffic(stage: Stage) -> None:
    """Keep the app on the active release and under load (what its error rate is on)."""
    while True:
        stage.sync_app()
        await stage.send_traffic(2)
        await asyncio.sleep(0.02)


async def one_trial(index: int, ttl: float, renew: float, tmp: Path) -> Trial:
    trial = Trial()
    name = f"railguard_takeover_{uuid.uuid4().hex[:10]}"
    admin = await psycopg.AsyncConnection.connect(SERVER, autocommit=True, connect_timeout=5)
    stage = Stage(SystemClock(), tmp, BAD)
    stage.grace = f"{GRACE:g}s"
    replicas = [Replica(n, free_port(), tmp / f"{n}.log") for n in ("replica-a", "replica-b")]
    driver: asyncio.Task[None] | None = None
    conn: psycopg.AsyncConnection[Any] | None = None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = database_url(name)
        await stage.start_servers()
        stage.deploy("v1", ago=7200)
        stage.deploy("v1.1", ago=3600)
        driver = asyncio.create_task(traffic(stage))
        config = stage.write_config()
        env = {
            "DATABASE_URL": url,
            "RAILGUARD_LEASE_TTL": f"{ttl:g}s",
            "RAILGUARD_LEASE_RENEW_EVERY": f"{renew:g}s",
        }
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        assert conn is not None
        db = conn

        async def held() -> Any:
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                row = await lease_row(db)
                return row if row is not None and row[0] is not None else None
            return None

        await replicas[0].start(stage, config, env)
        await wait_for("the first replica takes the lease", held, 60, every=0.05)
        # The standby once the leader leads (started together, the migration lock would
        # line their looks up), 0 to renew_every later: its looks fall anywhere in the
        # leader's renewal cycle.
        await asyncio.sleep(random.uniform(0, renew))
        await replicas[1].start(stage, config, env)
        async with aiohttp.ClientSession() as session:

            async def up() -> Any:
                return await replicas[1].metrics(session)

            await wait_for("the standby answers", up, 60, every=0.05)
        await asyncio.sleep(random.uniform(0, renew))  # the kill: anywhere in the cycle
        live = time.time()
        stage.deploy("v2", ago=0)  # the bad release goes live; grace holds its rollback

        async with aiohttp.ClientSession() as session:
            await asyncio.sleep(max(0.0, live + GRACE - KILL_BEFORE - 0.3 - time.time()))
            seen = [await r.metrics(session) for r in replicas]
        (holder, epoch, _) = await lease_row(db) or (None, 0, 0.0)
        leaders = [r for r, m in zip(replicas, seen, strict=True) if m.get("leader") == 1]
        if [m.get("rule") for m in seen] != [2.0, 2.0]:
            raise AssertionError(f"{RULE} not FIRING on both replicas before the kill: {seen}")
        if len(leaders) != 1 or leaders[0].name != holder:
            raise AssertionError(f"leaders by metrics {seen}, by the lease {holder}")
        if stage.rollbacks_sent():
            raise AssertionError("a rollback reached Railway before the kill")
        leader = leaders[0]
        standby = next(r for r in replicas if r is not leader)
        trial.leader, trial.epoch_before = leader.name, epoch
        await asyncio.sleep(max(0.0, live + GRACE - KILL_BEFORE - time.time()))

        if stage.rollbacks_sent():
            raise AssertionError("a rollback reached Railway before the kill")
        killed_at = time.time()
        leader.kill()
        assert leader.proc is not None
        await leader.proc.wait()
        row = await lease_row(db)
        assert row is not None
        if row[1] != epoch or row[0] != leader.name:
            raise AssertionError(f"the lease moved before the kill: {row}, epoch {epoch}")
        trial.lease_left_s = row[2] - killed_at

        async def taken() -> Any:
            row = await lease_row(db)
            return row if row is not None and row[1] > epoch else None

        new_holder, new_epoch, expires = await wait_for(
            "the standby takes the lease", taken, ttl + renew + 15, every=0.02
        )
        if new_holder != standby.name or new_epoch != epoch + 1:
            raise AssertionError(f"the lease went to {new_holder} epoch {new_epoch}")
        taken_at = expires - ttl  # written as the database's clock_timestamp() + ttl

        async def acted() -> Any:
            return stage.emu.mutation_calls("deploymentRollback")

        calls = await wait_for("the new leader's rollback", acted, 30, every=0.01)
        action_at = calls[0].at
        await asyncio.sleep(2.0)  # a second mutation, if any, would come now
        trial.rollbacks = len(stage.rollbacks_sent())
        trial.kill_to_lease_s = taken_at - killed_at
        trial.kill_to_action_s = action_at - killed_at
        trial.lease_to_action_s = action_at - taken_at
        if trial.rollbacks != 1:
            raise AssertionError(f"{trial.rollbacks} rollbacks reached Railway (one expected)")
        if not standby.alive:
            raise AssertionError("the new leader exited")
        trial.ok = True
    except (AssertionError, TimeoutError, OSError, psycopg.Error, aiohttp.ClientError) as e:
        trial.error = f"{type(e).__name__}: {e}"
    finally:
        await asyncio.gather(*(r.stop() for r in replicas), return_exceptions=True)
        if driver is not None:
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await driver
        if conn is not None:
            await conn.close()
        await stage.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        keep = LOGS / (f"{ttl:g}s-trial-{index}-failed" if not trial.ok else "last")
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True, exist_ok=True)
        for replica in replicas:
            if replica.log.exists():
                shutil.copy(replica.log, keep / replica.log.name)
    return trial


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": p90,
        "max": ordered[-1],
    }


def machine() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    model = ""
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        model = found.group(1) if found else ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "changed": git("status", "--porcelain", "monitor", "bench/takeover.py"),
    }


async def series(label: str, trials: int) -> dict[str, Any]:
    ttl, renew = SERIES[label]
    results = []
    load_before = os.getloadavg()
    for i in range(trials):
        with tempfile.TemporaryDirectory() as tmp:
            trial = await one_trial(i + 1, ttl, renew, Path(tmp))
        results.append(trial)
        if trial.ok:
            print(
                f"{label} {i + 1}/{trials}: lease left {trial.lease_left_s:5.2f} s, "
                f"kill -> lease {trial.kill_to_lease_s:5.2f} s, "
                f"-> rollback {trial.kill_to_action_s:5.2f} s "
                f"(lease -> rollback {trial.lease_to_action_s:4.2f} s)",
                flush=True,
            )
        else:
            print(f"{label} {i + 1}/{trials}: FAILED {trial.error}", flush=True)
    good = [t for t in results if t.ok]

    def pick(key: str) -> list[float]:
        return [float(getattr(t, key)) for t in good]

    return {
        "ttl_s": ttl,
        "renew_every_s": renew,
        "bound_kill_to_lease_s": ttl + renew,
        "trials": trials,
        "succeeded": len(good),
        "double_actions": sum(1 for t in results if t.rollbacks is not None and t.rollbacks > 1),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "lease_left_s": summary(pick("lease_left_s")),
        "kill_to_lease_s": summary(pick("kill_to_lease_s")),
        "lease_to_action_s": summary(pick("lease_to_action_s")),
        "kill_to_action_s": summary(pick("kill_to_action_s")),
        "runs": [vars(t) for t in results],
    }


async def main(trials: int, labels: list[str]) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result: dict[str, Any] = {"machine": machine(), "series": {}}
    for label in labels:
        result["series"][label] = await series(label, trials)
    return result


def table(result: dict[str, Any]) -> str:
    lines = ["series      trials  measure            median    p90    max   (s)"]
    for label, s in result["series"].items():
        for key in ("lease_left_s", "kill_to_lease_s", "lease_to_action_s", "kill_to_action_s"):
            v = s[key]
            if v:
                head = f"{label} ({s['ttl_s']:g}/{s['renew_every_s']:g})"
                count = f"{s['succeeded']}/{s['trials']}"
                lines.append(
                    f"{head:<12}{count:>6}  {key:<17}{v['median']:7.2f}"
                    f"{v['p90']:7.2f}{v['max']:7.2f}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per series")
    parser.add_argument(
        "--series", default="default,short", help="comma-separated: default (10s/3s), short (3s/1s)"
    )
    args = parser.parse_args()
    chosen = [s.strip() for s in args.series.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SERIES]
    if unknown:
        parser.error(f"unknown series {unknown}; known: {sorted(SERIES)}")
    try:
        outcome = asyncio.run(main(args.trials, chosen))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("interrupted: processes stopped, databases dropped")
    out = ROOT / "bench" / "results" / "takeover.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2))
    print(table(outcome))
    print(f"load average after: {os.getloadavg()}; written {out.relative_to(ROOT)}")
    failed = sum(s["trials"] - s["succeeded"] for s in outcome["series"].values())
    sys.exit(1 if failed else 0)
