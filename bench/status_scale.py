"""What a /status or /metrics request costs the probes, at 1,000 and 5,000 services.

The issue's goal: *no probe tick delayed by more than 10 ms by a request* at 5,000 services,
and RSS that does not grow with requests. One real railguard Daemon runs in this process
(the system clock, a SQLite store on disk and its own HTTP server, as ``railguard run``
has) and probes ``--services`` services (health rule only; a tenth on the production tier,
the rest on preview) every ``--interval`` against ``--apps`` sample apps on 127.0.0.1, each in
its own process. After ``--warmup`` seconds, each kind of request is sent ``--requests``
times, one at a time, from a client in its own process (so parsing the answer costs the
daemon nothing), with ``--settle`` seconds after each for the ticks it held up to start:

- ``status_json``: ``GET /status`` (Accept: application/json)
- ``status_html``: ``GET /status`` (Accept: text/html)
- ``status_service``: ``GET /status/<one service>``, skipped if it answers 404
- ``status_tier``: ``GET /status?tier=production`` (a tenth of the fleet), skipped on 404;
  marked unfiltered if its answer is as big as /status's
- ``metrics``: ``GET /metrics``

The kinds take turns (one request of each, then an ``idle`` window of ``--idle`` seconds
with no request, ``--requests`` rounds), so every kind meets the same background: the box
may be busy with other work. Per kind: the answer's size, the request's wall time (median),
how many probe ticks started more than 10 ms and more than 100 ms late while it ran or in
the settle after it (the scheduler's own lateness, read by wrapping
``railguard_scheduler_lag_seconds``'s observe) and how many beyond the idle windows' rate
for as long, the longest event-loop stall (a task sleeping 5 ms at a time, and how late it
woke); and then, each kind's ``--requests`` back to back, the process's RSS before and
after them.

    .venv/bin/python bench/status_scale.py [--services 1000,5000] [--requests 10]

It prints a table and writes bench/results/status_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from probe_load import Child, free_ports, start_apps, stop  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.clock import SystemClock  # noqa: E402
from monitor.daemon import Daemon  # noqa: E402
from monitor.environment import load_environment  # noqa: E402
from monitor.planning import build_plan  # noqa: E402
from monitor.store import open_store  # noqa: E402
from monitor.telemetry import Metrics, configure_logging  # noqa: E402

HOST = "127.0.0.1"
BEAT = 0.005  # the loop-lag probe's sleep
LATE = (0.010, 0.100)  # a tick this late counts as held up

# The client: one request per stdin line ("url<TAB>accept"), one answer per stdout line
# ("status<TAB>bytes<TAB>seconds"). Its own process, so reading a 10 MB answer costs the
# daemon's loop nothing.
CLIENT = r"""
import sys, time, urllib.request, urllib.error
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
for line in sys.stdin:
    url, accept = line.rstrip("\n").split("\t")
    started = time.perf_counter()
    try:
        with opener.open(urllib.request.Request(url, headers={"Accept": accept}), timeout=120) as r:
            status, size = r.status, len(r.read())
    except urllib.error.HTTPError as e:
        status, size = e.code, len(e.read())
    print(f"{status}\t{size}\t{time.perf_counter() - started}", flush=True)
"""


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of request."""

    name: str
    path: str
    accept: str


@dataclass
class Watch:
    """Every tick's lateness and every loop stall, with when they were seen."""

    lags: list[tuple[float, float]] = field(default_factory=list)
    stalls: list[tuple[float, float]] = field(default_factory=list)

    def spy(self, metrics: Metrics) -> None:
        """Record each lateness the scheduler observes (and still observe it)."""
        observe: Callable[[float], None] = metrics.scheduler_lag.observe
        lags = self.lags

        def spied(value: float) -> None:
            lags.append((time.perf_counter(), value))
            observe(value)

        metrics.scheduler_lag.observe = spied  # type: ignore[method-assign]

    async def beat(self) -> None:
        """How late the loop wakes a 5 ms sleep."""
        while True:
            due = time.perf_counter() + BEAT
            await asyncio.sleep(BEAT)
            now = time.perf_counter()
            self.stalls.append((now, max(0.0, now - due)))

    def window(self, start: float, end: float) -> dict[str, float]:
        """Ticks late by more than 10 and 100 ms, ticks in all, and the longest stall."""
        lags = [v for at, v in self.lags if start <= at <= end]
        stalls = [v for at, v in self.stalls if start <= at <= end]
        return {
            "ticks": len(lags),
            "late_10ms": sum(v > LATE[0] for v in lags),
            "late_100ms": sum(v > LATE[1] for v in lags),
            "max_tick_lag_ms": 1000 * max(lags, default=0.0),
            "max_stall_ms": 1000 * max(stalls, default=0.0),
        }


