"""Rollback timing: decision latency on the real clock, and rollback time at default windows.

1. Decision latency (goal: p99 under 100 ms, Railway's own latency excluded): ``--runs``
   bad releases, each rolled back by the real daemon against the Railway emulator and a
   sample app on 127.0.0.1, on the system clock with second-long windows. Each run's value
   is ``railguard_rollback_decision_seconds``: from the rule firing to the mutation being
   sent, less the time Railway took to answer the precondition check.
2. Rollback time at the default production windows (goal: under 2 minutes from decision to
   recovery): the same stage on a FakeClock with the defaults (error-rate for 2m, 15 s
   interval, 30 s Railway poll) and a Railway-like rollout of a rollback (5 s initializing,
   20 s deploying). Reports fault -> rule firing -> decision -> replacement live -> recovered.

    .venv/bin/python bench/rollback_time.py [--runs 15]

It reuses the stage of the rollback scenario tests (tests/stage.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.clock import FakeClock, SystemClock  # noqa: E402
from monitor.telemetry import configure_logging  # noqa: E402
from tests.stage import Stage  # noqa: E402

BAD = {"v2": {"error_ratio": 0.5}}


async def one_real_run(tmp: Path) -> dict[str, float]:
    """A bad release on the system clock; the decision latency and the rollback's times."""
    stage = Stage(SystemClock(), tmp, BAD)
    await stage.start_servers()
    try:
        stage.deploy("v1", ago=7200)
        stage.deploy("v1.1", ago=3600)
        stage.deploy("v2", ago=60)
        daemon = await stage.start_daemon()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        store = daemon.store
        assert store is not None
        while loop.time() < deadline:
            stage.sync_app()
            await stage.send_traffic(2)
            await asyncio.sleep(0.02)
            done = [r for r in await store.rollbacks("web") if r.finished]
            if done:
                break
        (record,) = await store.rollbacks("web")
        registry = daemon.metrics.registry
        decision = registry.get_sample_value("railguard_rollback_decision_seconds_sum") or 0.0
        assert record.recovered_at is not None, record
        return {
            "decision_ms": 1000 * decision,
            "rollback_s": record.recovered_at - record.decided_at,
            "state": 1.0 if record.state == "succeeded" else 0.0,
        }
    finally:
        await stage.close()


async def default_windows(tmp: Path) -> dict[str, Any]:
    """The defaults of rules/default.toml and the production tier, on a FakeClock."""
    clock = FakeClock()
    stage = Stage(clock, tmp, BAD)
    stage.emu.rollout = (("INITIALIZING", 5.0), ("BUILDING", 60.0), ("DEPLOYING", 20.0))
    stage.config_template = DEFAULTS_CONFIG  # the defaults instead of the tests' short windows
    await stage.start_servers()
    try:
        stage.deploy("v1", ago=7200)
        stage.deploy("v1.1", ago=3600)
        stage.deploy("v2", ago=0)
        fault_at = clock.time()
        daemon = await stage.start_daemon()
        store = daemon.store
        assert store is not None
        while not [r for r in await store.rollbacks("web") if r.finished]:
            await stage.run_for(5, step=1.0)
            assert clock.time() - fault_at < 1800, "no rollback within 30 minutes"
        (record,) = await store.rollbacks("web")
        fired = [e for e in await store.events("web") if e.kind == "rollback_succeeded"]
        assert record.recovered_at is not None, record
        assert record.live_at is not None, record
        return {
            "state": record.state,
            "fault_to_decision_s": record.decided_at - fault_at,
            "decision_to_live_s": record.live_at - record.decided_at,
            "decision_to_recovered_s": record.recovered_at - record.decided_at,
            "fault_to_recovered_s": record.recovered_at - fault_at,
            "events": len(fired),
        }
    finally:
        await stage.close()


DEFAULTS_CONFIG = """
[railway]
poll_interval = "30s"

[tiers.production]
grace = "{grace}"
{tier_extra}

[[services]]
name = "web"
tier = "production"
service_id = "{service}"
environment_id = "{env}"
interval = "15s"
health = {{ url = "{app}/health" }}
error_rate = {{ source = "exposition", url = "{app}/metrics", min_requests = 5 }}
memory = {{ source = "exposition", url = "{app}/metrics", limit_metric = "app_memory_limit_bytes" }}
"""


async def main(runs: int) -> dict[str, Any]:
    """Both measurements."""
    configure_logging("json", "error")
    real = []
    for i in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            real.append(await one_real_run(Path(tmp)))
            print(f"run {i + 1}/{runs}: decision {real[-1]['decision_ms']:.2f} ms", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        defaults = await default_windows(Path(tmp))
    decisions = sorted(r["decision_ms"] for r in real)
    return {
        "runs": runs,
        "succeeded": sum(int(r["state"]) for r in real),
        "decision_ms": {
            "median": statistics.median(decisions),
            "p99": decisions[min(len(decisions) - 1, round(0.99 * (len(decisions) - 1)))],
            "max": decisions[-1],
        },
        "short_windows_rollback_s_median": statistics.median(r["rollback_s"] for r in real),
        "default_windows": defaults,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="real-clock rollbacks to time")
    args = parser.parse_args()
    result = asyncio.run(main(args.runs))
    out = ROOT / "bench" / "results" / "rollback_time.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
