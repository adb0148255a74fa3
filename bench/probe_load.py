"""Load benchmark: railguard probing N local health endpoints on a fixed interval.

The issue's goal: 1,000 services probed every 10 s against local endpoints, with the daemon
under 20% of one core, under 100 MB RSS, and scheduler lag p99 under 100 ms; report the
CPU-seconds per 1,000 probes.

What it does (see bench/README.md for the results and how to read them):

1. starts ``--apps`` sample apps (``python -m monitor.sandbox.sample_app``) on 127.0.0.1;
2. writes a config with ``--services`` preview-tier services (health rule only) whose
   ``health_url`` is spread over the apps, every ``--interval``. All services share one
   host:port per app, so they share its pooled keep-alive connections; with
   ``--distinct-hosts`` every service gets its own address (127.0.0.x) and port, so its own
   connection, as 1,000 real services on 1,000 hosts would (the apps then bind 0.0.0.0);
3. starts ``railguard run --config FILE`` as its own process, waits for ``/healthz`` = 200;
4. after ``--warmup`` seconds, samples ``/proc`` every ``--sample-every`` seconds for
   ``--duration`` seconds and scrapes the daemon's ``/metrics`` only at the window's start and
   end (a scrape costs the daemon CPU; its cost is measured separately, after the window);
5. prints a table and writes JSON (default ``bench/results/probe_load.json``);
6. stops every process it started (SIGTERM, then wait), also on an error or Ctrl-C.

Run: ``.venv/bin/python bench/probe_load.py [--services 1000] [--interval 10s]
[--duration 120] [--warmup 20]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from monitor import __version__ as railguard_version
from monitor.configtypes import parse_duration
from monitor.settings import DaemonConfig

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
MIB = 1024.0 * 1024.0

LOOPBACK_ADDRESSES = 254  # 127.0.0.1 .. 127.0.0.254, one per service and app port

GOAL_CPU_PERCENT = 20.0  # of one core
GOAL_RSS_MB = 100.0  # megabytes (10^6 bytes), as the issue writes it
GOAL_LAG_P99_MS = 100.0

# Without a ProxyHandler, urllib would send 127.0.0.1 requests to $http_proxy when it is set.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    """The benchmark could not run (a process died, an endpoint never came up)."""


# -- arguments ------------------------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """Plain seconds (``120``) or a duration (``2m``)."""
    try:
        value = float(text)
    except ValueError:
        value = _duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {text!r})")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/probe_load.py",
        description="Measure railguard's CPU, memory and scheduler lag probing local endpoints.",
    )
    parser.add_argument("--services", type=int, default=1000, help="services (1000)")
    parser.add_argument("--interval", type=_duration, default=10.0, help="probe interval (10s)")
    parser.add_argument("--duration", type=_seconds, default=120.0, help="window, s (120)")
    parser.add_argument("--warmup", type=_seconds, default=20.0, help="before the window (20)")
    parser.add_argument("--apps", type=int, default=1, help="sample app processes (1)")
    parser.add_argument(
        "--distinct-hosts",
        action="store_true",
        help="give every service its own 127.0.0.x address and port (raises --apps as needed)",
    )
    parser.add_argument(
        "--window", type=_seconds, default=None, help="CPU%% window, s (default: the interval)"
    )
    parser.add_argument("--sample-every", type=_seconds, default=1.0, help="/proc sampling (1)")
    parser.add_argument(
        "--max-concurrent-probes",
        type=int,
        default=None,
        help="write [daemon] max_concurrent_probes (default: leave railguard's default)",
    )
    parser.add_argument(
        "--scrape-samples", type=int, default=5, help="scrapes timed after the window (5)"
    )
    parser.add_argument(
        "--profile",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="after the window, profile the daemon with py-spy for this long (0: off)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "probe_load.json",
        help="JSON results (bench/results/probe_load.json)",
    )
    args = parser.parse_args(argv)
    if args.services < 1 or args.apps < 1 or args.scrape_samples < 0:
        parser.error("--services and --apps must be at least 1, --scrape-samples at least 0")
    if args.window is None:
        args.window = args.interval
    if args.distinct_hosts:
        args.apps = max(args.apps, math.ceil(args.services / LOOPBACK_ADDRESSES))
    if args.window < args.sample_every or args.duration < args.window:
        parser.error("need --sample-every <= --window <= --duration")
    return args


# -- /proc ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process's CPU time and memory at one moment."""

    at: float  # time.monotonic()
    cpu_ticks: int  # utime + stime, all threads, in clock ticks
    system_ticks: int  # stime alone (the kernel's share: syscalls, TCP)
    rss_kib: int
    hwm_kib: int
    threads: int


