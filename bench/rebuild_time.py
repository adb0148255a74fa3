"""Rebuild time: the rebuild fallback's deploy time against the 5-minute deployment goal.

When Railway keeps no image of any known-good release (retention ran out), a tier with
``rebuild = true`` deploys the newest known-good release's commit again with
``serviceInstanceDeployV2``. This runs that path end to end on the rollback stage
(tests/stage.py: the Railway emulator, a sample app serving the active release, the real
daemon) on a FakeClock, with the default production windows (error-rate for 2m, 15 s
interval, 30 s Railway poll) and the emulator's image retention set to 24h.

The build time is the EMULATOR'S MODEL of a build (``--build`` seconds of BUILDING between
5 s INITIALIZING and 20 s DEPLOYING, the same phases bench/rollback_time.py gives a rollback,
which skips BUILDING), not a measurement of Railway: a real build takes what the project's
Dockerfile or Nixpacks plan takes. What this measures is railguard's part around it: the
decision, the mutation, following the new deployment, the deploy time it records
(``railguard_rebuild_duration_seconds``), the ``rebuild_slow`` event past the goal, and the
verification.

    .venv/bin/python bench/rebuild_time.py [--build 60 --build 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rollback_time import DEFAULTS_CONFIG as ROLLBACK_CONFIG  # noqa: E402
from monitor.clock import FakeClock  # noqa: E402
from monitor.rebuild import DEPLOY_GOAL  # noqa: E402
from monitor.telemetry import configure_logging  # noqa: E402
from tests.stage import Stage  # noqa: E402

BAD = {"v2": {"error_ratio": 0.5}}
HOUR = 3600.0
INITIALIZING, DEPLOYING = 5.0, 20.0

# rollback_time's production service and default windows, on a tier that may rebuild.
DEFAULTS_CONFIG = ROLLBACK_CONFIG.replace(
    'grace = "{grace}"\n', 'grace = "{grace}"\nrebuild = true\n', 1
)


async def one_rebuild(tmp: Path, build: float) -> dict[str, Any]:
    """v1 and v1.1 were built more than a day ago (images kept 24h); railguard watches v1.1
    serve for its bake (10m), so it is known-good; then v2, which is bad, goes live."""
    clock = FakeClock()
    stage = Stage(clock, tmp, BAD)
    stage.emu.rollout = (
        ("INITIALIZING", INITIALIZING),
        ("BUILDING", build),
        ("DEPLOYING", DEPLOYING),
    )
    stage.config_template = DEFAULTS_CONFIG
    await stage.start_servers()
    try:
        stage.emu.set_image_retention(24)
        stage.deploy("v1", ago=30 * HOUR)
        good = stage.deploy("v1.1", ago=25 * HOUR)
        daemon = await stage.start_daemon()
        store = daemon.store
        assert store is not None
        await stage.run_for(11 * 60, step=5.0)  # the bake: railguard watches v1.1 serve
        verdict = await store.deployment("web", good.id)
        assert verdict is not None, "v1.1 unseen"
        assert verdict.verdict == "good", verdict
        stage.deploy("v2", ago=0)
        fault_at = clock.time()
        while not [r for r in await store.rollbacks("web") if r.finished]:
            await stage.run_for(5, step=1.0)
            assert clock.time() - fault_at < 3600, "no rebuild within an hour"
        (record,) = await store.rollbacks("web")
        assert record.recovered_at is not None, record
        assert record.live_at is not None, record
        new = stage.emu.deployments[record.new_deployment or ""]
        registry = daemon.metrics.registry
        labels = {"service": "web", "tier": "production"}
        slow = await store.events("web", kinds=["rebuild_slow"])
        return {
            "modelled_build_s": build,
            "state": record.state,
            "mutations": {
                "serviceInstanceDeployV2": len(stage.emu.mutation_calls("serviceInstanceDeployV2")),
                "deploymentRollback": len(stage.emu.mutation_calls("deploymentRollback")),
            },
            "fault_to_decision_s": record.decided_at - fault_at,
            "decision_to_mutation_s": (record.sent_at or record.decided_at) - record.decided_at,
            "deploy_time_s": registry.get_sample_value(
                "railguard_rebuild_duration_seconds_sum", labels
            ),
            "deploy_time_check_s": new.updated_at - new.created_at,
            "goal_s": DEPLOY_GOAL,
            "goal_met": new.updated_at - new.created_at <= DEPLOY_GOAL,
            "rebuild_slow_events": [dict(e.data)["why"] for e in slow],
            "decision_to_live_s": record.live_at - record.decided_at,
            "decision_to_recovered_s": record.recovered_at - record.decided_at,
            "fault_to_recovered_s": record.recovered_at - fault_at,
        }
    finally:
        await stage.close()


async def main(builds: list[float]) -> list[dict[str, Any]]:
    """One rebuild per modelled build time."""
    configure_logging("json", "error")
    results = []
    for build in builds:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(await one_rebuild(Path(tmp), build))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--build",
        type=float,
        action="append",
        help="the emulator's modelled BUILDING time in seconds (repeatable; default 60 and 300)",
    )
    args = parser.parse_args()
    result = asyncio.run(main(args.build or [60.0, 300.0]))
    out = ROOT / "bench" / "results" / "rebuild_time.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
