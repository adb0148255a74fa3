"""Detection delay: railguard and a real Prometheus on the same fault, on the real clock.

The issue's goal: railguard fires at ``for`` + at most one interval after the fault starts in
every trial, and its median delay is below Prometheus' (Debian's prometheus; ``for`` 20 s,
2 s interval, a ``rate[10s]`` rule).

What it runs, all on 127.0.0.1 and all stopped at the end (also on an error or Ctrl-C):

1. one sample app (``python -m monitor.sandbox.sample_app``), its own process;
2. a load generator in this process: ``--rps`` GET /work a second, paced, one at a time;
3. a real Prometheus (its own process and temporary storage) scraping the app's /metrics
   every 2 s, evaluating every 2 s::

       alert: ErrorRate
       expr: sum(rate(http_requests_total{code=~"5.."}[10s]))
             / sum(rate(http_requests_total[10s])) > 0.05
       for: 20s

4. railguard's real Daemon in this process (as bench/rollback_time.py does): one
   preview-tier service (no rollback, no Railway) with ``error_rate = { source =
   "exposition", url = <app>/metrics, min_requests = 5 }``, interval 2 s, its tier's rules
   reduced to ``error-rate`` (5xx share > 5%) with ``for = "20s"``. Every transition reaches
   the daemon's verdict sink, which records it with ``time.time()``.

A trial: healthy traffic for ``--settle`` seconds after the last heal (longer than the rate
window plus two scrapes, so Prometheus' window holds no error any more) and until both are
inactive, plus a random 0-2 s so the fault lands at a random phase of both schedules; at t0
the app starts answering ``--error-ratio`` of requests with 500 (``POST /_control``); wait
until both fired (at most ``--fire-timeout`` s); heal; wait until both resolved.

Per trial, the delay from t0 to each of:

- railguard: the first breaching sample (the rule goes PENDING; ``since``), the evaluation
  that fired (``verdict.at``, the sample's timestamp) and the sink's call (``time.time()``);
- Prometheus: ``activeAt`` (the evaluation that saw the expression true: pending), the
  evaluation that fired (the rule's ``lastEvaluation`` at the first poll that saw
  ``firing``) and that poll (``/api/v1/rules`` every ``--poll`` s).

Before the first trial the app answers one request with 500, so the ``code="500"`` series
exists, as it does in a service that has ever failed: otherwise Prometheus' ``rate`` needs
two samples of a brand-new series, one scrape more (``--no-prime`` measures that case).

    .venv/bin/python bench/detection_delay.py [--trials 10]

Prints a table and writes bench/results/detection_delay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from monitor import __version__ as railguard_version  # noqa: E402
from monitor.clock import SystemClock  # noqa: E402
from monitor.daemon import Daemon  # noqa: E402
from monitor.engine import Transition, Verdict  # noqa: E402
from monitor.environment import load_environment  # noqa: E402
from monitor.model import Phase  # noqa: E402
from monitor.plan import ServicePlan  # noqa: E402
from monitor.planning import build_plan  # noqa: E402
from monitor.telemetry import Metrics, configure_logging  # noqa: E402

RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"
FOR_S = 20.0
INTERVAL_S = 2.0
RATE_WINDOW = "10s"
THRESHOLD = 0.05
GOAL_S = FOR_S + INTERVAL_S  # railguard: for + at most one interval, every trial
RULE = "error-rate"
ALERT = "ErrorRate"
EXPR = (
    f'sum(rate(http_requests_total{{code=~"5.."}}[{RATE_WINDOW}])) '
    f"/ sum(rate(http_requests_total[{RATE_WINDOW}]))"
)
READY_WITHIN = 30.0
MAX_RPS = 500.0

RAILGUARD_CONFIG = """
[daemon]
shutdown_timeout = "2s"
stagger = false

[tiers.preview]
rules = ["{rule}"]

[[services]]
name = "app"
tier = "preview"
interval = "{interval:g}s"
error_rate = {{ source = "exposition", url = "{app}/metrics", min_requests = 5 }}

[services.rules.{rule}]
for = "{for_:g}s"
"""

PROMETHEUS_CONFIG = """
global:
  scrape_interval: {interval:g}s
  scrape_timeout: 1s
  evaluation_interval: {interval:g}s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ["{target}"]