def read_proc(pid: int) -> ProcSample:
    """CPU ticks from /proc/PID/stat; VmRSS, VmHWM and Threads from /proc/PID/status."""
    at = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after its closing one.
    rest = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])  # fields 14 and 15 of proc(5)
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return ProcSample(
        at=at,
        cpu_ticks=utime + stime,
        system_ticks=stime,
        rss_kib=int(status["VmRSS"].split()[0]),
        hwm_kib=int(status["VmHWM"].split()[0]),
        threads=int(status["Threads"]),
    )


@dataclass(frozen=True, slots=True)
class SystemSample:
    """Machine-wide CPU counters from the first line of /proc/stat (clock ticks)."""

    total: int
    idle: int  # idle + iowait
    steal: int


def read_system() -> SystemSample:
    """The aggregate ``cpu`` line of /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is in user.
    total = sum(values[:8])
    return SystemSample(total=total, idle=values[3] + values[4], steal=values[7])


@dataclass(frozen=True, slots=True)
class TcpCounts:
    """TCP sockets between the daemon and the sample apps (from /proc/net/tcp)."""

    established: int  # client side: the daemon's open connections to the apps
    time_wait_client: int  # connections the daemon closed in the last ~60 s
    time_wait_server: int  # connections the apps closed in the last ~60 s


def read_tcp(app_ports: set[int]) -> TcpCounts:
    """Count the sockets to and from ``app_ports`` by state (IPv4 loopback only)."""
    established = tw_client = tw_server = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split(maxsplit=4)
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            state = parts[3]
            if remote_port in app_ports:
                if state == "01":
                    established += 1
                elif state == "06":
                    tw_client += 1
            elif local_port in app_ports and state == "06":
                tw_server += 1
    return TcpCounts(established, tw_client, tw_server)


@dataclass(frozen=True, slots=True)
class Tick:
    """Everything sampled at one moment of the window."""

    at: float
    daemon: ProcSample
    apps: tuple[ProcSample, ...]
    bench_ticks: int
    system: SystemSample
    tcp: TcpCounts


def _self_ticks() -> int:
    times = os.times()
    return round((times.user + times.system) * CLK_TCK)


def take_tick(daemon_pid: int, app_pids: Sequence[int], app_ports: set[int]) -> Tick:
    """Sample the daemon, the apps, this process and the machine."""
    daemon = read_proc(daemon_pid)
    return Tick(
        at=daemon.at,
        daemon=daemon,
        apps=tuple(read_proc(pid) for pid in app_pids),
        bench_ticks=_self_ticks(),
        system=read_system(),
        tcp=read_tcp(app_ports),
    )


# -- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A process this benchmark started (in its own session, so only we signal it)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise BenchError (with the log's tail) if the process has exited."""
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with {code}:\n{tail(self.log)}")


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports that nothing listens on right now (on 127.0.0.1)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))  # held until all are bound, so no port comes up twice
        return [int(sock.getsockname()[1]) for sock in sockets]


def start(name: str, argv: list[str], env: dict[str, str], log: Path) -> Child:
    """Start ``argv`` with stdout and stderr going to ``log``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    return Child(name, proc, log)


def stop(child: Child, timeout: float = 15.0) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; record how it went."""
    proc = child.proc
    if proc.poll() is not None:
        child.stopped = {"exit_code": proc.returncode, "already_exited": True}
        return
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    killed = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        killed = True
    child.stopped = {
        "exit_code": proc.returncode,
        "stop_seconds": round(time.monotonic() - started, 3),
        "killed": killed,
    }


def http_get(url: str, timeout: float = 5.0, accept: str = "*/*") -> tuple[int, bytes]:
    """GET ``url``; the status and body (an HTTP error status is returned, not raised)."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with _HTTP.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_http_ok(url: str, child: Child, timeout: float = 60.0) -> float:
    """Poll ``url`` until it answers 200; seconds waited. Fails if ``child`` exits."""
    started = time.monotonic()
    while True:
        child.check_alive()
        with contextlib.suppress(OSError):
            status, _ = http_get(url, timeout=2.0)
            if status == 200:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise BenchError(f"{url} did not answer 200 within {timeout:g}s:\n{tail(child.log)}")
        time.sleep(0.2)


def railguard_executable() -> str:
    """The venv's ``railguard`` console script (next to this interpreter)."""
    local = Path(sys.executable).parent / "railguard"
    if local.exists():
        return str(local)
    found = shutil.which("railguard")
    if found is None:
        raise BenchError("no railguard executable: install the project (make install)")
    return found


