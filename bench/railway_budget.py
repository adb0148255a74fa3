"""Railway API requests per hour for examples/railway-three-tier.toml at its default intervals.

Runs the real daemon (poller, client, budget, health probes) against the Railway emulator
and a sample app on 127.0.0.1 for simulated hours on a FakeClock: the poll cadence, retries
and budget waits all run on the clock, so an hour takes seconds while every request is a
real HTTP request the emulator answers and logs. After every simulated second it records
the budget's level against the rollback reserve.

    .venv/bin/python bench/railway_budget.py [--hours 2]

Scenarios: the example as written (Hobby, 1,000 requests/hour) and the same config on the
Free plan (100/hour), where routine polling must slow down instead of eating the reserve.
Each poll asks the deployments with their instances and Railway's own ``platformStatus`` in
the same request; the report says which root fields the polls asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.clock import FakeClock  # noqa: E402
from monitor.daemon import Daemon  # noqa: E402
from monitor.environment import load_environment  # noqa: E402
from monitor.planning import build_plan  # noqa: E402
from monitor.sandbox.railway_emulator import RailwayEmulator  # noqa: E402
from monitor.sandbox.sample_app import create_app  # noqa: E402
from monitor.telemetry import Metrics, configure_logging  # noqa: E402

EXAMPLE = ROOT / "examples" / "railway-three-tier.toml"
TOKEN = "bench-token"


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _world(emu: RailwayEmulator, clock: FakeClock, app_url: str) -> dict[str, str]:
    """One app in three environments, with traffic and memory, as the example expects."""
    project = emu.add_project("shop")
    service = emu.add_service(project.id, "app")
    # The example's Slack channel: the sample app refuses it (404), so nothing is retried.
    environ = {"APP_SERVICE_ID": service.id, "SLACK_WEBHOOK_URL": f"{app_url}/slack"}
    for tier in ("production", "staging", "preview"):
        env = emu.add_environment(project.id, tier)
        deployment = emu.add_deployment(service.id, env.id, created_at=clock.time() - 86400)
        emu.set_traffic(service.id, env.id, 5, error_ratio=0.01, at=clock.time() - 3600)
        emu.set_memory(deployment.id, 0.3, 1.0, at=clock.time() - 3600)
        environ[f"{tier.upper()}_ENV_ID"] = env.id
        environ[f"{tier.upper()}_URL"] = app_url
    return environ


async def scenario(name: str, requests_per_hour: int | None, hours: float) -> dict[str, Any]:
    """Run the example for ``hours`` of clock time; what Railway saw and what the budget did."""
    clock = FakeClock()
    emu = RailwayEmulator(clock, tokens=[TOKEN])
    # Railway enforces the plan's hourly limit: an overrun would show up as 429s.
    emu.set_faults(rate_limit=requests_per_hour or 1000, rate_window=3600)
    app_runner, app_url = await _start(create_app(clock=clock))
    emu_runner, emu_url = await _start(emu.app)
    environ = _world(emu, clock, app_url)
    environ |= {"RAILWAY_API_TOKEN": TOKEN, "RAILWAY_API_URL": f"{emu_url}/graphql/v2"}
    text = EXAMPLE.read_text()
    if requests_per_hour is not None:
        text = text.replace("requests_per_hour = 1000", f"requests_per_hour = {requests_per_hour}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "railguard.toml"
        path.write_text(text)
        plan = build_plan(path, load_environment(environ), environ)
    daemon = Daemon(plan, clock=clock, metrics=Metrics(), serve_http=False)
    await daemon.startup()
    budget = daemon.budget
    assert budget is not None
    railway = plan.config.railway
    reserve = railway.requests_per_hour * railway.reserve
    lowest, slowed_seconds = budget.level, 0
    try:
        for _ in range(int(hours * 3600)):
            await clock.advance(1)
            await asyncio.sleep(0.002)  # real loopback I/O completes; the clock is what moves
            lowest = min(lowest, budget.level)
            slowed_seconds += budget.slowed
    finally:
        await daemon.shutdown()
        await emu_runner.cleanup()
        await app_runner.cleanup()
    answered = [r for r in emu.requests if r.status == 200]
    operations = Counter(r.operation_name for r in emu.requests)
    ticks = [r for r in emu.requests if r.operation_name == "RailguardTick"]
    document = daemon.poller.document if daemon.poller else ""
    return {
        "scenario": name,
        "requests_per_hour_limit": railway.requests_per_hour,
        "poll_interval_s": railway.poll_interval,
        "reserve": reserve,
        "hours": hours,
        "requests_per_hour": len(emu.requests) / hours,
        "answered_200": len(answered),
        "rate_limited_429": sum(r.status == 429 for r in emu.requests),
        "operations": dict(operations),
        "share_of_limit": len(emu.requests) / hours / railway.requests_per_hour,
        "lowest_budget_level": round(lowest, 2),
        "reserve_touched": lowest < reserve - 1e-9,
        "polling_slowed_seconds": slowed_seconds,
        "polls": daemon.poller.polls if daemon.poller else 0,
        # What every poll asks, in its one request (root fields as the emulator logged them).
        "poll_fields": sorted({f for r in ticks for f in r.fields}),
        "polls_with_platform_status": sum("platformStatus" in r.fields for r in ticks),
        "instances_in_poll": "instances { id status }" in document,
    }


async def main(hours: float) -> list[dict[str, Any]]:
    """Both scenarios, one after the other."""
    configure_logging("json", "error")
    return [
        await scenario("hobby (example as written)", None, hours),
        await scenario("free plan (100/hour)", 100, hours),
    ]


def report(results: list[dict[str, Any]]) -> str:
    """A results table."""
    head = (
        "| scenario | limit/h | poll | requests/h | share | 429s | lowest budget | reserve "
        "| reserve touched | polling slowed |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(
            f"| {r['scenario']} | {r['requests_per_hour_limit']} | {r['poll_interval_s']:g}s | "
            f"{r['requests_per_hour']:.0f} | {100 * r['share_of_limit']:.0f}% | "
            f"{r['rate_limited_429']} | "
            f"{r['lowest_budget_level']:g} | {r['reserve']:g} | "
            f"{'yes' if r['reserve_touched'] else 'no'} | {r['polling_slowed_seconds']}s |"
        )
    for r in results:
        ticks = r["operations"].get("RailguardTick", 0)
        rows.append(
            f"\n{r['scenario']}: each poll asks {', '.join(r['poll_fields'])} "
            f"(instances: {'yes' if r['instances_in_poll'] else 'no'}); platformStatus in "
            f"{r['polls_with_platform_status']} of {ticks} polls"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="simulated hours per scenario")
    args = parser.parse_args()
    results = asyncio.run(main(args.hours))
    out = ROOT / "bench" / "results" / "railway_budget.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(report(results))