"""

PROMETHEUS_RULES = """
groups:
  - name: detection-delay
    interval: {interval:g}s
    rules:
      - alert: {alert}
        expr: '{expr} > {threshold:g}'
        for: {for_:g}s
"""


class BenchError(RuntimeError):
    """The benchmark could not run (a process died, an endpoint never came up)."""


# -- arguments ------------------------------------------------------------------------------


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {text!r})")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench/detection_delay.py",
        description="Time from a fault to the rule firing: railguard vs a real Prometheus.",
    )
    parser.add_argument("--trials", type=int, default=10, help="faults to time (10)")
    parser.add_argument("--rps", type=_positive, default=50.0, help="requests a second (50)")
    parser.add_argument(
        "--error-ratio", type=_positive, default=0.5, help="share of 500s during a fault (0.5)"
    )
    parser.add_argument(
        "--settle", type=_positive, default=16.0, help="healthy seconds before a fault (16)"
    )
    parser.add_argument(
        "--fire-timeout", type=_positive, default=60.0, help="most seconds to wait for both (60)"
    )
    parser.add_argument("--poll", type=_positive, default=0.1, help="Prometheus poll, s (0.1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault phases")
    parser.add_argument(
        "--no-prime", action="store_true", help="no 500 before the first trial (see docstring)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "detection_delay.json",
        help="JSON results (bench/results/detection_delay.json)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.trials <= 100:
        parser.error("--trials must be between 1 and 100")
    if args.rps > MAX_RPS:
        parser.error(f"--rps must be at most {MAX_RPS:g} (the load is bounded)")
    if not 0 < args.error_ratio <= 1:
        parser.error("--error-ratio must be in (0, 1]")
    if not 0.02 <= args.poll <= 1:
        parser.error("--poll must be between 0.02 and 1 s")
    if args.settle < 14:
        parser.error("--settle must be at least 14 s (the rate window and two scrapes)")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


# -- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A process this benchmark started (in its own session, so only we signal it)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stopped: dict[str, Any] = field(default_factory=dict)

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
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def start(name: str, argv: list[str], log: Path, children: list[Child]) -> Child:
    """Start ``argv`` with its output going to ``log``; remember it in ``children``."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    child = Child(name, proc, log)
    children.append(child)
    return child


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


def start_prometheus(workdir: Path, app_port: int, children: list[Child]) -> tuple[Child, str]:
    """Prometheus with its own storage in ``workdir``, scraping the app and evaluating the rule."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise BenchError("needs prometheus on PATH (apt-get install prometheus)")
    rules = workdir / "rules.yml"
    rules.write_text(
        PROMETHEUS_RULES.format(
            interval=INTERVAL_S, alert=ALERT, expr=EXPR, threshold=THRESHOLD, for_=FOR_S
        )
    )
    config = workdir / "prometheus.yml"
    config.write_text(
        PROMETHEUS_CONFIG.format(interval=INTERVAL_S, rules=rules, target=f"{HOST}:{app_port}")
    )
    (port,) = free_ports(1)
    child = start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'prometheus-data'}",
            f"--web.listen-address={HOST}:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        workdir / "prometheus.log",
        children,
    )
    return child, f"http://{HOST}:{port}"


def prometheus_version() -> str:
    """The first line of ``prometheus --version``."""
    binary = shutil.which("prometheus")
    if binary is None:
        return "?"
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).partition("\n")[0].strip()


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


# -- watching both --------------------------------------------------------------------------

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def rfc3339(text: str | None) -> float | None:
    """Go's RFC 3339 with nanoseconds -> Unix seconds (None for none or the zero time)."""
    match = _RFC3339.fullmatch(text or "")
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    at = dt.datetime.fromisoformat(whole + zone).timestamp()
    if at <= 0:
        return None
    return at + (float("0." + fraction) if fraction else 0.0)


@dataclass(frozen=True)
class RailguardEvent:
    """One transition of railguard's rule, as the verdict sink got it."""

    seen: float  # time.time() in the sink
    at: float  # verdict.at: the timestamp of the sample evaluated
    transitions: tuple[str, ...]
    phase: str
    reason: str


class RailguardWatch:
    """The daemon's verdict sink: records every transition of the rule."""

    def __init__(self) -> None:
        self.events: list[RailguardEvent] = []

    async def __call__(self, service: ServicePlan, verdict: Verdict) -> None:
        seen = time.time()
        if verdict.rule == RULE:
            transitions = tuple(t.value for t in verdict.transitions)
            event = RailguardEvent(
                seen, verdict.at, transitions, verdict.phase.value, verdict.reason
            )
            self.events.append(event)