def daemon_environment(port: int) -> dict[str, str]:
    """This process's environment without RAILGUARD_* and PORT, plus the daemon's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAILGUARD_") and k != "PORT"}
    env.update(PORT=str(port), RAILGUARD_HOST=HOST, RAILGUARD_LOG_FORMAT="json")
    return env


def health_address(index: int, apps: int, distinct: bool) -> str:
    """The address service ``index`` probes: 127.0.0.1, or its own 127.0.0.x when distinct."""
    return f"127.0.0.{1 + index // apps}" if distinct else HOST


def write_config(
    path: Path,
    services: int,
    interval: float,
    app_ports: Sequence[int],
    max_probes: int | None,
    distinct: bool = False,
) -> None:
    """N preview-tier services (health rule only), round-robin over the apps."""
    lines = [f"# Written by bench/probe_load.py: {services} services, every {interval:g}s.", ""]
    if max_probes is not None:
        lines += ["[daemon]", f"max_concurrent_probes = {max_probes}", ""]
    width = len(str(services))
    for index in range(services):
        name = f"bench-{index + 1:0{width}d}"
        port = app_ports[index % len(app_ports)]
        host = health_address(index, len(app_ports), distinct)
        lines += [
            "[[services]]",
            f'name = "{name}"',
            'tier = "preview"',
            f'health_url = "http://{host}:{port}/health?service={name}"',
            f'interval = "{interval:g}s"',
            "",
        ]
    path.write_text("\n".join(lines))


# -- /metrics -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """One /metrics response, kept as text (parsed after the window, not during it)."""

    at: float  # time.monotonic() when the response had arrived
    seconds: float
    text: str


def scrape(url: str) -> Scrape:
    """GET the daemon's /metrics."""
    started = time.monotonic()
    status, body = http_get(url, timeout=30.0)
    if status != 200:
        raise BenchError(f"{url} answered {status}")
    done = time.monotonic()
    return Scrape(at=done, seconds=done - started, text=body.decode())