class Client:
    """The request client, in its own process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> Client:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def get(self, url: str, accept: str) -> tuple[int, int, float]:
        """Status, body bytes and the client's wall seconds."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{url}\t{accept}\n".encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the request client died")
        status, size, seconds = line.decode().split("\t")
        return int(status), int(size), float(seconds)

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(self.proc.wait(), 10)


def rss_mib() -> float:
    """This process's resident set, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_config(path: Path, services: int, interval: float, ports: Sequence[int]) -> None:
    """``services`` services (health rule only), a tenth production, round-robin over apps."""
    width = len(str(services))
    # The production tier's default rules want error rate and latency; health is enough here.
    lines = [
        "[daemon]",
        'shutdown_timeout = "5s"',
        "",
        "[tiers.production]",
        'rules = ["health-failing"]',
        "",
    ]
    for index in range(services):
        name = f"bench-{index + 1:0{width}d}"
        tier = "production" if index % 10 == 0 else "preview"
        lines += [
            "[[services]]",
            f'name = "{name}"',
            f'tier = "{tier}"',
            f'health_url = "http://{HOST}:{ports[index % len(ports)]}/health?service={name}"',
            f'interval = "{interval:g}s"',
            "",
        ]
    path.write_text("\n".join(lines))


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values (strict JSON has no NaN)."""
    return statistics.median(values) if values else None


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Record:
    """One request (or idle window) and what happened meanwhile."""

    wall: float
    size: int
    window: dict[str, float]


async def one_request(
    kind: Kind | None, base: str, client: Client, watch: Watch, args: argparse.Namespace
) -> Record:
    """One request of ``kind`` (None: an idle window of ``--idle`` seconds), then the
    settle; the ticks held up and the loop's stalls from its start to the settle's end."""
    start = time.perf_counter()
    if kind is None:
        await asyncio.sleep(args.idle)
        status, size, wall = 200, 0, 0.0
    else:
        status, size, wall = await client.get(base + kind.path, kind.accept)
    end = time.perf_counter() + args.settle
    await asyncio.sleep(args.settle)
    if status != 200:
        raise RuntimeError(f"{kind} answered {status}")
    window = {**watch.window(start, end), "seconds": end - start}
    return Record(wall, size, window)


def summarize(name: str, path: str, records: list[Record], idle_rate: float) -> dict[str, Any]:
    """One kind's figures: medians per request, the worst, and what beyond the idle rate
    (late ticks per second in the idle windows, times this kind's window) it held up."""
    windows = [r.window for r in records]
    walls = [r.wall for r in records]
    late = [w["late_10ms"] for w in windows]
    excess = [w["late_10ms"] - idle_rate * w["seconds"] for w in windows]
    return {
        "kind": name,
        "path": path,
        "requests": len(records),
        "bytes": records[-1].size,
        "wall_ms_median": rounded(1000 * statistics.median(walls)),
        "wall_ms_max": rounded(1000 * max(walls)),
        "window_s_median": round(statistics.median(w["seconds"] for w in windows), 3),
        "ticks_per_window_median": median([w["ticks"] for w in windows]),
        "late_10ms_median": median(late),
        "late_10ms_max": max(late),
        "late_10ms_beyond_idle_median": rounded(median(excess)),
        "late_100ms_median": median([w["late_100ms"] for w in windows]),
        "late_100ms_max": max(w["late_100ms"] for w in windows),
        "max_tick_lag_ms_median": rounded(median([w["max_tick_lag_ms"] for w in windows])),
        "stall_ms_median": rounded(median([w["max_stall_ms"] for w in windows])),
        "stall_ms_max": rounded(max(w["max_stall_ms"] for w in windows)),
    }