@dataclass(frozen=True)
class PrometheusEvent:
    """A change of the alerting rule's state, as a poll of /api/v1/rules saw it."""

    seen: float  # time.time() when the answer arrived
    state: str  # inactive, pending, firing
    evaluated: float | None  # the rule's lastEvaluation
    active_at: float | None  # the alert's activeAt


class PrometheusWatch:
    """Polls the alerting rule's state every ``every`` seconds and records its changes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, every: float) -> None:
        self.session = session
        self.url = f"{url}/api/v1/rules?type=alert"
        self.every = every
        self.state = "unknown"
        self.events: list[PrometheusEvent] = []
        self.polls = 0
        self.errors: Counter[str] = Counter()

    async def run(self) -> None:
        """Poll until cancelled (drift-free cadence)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self._poll()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                self.errors[type(exc).__name__] += 1
            next_at += self.every
            delay = next_at - loop.time()
            if delay < 0:
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def _poll(self) -> None:
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with self.session.get(self.url, timeout=timeout) as response:
            body = await response.json()
        seen = time.time()
        self.polls += 1
        rules = [r for g in body["data"]["groups"] for r in g["rules"] if r["name"] == ALERT]
        if not rules:
            raise KeyError(ALERT)
        rule = rules[0]
        state = rule["state"]
        if state != self.state:
            alerts = rule.get("alerts") or [{}]
            event = PrometheusEvent(
                seen, state, rfc3339(rule.get("lastEvaluation")), rfc3339(alerts[0].get("activeAt"))
            )
            self.events.append(event)
            self.state = state


async def prometheus_ratio(session: aiohttp.ClientSession, url: str) -> float | None:
    """The rule's expression now, without the comparison (None when it has no value yet)."""
    async with session.get(
        f"{url}/api/v1/query", params={"query": EXPR}, timeout=aiohttp.ClientTimeout(total=2.0)
    ) as response:
        body = await response.json()
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if result else None


async def traffic(
    session: aiohttp.ClientSession, url: str, rps: float, counts: Counter[str]
) -> None:
    """GET ``url`` ``rps`` times a second, one request at a time, until cancelled."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rps
    next_at = loop.time()
    timeout = aiohttp.ClientTimeout(total=2.0)
    while True:
        try:
            async with session.get(url, timeout=timeout) as response:
                await response.read()
                counts[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            counts[type(exc).__name__] += 1
        next_at += period
        delay = next_at - loop.time()
        if delay < -1.0:  # fell behind (a stall): carry on at the rate, no burst
            next_at, delay = loop.time(), 0.0
        await asyncio.sleep(max(delay, 0.0))


async def control(session: aiohttp.ClientSession, app: str, error_ratio: float) -> None:
    """Set the app's share of 500s."""
    async with session.post(f"{app}/_control", json={"error_ratio": error_ratio}) as response:
        if response.status != 200:
            raise BenchError(f"/_control answered {response.status}: {await response.text()}")


# -- the run --------------------------------------------------------------------------------


@dataclass
class Stage:
    """What the trials need."""

    session: aiohttp.ClientSession
    app: str
    prometheus: str
    daemon: Daemon
    railguard: RailguardWatch
    watch: PrometheusWatch
    children: list[Child]
    rng: random.Random
    args: argparse.Namespace

    def railguard_phase(self) -> Phase:
        """The rule's phase in the daemon now."""
        assert self.daemon.scheduler is not None
        (worker,) = self.daemon.scheduler.workers
        return worker.states[RULE].phase

    def check_alive(self) -> None:
        """Raise BenchError if a process we started has exited."""
        for child in self.children:
            child.check_alive()


async def wait_for(stage: Stage, done: Any, within: float, step: float = 0.05) -> bool:
    """Poll ``done()`` every ``step`` s for up to ``within`` s; whether it came true."""
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            return False
        stage.check_alive()
        await asyncio.sleep(step)
    return True


def _after(value: float | None, t0: float) -> float | None:
    return None if value is None else round(value - t0, 3)