@dataclass
class Histogram:
    """A cumulative histogram: upper bound -> count of observations at or below it."""

    buckets: dict[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made since ``earlier``."""
        return Histogram(
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
            self.sum - earlier.sum,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear inside the bucket holding the rank.

        Bucket resolution only. Past the largest finite bound, that bound is returned.
        """
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le in sorted(self.buckets):
            cumulative = self.buckets[le]
            if cumulative >= rank:
                if le == float("inf"):
                    return lower
                if cumulative == below:
                    return le
                return lower + (le - lower) * (rank - below) / (cumulative - below)
            lower, below = le, cumulative
        return lower

    def share_above(self, bound: float) -> float | None:
        """Fraction of observations above ``bound`` (exact when it is a bucket bound)."""
        if self.count <= 0 or bound not in self.buckets:
            return None
        return 1.0 - self.buckets[bound] / self.count


@dataclass
class Totals:
    """What the benchmark reads from one /metrics scrape, summed over services."""

    probes: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    lag: Histogram = field(default_factory=Histogram)
    probe_duration: Histogram = field(default_factory=Histogram)
    ticks_skipped: float = 0.0
    tick_errors: float = 0.0
    series: int = 0

    @property
    def probe_count(self) -> float:
        """Every probe, whatever its outcome."""
        return sum(self.probes.values())


def _add_sample(hist: Histogram, suffix: str, labels: dict[str, str], value: float) -> None:
    if suffix == "_bucket":
        le = float(labels["le"])
        hist.buckets[le] = hist.buckets.get(le, 0.0) + value
    elif suffix == "_sum":
        hist.sum += value
    elif suffix == "_count":
        hist.count += value


def parse_totals(text: str) -> Totals:
    """Sum railguard's counters and histograms over every service (prometheus_client parser)."""
    totals = Totals()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals.series += 1
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "railguard_probes_total":
                totals.probes[f"{labels['signal']}:{labels['outcome']}"] += value
            elif name.startswith("railguard_scheduler_lag_seconds"):
                suffix = name.removeprefix("railguard_scheduler_lag_seconds")
                _add_sample(totals.lag, suffix, labels, value)
            elif name.startswith("railguard_probe_duration_seconds"):
                suffix = name.removeprefix("railguard_probe_duration_seconds")
                _add_sample(totals.probe_duration, suffix, labels, value)
            elif name == "railguard_ticks_skipped_total":
                totals.ticks_skipped += value
            elif name == "railguard_tick_errors_total":
                totals.tick_errors += value
    return totals


def measure_scrape_cost(
    url: str, daemon_pid: int, count: int, busy_rate: float, previous: Scrape
) -> dict[str, Any]:
    """Time ``count`` back-to-back scrapes; the daemon CPU they cost beyond its usual rate.

    ``busy_rate`` is the daemon's CPU-seconds per second during the window; the scrapes'
    cost is what the daemon used on top of it while they ran. ``previous`` (the window's
    last scrape, just before) gives the scheduler lag while scrapes ran back to back.
    """
    before = read_proc(daemon_pid)
    scrapes = [scrape(url) for _ in range(count)]
    after = read_proc(daemon_pid)
    hwm = {
        "vm_hwm_mib_before": round(before.hwm_kib / 1024, 1),
        "vm_hwm_mib_after": round(after.hwm_kib / 1024, 1),
        "rss_mib_after": round(after.rss_kib / 1024, 1),
    }
    wall = after.at - before.at
    cpu = (after.cpu_ticks - before.cpu_ticks) / CLK_TCK
    extra = max(cpu - busy_rate * wall, 0.0)
    totals = parse_totals(scrapes[-1].text)
    lag = totals.lag.minus(parse_totals(previous.text).lag)
    return {
        "scrapes": count,
        "bytes": len(scrapes[-1].text.encode()),
        "series": totals.series,
        "wall_ms_median": round(statistics.median(s.seconds for s in scrapes) * 1000, 1),
        "daemon_cpu_ms_per_scrape": round(extra / count * 1000, 1),
        "scheduler_lag_ms_while_scraping": _histogram_summary(lag, bound=GOAL_LAG_P99_MS / 1000),
        **hwm,
        "note": f"CPU beyond the window's rate over {count} back-to-back scrapes "
        f"({1000 / CLK_TCK:g} ms tick resolution)",
    }


def measure_status_cost(
    url: str, daemon_pid: int, count: int, busy_rate: float, accept: str
) -> dict[str, Any]:
    """Time ``count`` back-to-back GETs of /status (JSON or the HTML page) the same way."""
    before = read_proc(daemon_pid)
    walls, size = [], 0
    for _ in range(count):
        started = time.monotonic()
        status, body = http_get(url, timeout=60.0, accept=accept)
        if status != 200:
            raise BenchError(f"{url} answered {status}")
        walls.append(time.monotonic() - started)
        size = len(body)
    after = read_proc(daemon_pid)
    cpu = (after.cpu_ticks - before.cpu_ticks) / CLK_TCK
    extra = max(cpu - busy_rate * (after.at - before.at), 0.0)
    return {
        "requests": count,
        "accept": accept,
        "bytes": size,
        "wall_ms_median": round(statistics.median(walls) * 1000, 1),
        "daemon_cpu_ms_per_request": round(extra / count * 1000, 1),
        "rss_mib_after": round(after.rss_kib / 1024, 1),
    }


# -- profile --------------------------------------------------------------------------------


# Leaf frames of a thread that waits. py-spy's pause (ptrace) wakes a sleeping thread, so
# some of its samples look active; they are counted apart, not as work.
WAIT_LEAVES = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py")

# Where the daemon's active samples go: the first rule matching any frame of a stack wins.
PROFILE_CATEGORIES = (
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("rule engine (monitor/engine.py)", ("monitor/engine.py",)),
    ("logging (structlog)", ("structlog/",)),
    ("HTTP client (aiohttp, asyncio transport)", ("aiohttp/", "asyncio/selector_events.py")),
    ("railguard scheduler and sources (monitor/)", ("monitor/",)),
)


def _category(frames: Sequence[str]) -> str:
    for name, needles in PROFILE_CATEGORIES:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return "asyncio event loop (other)"


def profile_daemon(pid: int, seconds: float, out: Path) -> dict[str, Any]:
    """Sample the daemon with py-spy (collapsed stacks): time by category and by function."""
    py_spy = Path(sys.executable).parent / "py-spy"
    exe = str(py_spy) if py_spy.exists() else shutil.which("py-spy")
    if exe is None:
        return {"error": "py-spy not installed (.venv/bin/pip install py-spy)"}
    # Blocking mode (py-spy pauses the daemon for each sample) gives whole stacks; the
    # pauses cost the daemon time, which is why this runs after the window.
    argv = [exe, "record", "--format", "raw", "-r", "200"]
    argv += ["-d", str(round(seconds)), "-p", str(pid), "-o", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not out.exists():
        return {"error": (done.stderr or done.stdout).strip()[-500:]}
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    categories: collections.Counter[str] = collections.Counter()
    active = waiting = 0
    for line in out.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(WAIT_LEAVES):
            waiting += count
            continue
        active += count
        own[frames[-1]] += count
        categories[_category(frames)] += count
        for frame in set(frames):
            inclusive[frame] += count

    def top(counter: collections.Counter[str], n: int) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "percent": round(100.0 * c / max(active, 1), 1)}
            for frame, c in counter.most_common(n)
        ]

    return {
        "file": str(out),
        "samples_active": active,
        "samples_waiting": waiting,
        "note": "percentages are of active samples (waits in epoll or an idle pool thread "
        "are left out); 200 samples per second",
        "categories": top(categories, len(PROFILE_CATEGORIES) + 1),
        "top_own": top(own, 15),
        "top_inclusive": top(inclusive, 30),
    }


