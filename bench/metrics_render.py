"""Where a /metrics scrape's time goes at N services: prometheus_client's classes and
``generate_latest`` (railguard up to commit 51b7671) against :mod:`monitor.series`.

Both metric sets get the series a fleet of health-only services has (per service: its health
value, its rule's state and blindness, its probe counter; per tier the probe histogram) and
are rendered: the old five times (the median CPU is printed, with a profile of what it
spends its time on), the new twice (the first scrape formats each series' label text, the
next ones only values), each time with the longest the event loop waited between slices.
The old Metrics class is read from git (``--before``).

    .venv/bin/python bench/metrics_render.py [--services 5000] [--before 51b7671]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from monitor.telemetry import Metrics  # noqa: E402


def old_telemetry(commit: str, tmp: Path) -> ModuleType:
    """monitor/telemetry.py as it was at ``commit``, imported under another name."""
    text = subprocess.run(
        ["git", "show", f"{commit}:monitor/telemetry.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = tmp / "old_telemetry.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("old_telemetry", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fill(metrics: Any, services: int) -> None:
    """The series a fleet of health-only services has."""
    for i in range(services):
        name, tier = f"bench-{i:04d}", ("production" if i % 10 == 0 else "preview")
        metrics.signal_value.labels(name, tier, "health").set(1)
        metrics.rule_state.labels(name, tier, "health-failing").set(0)
        metrics.rule_blind.labels(name, tier, "health-failing").set(0)
        metrics.probes.labels(name, tier, "health", "healthy").inc()
    for tier in ("production", "preview"):
        metrics.probe_duration.labels(tier, "health").observe(0.003)


def cpu_ms(work: Callable[[], object], times: int = 5) -> float:
    """The median CPU milliseconds of ``work``."""
    spent = []
    for _ in range(times):
        started = time.process_time()
        work()
        spent.append(time.process_time() - started)
    return 1000 * sorted(spent)[times // 2]


async def sliced(metrics: Metrics) -> tuple[bytes, float, float, int]:
    """The new exposition; its CPU ms, the longest wait of the loop (ms), the loop's turns."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = False

    async def other() -> None:
        last = loop.time()
        while not done:
            await asyncio.sleep(0)
            now = loop.time()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    started = time.process_time()
    body = await metrics.exposition()
    spent = time.process_time() - started
    done = True
    await task
    return body, 1000 * spent, 1000 * max(gaps), len(gaps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--before", default="51b7671", help="the commit of the old Metrics")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = old_telemetry(args.before, Path(tmp)).Metrics(CollectorRegistry())
    new = Metrics(CollectorRegistry())
    fill(old, args.services)
    fill(new, args.services)
    body = generate_latest(old.registry)
    lines = body.count(b"\n")
    print(f"{args.services} services: {lines} lines, {len(body) / 1024:.0f} KiB")
    print(f"before: generate_latest {cpu_ms(lambda: generate_latest(old.registry)):.1f} ms CPU")
    collect = cpu_ms(lambda: [list(m.samples) for m in old.registry.collect()])
    print(f"  of which registry.collect() (samples, label dicts): {collect:.1f} ms")
    profile = cProfile.Profile()
    profile.enable()
    generate_latest(old.registry)
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print(out.getvalue().split("\n\n", 2)[-1].rstrip())
    # The first scrape formats each series' label text (once); the next ones only values.
    for which in ("first", "steady"):
        new_body, spent, gap, turns = asyncio.run(sliced(new))
        assert new_body == body, "the new exposition differs from the old"
        print(
            f"after, {which} scrape: Metrics.exposition() {spent:.1f} ms CPU, the loop's "
            f"longest wait {gap:.1f} ms, {turns} turns of the loop meanwhile; the same bytes"
        )


if __name__ == "__main__":
    main()