async def one_trial(stage: Stage, index: int, healed_at: float) -> dict[str, Any]:
    """Fault at t0, wait for both to fire, heal, wait for both to resolve."""
    args = stage.args

    def both_inactive() -> bool:
        return stage.railguard_phase() is Phase.INACTIVE and stage.watch.state == "inactive"

    # Healthy for --settle seconds since the last heal, both inactive, then a random phase.
    await asyncio.sleep(max(0.0, healed_at + args.settle - time.time()))
    if not await wait_for(stage, both_inactive, 60.0):
        raise BenchError(
            f"trial {index}: not inactive 60 s after settling: railguard "
            f"{stage.railguard_phase().value}, Prometheus {stage.watch.state}"
        )
    await asyncio.sleep(stage.rng.uniform(0.0, INTERVAL_S))
    before = await prometheus_ratio(stage.session, stage.prometheus)
    if before is None or stage.watch.state != "inactive":
        raise BenchError(
            f"trial {index}: Prometheus not ready before the fault "
            f"(ratio {before}, state {stage.watch.state})"
        )
    rg_mark, prom_mark = len(stage.railguard.events), len(stage.watch.events)

    t0 = time.time()
    await control(stage.session, stage.app, args.error_ratio)
    ack = time.time()

    def rg_fired() -> bool:
        return any("firing" in e.transitions for e in stage.railguard.events[rg_mark:])

    def prom_fired() -> bool:
        return any(e.state == "firing" for e in stage.watch.events[prom_mark:])

    await wait_for(stage, lambda: rg_fired() and prom_fired(), args.fire_timeout)
    heal = time.time()
    await control(stage.session, stage.app, 0.0)

    def resolved() -> bool:
        return stage.railguard_phase() is Phase.INACTIVE and stage.watch.state == "inactive"

    all_resolved = await wait_for(stage, resolved, 60.0)

    rg = stage.railguard.events[rg_mark:]
    prom = stage.watch.events[prom_mark:]
    pending = next((e for e in rg if Transition.PENDING.value in e.transitions), None)
    fired = next((e for e in rg if Transition.FIRING.value in e.transitions), None)
    rg_resolved = next((e for e in rg if e.seen >= heal and e.phase == "inactive"), None)
    p_pending = next((e for e in prom if e.state in ("pending", "firing")), None)
    p_fired = next((e for e in prom if e.state == "firing"), None)
    p_resolved = next((e for e in prom if e.seen >= heal and e.state == "inactive"), None)
    return {
        "trial": index,
        "t0": round(t0, 3),
        "control_round_trip_ms": round(1000 * (ack - t0), 2),
        "prometheus_ratio_before": before,
        "railguard": {
            "first_breach_s": _after(pending.at if pending else None, t0),
            "fired_eval_s": _after(fired.at if fired else None, t0),
            "fired_seen_s": _after(fired.seen if fired else None, t0),
            "pending_to_fired_s": (round(fired.at - pending.at, 3) if fired and pending else None),
            "resolved_after_heal_s": _after(rg_resolved.seen if rg_resolved else None, heal),
            "fired_reason": fired.reason if fired else None,
            "transitions": [
                {"after_s": _after(e.at, t0), "transitions": e.transitions, "reason": e.reason}
                for e in rg
            ],
        },
        "prometheus": {
            "active_at_s": _after(p_pending.active_at if p_pending else None, t0),
            "fired_eval_s": _after(p_fired.evaluated if p_fired else None, t0),
            "fired_seen_s": _after(p_fired.seen if p_fired else None, t0),
            "pending_to_fired_s": (
                round(p_fired.evaluated - p_fired.active_at, 3)
                if p_fired and p_fired.evaluated and p_fired.active_at
                else None
            ),
            "resolved_after_heal_s": _after(p_resolved.seen if p_resolved else None, heal),
            "changes": [
                {
                    "state": e.state,
                    "seen_s": _after(e.seen, t0),
                    "evaluated_s": _after(e.evaluated, t0),
                    "active_at_s": _after(e.active_at, t0),
                }
                for e in prom
            ],
        },
        "healed_at": round(heal, 3),
        "resolved": all_resolved,
    }