# -- the run --------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def window_percentages(samples: Sequence[ProcSample], per: int) -> list[float]:
    """CPU % of one core over consecutive windows of ``per`` samples."""
    out = []
    for start in range(0, len(samples) - per, per):
        a, b = samples[start], samples[start + per]
        out.append(100.0 * (b.cpu_ticks - a.cpu_ticks) / CLK_TCK / (b.at - a.at))
    return out


def summarize_process(samples: Sequence[ProcSample], per: int) -> dict[str, Any]:
    """CPU % per window (median, max, whole window) and RSS (median, peak) of one process."""
    windows = window_percentages(samples, per)
    first, last = samples[0], samples[-1]
    cpu_seconds = (last.cpu_ticks - first.cpu_ticks) / CLK_TCK
    rss = [s.rss_kib * 1024 / MIB for s in samples]
    return {
        "cpu_percent_median": round(_median(windows), 2),
        "cpu_percent_max": round(max(windows), 2),
        "cpu_percent_overall": round(100.0 * cpu_seconds / (last.at - first.at), 2),
        "cpu_percent_windows": [round(w, 2) for w in windows],
        "cpu_seconds": round(cpu_seconds, 2),
        "cpu_system_share": round(
            (last.system_ticks - first.system_ticks) / max(last.cpu_ticks - first.cpu_ticks, 1), 3
        ),
        "rss_mib_median": round(_median(rss), 1),
        "rss_mib_peak": round(max(rss), 1),
        "vm_hwm_mib_window_start": round(first.hwm_kib / 1024, 1),
        "vm_hwm_mib": round(last.hwm_kib / 1024, 1),
        "threads_max": max(s.threads for s in samples),
    }