async def one_fleet(
    services: int, args: argparse.Namespace, tmp: Path, app_ports: Sequence[int]
) -> dict[str, Any]:
    """Start a daemon for ``services`` services, warm it up, measure every kind, stop it."""
    config = tmp / f"fleet-{services}.toml"
    write_config(config, services, args.interval, app_ports)
    (port,) = free_ports(1)
    environ = {"PORT": str(port), "RAILGUARD_HOST": HOST}
    plan = build_plan(config, load_environment(environ), environ)
    store = await open_store(tmp / f"fleet-{services}.db")
    metrics = Metrics(CollectorRegistry())
    watch = Watch()
    watch.spy(metrics)
    daemon = Daemon(plan, clock=SystemClock(), metrics=metrics, freeze_gc=True, store=store)
    client = await Client.start()
    beat: asyncio.Task[None] | None = None
    try:
        started = time.perf_counter()
        await daemon.startup()
        base = f"http://{HOST}:{port}"
        print(f"  {services} services started in {time.perf_counter() - started:.1f}s", flush=True)
        await asyncio.sleep(args.warmup)
        beat = asyncio.create_task(watch.beat())
        kinds = [
            Kind("status_json", "/status", "application/json"),
            Kind("status_html", "/status", "text/html"),
            Kind("status_service", f"/status/{plan.services[0].name}", "application/json"),
            Kind("status_tier", "/status?tier=production", "application/json"),
            Kind("metrics", "/metrics", "text/plain"),
        ]
        live, skipped = [], []
        for kind in kinds:  # a first request of each: routes that do not exist yet are left out
            status, _, _ = await client.get(base + kind.path, kind.accept)
            (skipped if status == 404 else live).append(kind)
        await asyncio.sleep(args.settle)
        rss_start = rss_mib()
        # Round-robin, an idle window in each round: every kind meets the same background.
        records: dict[str, list[Record]] = {k.name: [] for k in live}
        records["idle"] = []
        for _ in range(args.requests):
            for kind in [*live, None]:
                record = await one_request(kind, base, client, watch, args)
                records["idle" if kind is None else kind.name].append(record)
        idle_late = sum(r.window["late_10ms"] for r in records["idle"])
        idle_rate = idle_late / sum(r.window["seconds"] for r in records["idle"])
        paths = {k.name: k.path for k in live}
        results = [summarize(n, paths.get(n, ""), rs, idle_rate) for n, rs in records.items()]
        results += [{"kind": k.name, "path": k.path, "skipped": "404"} for k in skipped]
        # RSS: each kind's requests back to back (taking turns, one kind's garbage would be
        # counted in the next one's growth).
        for result in results:
            kind = next((k for k in live if k.name == result["kind"]), None)
            if kind is not None:
                result["rss_mib_before"] = round(rss_mib(), 1)
                for _ in range(args.requests):
                    await client.get(base + kind.path, kind.accept)
                result["rss_mib_after"] = round(rss_mib(), 1)
        full = results[0]["bytes"]
        for result in results:
            if result["kind"] == "status_tier" and "skipped" not in result:
                result["filtered"] = result["bytes"] < 0.9 * full
        for result in results:
            print(f"    {line(result)}", flush=True)
        lags = [v for _, v in watch.lags]
        return {
            "services": services,
            "interval_s": args.interval,
            "ticks_per_second": round(services / args.interval, 1),
            "idle_late_10ms_per_s": round(idle_rate, 2),
            "kinds": results,
            "all_ticks": len(lags),
            "all_ticks_late_10ms": sum(v > LATE[0] for v in lags),
            "rss_mib_measuring_start": round(rss_start, 1),
            "rss_mib_end": round(rss_mib(), 1),
        }
    finally:
        if beat is not None:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        await client.close()
        await daemon.shutdown()
        await store.close()


def line(r: dict[str, Any]) -> str:
    """One kind's figures on one line."""
    if "skipped" in r:
        return f"{r['kind']:<15} skipped ({r['skipped']})"
    wall = "" if r["wall_ms_median"] is None else f"{r['wall_ms_median']:.1f}"
    return (
        f"{r['kind']:<15} {r['bytes'] / 1024:>9.0f} KiB {wall:>8} ms"
        f"  late>10ms {r['late_10ms_median']:>6g} (max {r['late_10ms_max']:g}"
        f", beyond idle {r['late_10ms_beyond_idle_median']:g})"
        f"  late>100ms {r['late_100ms_median']:>5g} (max {r['late_100ms_max']:g})"
        f"  stall {r['stall_ms_median']:>6.1f} ms (max {r['stall_ms_max']:.1f})"
        + (
            f"  RSS {r['rss_mib_before']:.0f}->{r['rss_mib_after']:.0f} MiB"
            if "rss_mib_after" in r
            else ""
        )
    )


def machine() -> dict[str, Any]:
    """The machine and the code measured."""
    import subprocess

    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for text in f:
            if text.startswith("model name"):
                model = text.partition(":")[2].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "git_commit": commit,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", default="1000,5000", help="fleet sizes, comma-separated")
    parser.add_argument("--interval", type=float, default=10.0, help="each service's, seconds")
    parser.add_argument("--apps", type=int, default=2, help="sample apps serving /health")
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds before measuring")
    parser.add_argument("--requests", type=int, default=10, help="requests of each kind")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after a request")
    parser.add_argument("--idle", type=float, default=0.1, help="an idle window, less settle")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/status_scale.json")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="status-scale-") as name:
        tmp = Path(name)
        configure_logging("json", "error", sys.stderr)  # a probe failing would be a warning
        children: list[Child] = []
        try:
            ports = free_ports(args.apps)
            start_apps(ports, False, tmp, children)
            info = machine()
            fleets = []
            for services in (int(s) for s in args.services.split(",")):
                print(f"{services} services, every {args.interval:g}s", flush=True)
                fleets.append(await one_fleet(services, args, tmp, ports))
            info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            return {
                "machine": info,
                "args": {**vars(args), "output": str(args.output)},
                "fleets": fleets,
            }
        finally:
            for child in children:
                stop(child)


if __name__ == "__main__":
    arguments = parse_args()
    outcome = asyncio.run(main(arguments))
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"written to {arguments.output}")