async def run_trials(args: argparse.Namespace, workdir: Path, children: list[Child]) -> dict:
    """Start everything, run the trials, stop what runs in this process."""
    configure_logging("json", "error")
    (app_port,) = free_ports(1)
    app_url, port = f"http://{HOST}:{app_port}", str(app_port)
    app = start(
        "sample-app",
        [sys.executable, "-m", "monitor.sandbox.sample_app", "--host", HOST, "--port", port],
        workdir / "sample_app.log",
        children,
    )
    prom_child, prom_url = start_prometheus(workdir, app_port, children)
    stage: Stage | None = None
    tasks: list[asyncio.Task[None]] = []
    counts: Counter[str] = Counter()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=20))
    daemon: Daemon | None = None
    try:
        for child, url in ((app, f"{app_url}/health"), (prom_child, f"{prom_url}/-/ready")):
            deadline = time.monotonic() + READY_WITHIN
            while True:
                child.check_alive()
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise BenchError(f"{url} not ready within {READY_WITHIN:g}s")
                await asyncio.sleep(0.1)
        config = workdir / "railguard.toml"
        config.write_text(
            RAILGUARD_CONFIG.format(rule=RULE, interval=INTERVAL_S, app=app_url, for_=FOR_S)
        )
        environ: dict[str, str] = {}
        plan = build_plan(config, load_environment(environ), environ)
        watch_rg = RailguardWatch()
        daemon = Daemon(
            plan,
            clock=SystemClock(),
            metrics=Metrics(CollectorRegistry()),
            sink=watch_rg,
            serve_http=False,
        )
        if not args.no_prime:  # one 500, so the code="500" series exists (see docstring)
            await control(session, app_url, 1.0)
            async with session.get(f"{app_url}/work") as response:
                await response.read()
            await control(session, app_url, 0.0)
        tasks.append(asyncio.create_task(traffic(session, f"{app_url}/work", args.rps, counts)))
        await daemon.startup()
        watch = PrometheusWatch(session, prom_url, args.poll)
        tasks.append(asyncio.create_task(watch.run()))
        stage = Stage(
            session, app_url, prom_url, daemon, watch_rg, watch, children,
            random.Random(args.seed), args,
        )  # fmt: skip
        healed_at = time.time()
        trials = []
        for index in range(1, args.trials + 1):
            trial = await one_trial(stage, index, healed_at)
            healed_at = trial["healed_at"]
            trials.append(trial)
            print(_trial_line(trial), flush=True)
        return {
            "trials": trials,
            "traffic": dict(counts),
            "prometheus_polls": watch.polls,
            "prometheus_poll_errors": dict(watch.errors),
            "scheduler_ticks_skipped": _sample_sum(daemon, "railguard_ticks_skipped_total"),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if daemon is not None and daemon.scheduler is not None:
            await daemon.shutdown()
        await session.close()


def _sample_sum(daemon: Daemon, name: str) -> float:
    registry = daemon.metrics.registry
    return sum(s.value for metric in registry.collect() for s in metric.samples if s.name == name)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _trial_line(trial: dict[str, Any]) -> str:
    rg, prom = trial["railguard"], trial["prometheus"]
    return (
        f"trial {trial['trial']:>2}: railguard {_fmt(rg['fired_eval_s'])} s "
        f"(first breach {_fmt(rg['first_breach_s'])}), Prometheus "
        f"{_fmt(prom['fired_eval_s'])} s (active {_fmt(prom['active_at_s'])})"
    )


def summarize(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians, maxima, the ratio of medians and the goals."""

    def column(who: str, key: str) -> list[float | None]:
        return [t[who][key] for t in trials]

    def stats(values: Sequence[float | None]) -> dict[str, Any]:
        known = [v for v in values if v is not None]
        return {
            "median": round(statistics.median(known), 3) if known else None,
            "min": min(known, default=None),
            "max": max(known, default=None),
            "missing": len(values) - len(known),
        }

    out: dict[str, Any] = {}
    for who in ("railguard", "prometheus"):
        out[who] = {
            key: stats(column(who, key))
            for key in (
                "fired_eval_s",
                "fired_seen_s",
                "pending_to_fired_s",
                "resolved_after_heal_s",
            )
        }
        first = "first_breach_s" if who == "railguard" else "active_at_s"
        out[who][first] = stats(column(who, first))
    ratios = {}
    for key in ("fired_eval_s", "fired_seen_s"):
        rg, prom = out["railguard"][key]["median"], out["prometheus"][key]["median"]
        ratios[key] = round(rg / prom, 3) if rg and prom else None
    out["ratio_of_medians_railguard_over_prometheus"] = ratios
    rg_eval = column("railguard", "fired_eval_s")
    rg_seen = column("railguard", "fired_seen_s")
    out["goals"] = {
        "railguard_within_for_plus_interval_s": GOAL_S,
        "within_every_trial_eval": all(v is not None and v <= GOAL_S for v in rg_eval),
        "within_every_trial_seen": all(v is not None and v <= GOAL_S for v in rg_seen),
        "trials_within_eval": sum(1 for v in rg_eval if v is not None and v <= GOAL_S),
        "trials_within_seen": sum(1 for v in rg_seen if v is not None and v <= GOAL_S),
        "railguard_median_below_prometheus": (
            ratios["fired_eval_s"] is not None and ratios["fired_eval_s"] < 1
        ),
    }
    return out


def print_table(result: dict[str, Any]) -> None:
    """Per-trial delays and the summary."""
    head = (
        "trial",
        "rg 1st breach",
        "rg fired (eval)",
        "rg fired (sink)",
        "prom active",
        "prom fired (eval)",
        "prom fired (poll)",
        f"rg <= {GOAL_S:g}s",
    )
    rows = []
    for t in result["trials"]:
        rg, prom = t["railguard"], t["prometheus"]
        ok = rg["fired_eval_s"] is not None and rg["fired_eval_s"] <= GOAL_S
        rows.append(
            (
                str(t["trial"]),
                _fmt(rg["first_breach_s"]),
                _fmt(rg["fired_eval_s"]),
                _fmt(rg["fired_seen_s"]),
                _fmt(prom["active_at_s"]),
                _fmt(prom["fired_eval_s"]),
                _fmt(prom["fired_seen_s"]),
                "yes" if ok else "NO",
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("\nseconds after the fault started (t0)")
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    s = result["summary"]
    print()
    labels = (("fired (evaluation time)", "fired_eval_s"), ("fired (seen)", "fired_seen_s"))
    for label, key in labels:
        rg, prom = s["railguard"][key], s["prometheus"][key]
        ratio = s["ratio_of_medians_railguard_over_prometheus"][key]
        print(
            f"{label:<24} railguard median {_fmt(rg['median'])} max {_fmt(rg['max'])}; "
            f"Prometheus median {_fmt(prom['median'])} max {_fmt(prom['max'])}; "
            f"ratio of medians {ratio}"
        )
    g = s["goals"]
    n = len(result["trials"])
    print(
        f"railguard within for + one interval ({GOAL_S:g} s): {g['trials_within_eval']}/{n} "
        f"(evaluation time), {g['trials_within_seen']}/{n} (sink); median below "
        f"Prometheus': {'yes' if g['railguard_median_below_prometheus'] else 'NO'}"
    )


def machine_info() -> dict[str, Any]:
    """The machine and the software measured."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "railguard": railguard_version,
        "prometheus": prometheus_version(),
        "git_commit": git.stdout.strip() or None,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran (goals met or not), 1 when it could not run."""
    args = parse_args(argv)
    command = "bench/detection_delay.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    setup = {
        "for_s": FOR_S,
        "interval_s": INTERVAL_S,
        "rate_window": RATE_WINDOW,
        "threshold": THRESHOLD,
        "prometheus_expr": f"{EXPR} > {THRESHOLD:g}",
        "rps": args.rps,
        "error_ratio": args.error_ratio,
        "settle_s": args.settle,
        "poll_s": args.poll,
        "seed": args.seed,
        "primed_500_series": not args.no_prime,
    }
    print(f"detection_delay: {args.trials} trials, seed {args.seed}", flush=True)
    info = machine_info()
    started = time.monotonic()
    children: list[Child] = []
    result: dict[str, Any] | None = None
    with terminate_as_interrupt(), tempfile.TemporaryDirectory(prefix="railguard-bench-") as tmp:
        workdir = Path(tmp)
        try:
            result = asyncio.run(run_trials(args, workdir, children))
        except BenchError as exc:
            print(f"detection_delay: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            print("detection_delay: interrupted", file=sys.stderr)
        finally:
            for child in reversed(children):  # Prometheus first, then the app
                stop(child)
    if result is None:
        return 1
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": ".venv/bin/python " + command.strip(),
        "setup": setup,
        "machine": info,
        "wall_seconds": round(time.monotonic() - started, 1),
        "summary": summarize(result["trials"]),
        **result,
        "shutdown": {c.name: c.stopped for c in children},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nJSON: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