def machine_info() -> dict[str, Any]:
    """The machine and the software measured."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    commit = _git("rev-parse", "--short", "HEAD").strip()
    changed = _git("status", "--porcelain", "--", "monitor").splitlines()
    import aiohttp  # the daemon's HTTP client; imported only for its version

    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "railguard": railguard_version,
        "git_commit": commit or None,
        "monitor_files_changed_since_commit": [line[3:] for line in changed],
        "clock_ticks_per_second": CLK_TCK,
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def sample_window(
    daemon: Child, apps: Sequence[Child], ports: set[int], duration: float, every: float
) -> list[Tick]:
    """Sample /proc every ``every`` seconds for ``duration`` seconds (drift-free)."""
    app_pids = [a.pid for a in apps]
    ticks = [take_tick(daemon.pid, app_pids, ports)]
    start = ticks[0].at
    steps = round(duration / every)
    for step in range(1, steps + 1):
        time.sleep(max(start + step * every - time.monotonic(), 0.0))
        for child in (daemon, *apps):
            child.check_alive()
        ticks.append(take_tick(daemon.pid, app_pids, ports))
    return ticks


def run(args: argparse.Namespace, workdir: Path, children: list[Child]) -> dict[str, Any]:
    """Start everything, measure, and return the results (children are stopped by the caller)."""
    result: dict[str, Any] = {
        "benchmark": "probe_load",
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "bench/probe_load.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "load_average": {"before": loadavg()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    max_probes = args.max_concurrent_probes
    result["parameters"] = {
        "services": args.services,
        "interval_s": args.interval,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "sample_every_s": args.sample_every,
        "apps": args.apps,
        "distinct_hosts": args.distinct_hosts,
        "max_concurrent_probes": max_probes or DaemonConfig().max_concurrent_probes,
        "max_concurrent_probes_source": "--max-concurrent-probes" if max_probes else "default",
    }

    *ports, daemon_port = free_ports(args.apps + 1)
    apps = start_apps(ports, args.distinct_hosts, workdir, children)
    config = workdir / "bench.toml"
    write_config(config, args.services, args.interval, ports, max_probes, args.distinct_hosts)
    base = f"http://{HOST}:{daemon_port}"
    argv = [railguard_executable(), "run", "--config", str(config)]
    daemon = start("railguard", argv, daemon_environment(daemon_port), workdir / "daemon.log")
    children.append(daemon)
    result["startup_s"] = round(wait_http_ok(f"{base}/healthz", daemon), 3)
    print(
        f"railguard pid {daemon.pid} on {base}: {args.services} services every "
        f"{args.interval:g}s against {args.apps} app(s); warming up {args.warmup:g}s",
        file=sys.stderr,
    )
    time.sleep(args.warmup)
    daemon.check_alive()

    result["load_average"]["window_start"] = loadavg()
    first = scrape(f"{base}/metrics")
    print(f"measuring for {args.duration:g}s", file=sys.stderr)
    ticks = sample_window(daemon, apps, set(ports), args.duration, args.sample_every)
    last = scrape(f"{base}/metrics")
    result["load_average"]["window_end"] = loadavg()

    per = round(args.window / args.sample_every)
    daemon_summary = summarize_process([t.daemon for t in ticks], per)
    busy_rate = daemon_summary["cpu_percent_overall"] / 100.0
    if args.scrape_samples:
        daemon_summary["scrape_cost"] = measure_scrape_cost(
            f"{base}/metrics", daemon.pid, args.scrape_samples, busy_rate, last
        )
        for kind, accept in (("json", "application/json"), ("html", "text/html")):
            daemon_summary[f"status_{kind}_cost"] = measure_status_cost(
                f"{base}/status", daemon.pid, args.scrape_samples, busy_rate, accept
            )
    if args.profile:
        print(f"profiling the daemon for {args.profile:g}s (after the window)", file=sys.stderr)
        out = args.output.with_suffix(".profile.txt")
        daemon_summary["profile"] = profile_daemon(daemon.pid, args.profile, out)

    daemon_summary.update(summarize_metrics(first, last, ticks, args.services / args.interval))
    result["daemon"] = daemon_summary
    result["sample_apps"] = [
        summarize_process([t.apps[i] for t in ticks], per) for i in range(len(apps))
    ]
    result["system"] = _system_summary(ticks, daemon_summary, result["sample_apps"])
    result["connections"] = _tcp_summary(ticks)
    result["goals"] = _goals(daemon_summary)
    return result


def start_apps(
    ports: Sequence[int], distinct_hosts: bool, workdir: Path, children: list[Child]
) -> list[Child]:
    """One sample app per port; returns once each answers /health."""
    apps = []
    for index, port in enumerate(ports):
        argv = [sys.executable, "-m", "monitor.sandbox.sample_app", "--port", str(port)]
        if distinct_hosts:  # to answer on every 127.0.0.x (it listens on all interfaces)
            argv += ["--host", "0.0.0.0"]
        app = start(f"sample app {index + 1}", argv, dict(os.environ), workdir / f"app{index}.log")
        children.append(app)
        apps.append(app)
    for app, port in zip(apps, ports, strict=True):
        wait_http_ok(f"http://{HOST}:{port}/health", app)
    return apps


def summarize_metrics(
    first: Scrape, last: Scrape, ticks: Sequence[Tick], planned_rate: float
) -> dict[str, Any]:
    """Probes, CPU per 1,000 probes, scheduler lag and probe duration over the window."""
    before, after = parse_totals(first.text), parse_totals(last.text)
    probes = after.probe_count - before.probe_count
    metric_wall = last.at - first.at
    probe_rate = probes / metric_wall
    cpu_wall = ticks[-1].at - ticks[0].at
    cpu_seconds = (ticks[-1].daemon.cpu_ticks - ticks[0].daemon.cpu_ticks) / CLK_TCK
    expected = planned_rate * metric_wall
    outcomes = {k: int(v - before.probes.get(k, 0.0)) for k, v in sorted(after.probes.items())}
    return {
        "probes": {
            "completed": int(probes),
            "expected": round(expected),
            "completed_vs_expected": round(probes / expected, 4),
            "per_second": round(probe_rate, 1),
            "by_outcome": outcomes,
            "ticks_skipped": int(after.ticks_skipped - before.ticks_skipped),
            "tick_errors": int(after.tick_errors - before.tick_errors),
        },
        # Rates, not totals: the CPU and the metrics windows differ by a scrape's duration.
        "cpu_seconds_per_1000_probes": round((cpu_seconds / cpu_wall) / probe_rate * 1000, 4),
        "scheduler_lag_ms": _histogram_summary(
            after.lag.minus(before.lag), bound=GOAL_LAG_P99_MS / 1000
        ),
        "probe_duration_ms": _histogram_summary(
            after.probe_duration.minus(before.probe_duration), bound=0.1
        ),
        "metrics_series": after.series,
    }


def _histogram_summary(hist: Histogram, bound: float) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 2)

    share = hist.share_above(bound)
    return {
        "observations": int(hist.count),
        "mean": ms(hist.sum / hist.count) if hist.count else None,
        "p50": ms(hist.quantile(0.50)),
        "p99": ms(hist.quantile(0.99)),
        "max_bucket": ms(_max_bucket(hist)),
        f"share_above_{bound * 1000:g}ms": None if share is None else round(share, 5),
        "bucket_counts": _bucket_counts(hist),
        "resolution": "bucket bounds (ms): "
        + ", ".join(f"{le * 1000:g}" for le in sorted(hist.buckets) if le != float("inf")),
    }


def _bucket_counts(hist: Histogram) -> dict[str, int]:
    """Observations per bucket (not cumulative), keyed ``"<=1ms"``, ``"1-5ms"``, ..."""
    out: dict[str, int] = {}
    lower, below = 0.0, 0.0
    for le in sorted(hist.buckets):
        upper = "inf" if le == float("inf") else f"{le * 1000:g}"
        key = f"<={upper}ms" if lower == 0.0 else f"{lower * 1000:g}-{upper}ms"
        out[key] = int(hist.buckets[le] - below)
        lower, below = le, hist.buckets[le]
    return out


def _max_bucket(hist: Histogram) -> float | None:
    """Upper bound of the highest bucket that received an observation."""
    previous, top = 0.0, None
    for le in sorted(hist.buckets):
        if hist.buckets[le] > previous:
            top = le
        previous = hist.buckets[le]
    return top


def _system_summary(
    ticks: Sequence[Tick], daemon: dict[str, Any], apps: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    first, last = ticks[0], ticks[-1]
    wall = last.at - first.at
    total = last.system.total - first.system.total
    busy = total - (last.system.idle - first.system.idle)
    cores = len(os.sched_getaffinity(0))
    busy_cores = busy / total * cores if total else 0.0
    bench = (last.bench_ticks - first.bench_ticks) / CLK_TCK / wall
    ours = daemon["cpu_percent_overall"] / 100 + sum(a["cpu_percent_overall"] for a in apps) / 100
    return {
        "busy_cores": round(busy_cores, 3),
        "steal_percent": round(100.0 * (last.system.steal - first.system.steal) / total, 2),
        "bench_process_cores": round(bench, 3),
        "others_cores": round(busy_cores - ours - bench, 3),
        "note": "busy_cores: all CPUs of the machine over the window, in cores; "
        "others_cores: what neither railguard, the apps nor this script used",
    }


def _tcp_summary(ticks: Sequence[Tick]) -> dict[str, Any]:
    established = [t.tcp.established for t in ticks]
    tw_client = [t.tcp.time_wait_client for t in ticks]
    tw_server = [t.tcp.time_wait_server for t in ticks]
    return {
        "established_median": _median(established),
        "established_max": max(established),
        "time_wait_client_median": _median(tw_client),
        "time_wait_server_median": _median(tw_server),
        "closed_per_second_estimate": round((_median(tw_client) + _median(tw_server)) / 60.0, 2),
        "note": "sockets between the daemon and the apps (/proc/net/tcp); TIME_WAIT lasts 60 s "
        "on Linux, so TIME_WAIT / 60 approximates connections closed per second",
    }


def _goals(daemon: dict[str, Any]) -> dict[str, Any]:
    cpu = daemon["cpu_percent_median"]
    rss_mb = daemon["rss_mib_peak"] * MIB / 1e6
    p99 = daemon["scheduler_lag_ms"]["p99"]
    return {
        "cpu_under_20_percent": {"value": cpu, "goal": GOAL_CPU_PERCENT, "met": cpu < 20},
        "rss_under_100_mb": {
            "value": round(rss_mb, 1),
            "goal": GOAL_RSS_MB,
            "met": rss_mb < GOAL_RSS_MB,
            "note": "peak VmRSS during the window, in MB (10^6 bytes)",
        },
        "lag_p99_under_100_ms": {
            "value": p99,
            "goal": GOAL_LAG_P99_MS,
            "met": p99 is not None and p99 < GOAL_LAG_P99_MS,
        },
    }


def _log_levels(path: Path) -> dict[str, Any]:
    levels: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            levels[str(json.loads(line).get("level", "?"))] += 1
        except (ValueError, AttributeError):
            levels["not-json"] += 1
    return dict(levels)


# -- output ---------------------------------------------------------------------------------


def print_table(result: dict[str, Any]) -> None:
    """The results, for people."""
    d = result["daemon"]
    goals = result["goals"]
    lag = d["scheduler_lag_ms"]
    dur = d["probe_duration_ms"]
    probes = d["probes"]
    apps = result["sample_apps"]
    machine = result["machine"]
    load = result["load_average"]

    def met(key: str) -> str:
        return "yes" if goals[key]["met"] else "NO"

    rows = [
        (
            "daemon CPU, % of one core (median / max of windows)",
            f"{d['cpu_percent_median']:.1f} / {d['cpu_percent_max']:.1f}",
            "< 20",
            met("cpu_under_20_percent"),
        ),
        (
            "daemon RSS, MiB (median / peak = MB; VmHWM)",
            f"{d['rss_mib_median']:.1f} / {d['rss_mib_peak']:.1f} = "
            f"{goals['rss_under_100_mb']['value']:.1f} MB; {d['vm_hwm_mib']:.1f}",
            "< 100 MB",
            met("rss_under_100_mb"),
        ),
        (
            "scheduler lag, ms (p50 / p99, bucket-resolution)",
            f"{lag['p50']} / {lag['p99']}",
            "p99 < 100",
            met("lag_p99_under_100_ms"),
        ),
        ("CPU-seconds per 1,000 probes", f"{d['cpu_seconds_per_1000_probes']:.3f}", "", ""),
        ("probes completed (expected)", f"{probes['completed']} ({probes['expected']})", "", ""),
        ("probe outcomes", ", ".join(f"{k}={v}" for k, v in probes["by_outcome"].items()), "", ""),
        (
            "ticks skipped / tick errors",
            f"{probes['ticks_skipped']} / {probes['tick_errors']}",
            "",
            "",
        ),
        ("probe duration, ms (p50 / p99)", f"{dur['p50']} / {dur['p99']}", "", ""),
    ]
    if "scrape_cost" in d:
        sc = d["scrape_cost"]
        rows.append(
            (
                "one /metrics scrape: daemon CPU ms, wall ms, series",
                f"{sc['daemon_cpu_ms_per_scrape']} / {sc['wall_ms_median']} / {sc['series']}",
                "",
                "",
            )
        )
    for kind in ("json", "html"):
        if f"status_{kind}_cost" in d:
            st = d[f"status_{kind}_cost"]
            rows.append(
                (
                    f"one /status ({kind}): daemon CPU ms, wall ms, bytes",
                    f"{st['daemon_cpu_ms_per_request']} / {st['wall_ms_median']} / {st['bytes']}",
                    "",
                    "",
                )
            )
    for i, app in enumerate(apps):
        rows.append(
            (
                f"sample app {i + 1} CPU, % of one core (median / max)",
                f"{app['cpu_percent_median']:.1f} / {app['cpu_percent_max']:.1f}",
                "",
                "",
            )
        )
    conn = result["connections"]
    sysinfo = result["system"]
    rows += [
        (
            "connections open (median / max)",
            f"{conn['established_median']:g} / {conn['established_max']}",
            "",
            "",
        ),
        (
            "connections closed per s (TIME_WAIT/60)",
            f"{conn['closed_per_second_estimate']}",
            "",
            "",
        ),
        (
            "machine busy, cores (others; steal %)",
            f"{sysinfo['busy_cores']} ({sysinfo['others_cores']}; {sysinfo['steal_percent']})",
            "",
            "",
        ),
        (
            "load average 1/5/15 (start -> end of window)",
            f"{load['window_start']} -> {load['window_end']}",
            "",
            "",
        ),
        (
            "machine",
            f"{machine['nproc']} CPUs ({machine['cpu_model']}), Python {machine['python']}",
            "",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{vwidth}}  {'goal':<9}  met")
    for name, value, goal, ok in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {goal:<9}  {ok}".rstrip())


def write_results(result: dict[str, Any], path: Path) -> None:
    """Write the JSON results (creating bench/results/ if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so the started processes are always stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (goals met or not), 1 when it could not run."""
    args = parse_args(argv)
    children: list[Child] = []
    result: dict[str, Any] | None = None
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="railguard-bench-") as tmp:
        workdir = Path(tmp)
        try:
            result = run(args, workdir, children)
        except BenchError as exc:
            print(f"probe_load: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print("probe_load: interrupted", file=sys.stderr)
        finally:
            for child in reversed(children):  # the daemon first, then the apps
                stop(child)
            daemon_log = workdir / "daemon.log"
            if daemon_log.exists():
                args.output.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(daemon_log, args.output.with_suffix(".daemon.log"))
    if result is None:
        return 1
    result["shutdown"] = {c.name: c.stopped for c in children}
    result["daemon_log"] = {
        "file": str(args.output.with_suffix(".daemon.log")),
        "lines_by_level": _log_levels(args.output.with_suffix(".daemon.log")),
    }
    write_results(result, args.output)
    print_table(result)
    print(f"\nJSON: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
