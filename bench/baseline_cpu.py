"""CPU per evaluation at 1,000 services: baseline rules against fixed rules (issue 13).

What a baseline rule adds to the work the daemon does on every tick of every service, in CPU
(``time.process_time``: every thread of this process, so the store's own thread counts too):

- ``fixed``: each service has the fixed rules ``error-rate`` (5%) and ``latency-p95-high``
  (1 s) of rules/default.toml; no baseline book (as the daemon has none when no service
  watches a baseline).
- ``baseline``: the same plus ``error-rate-regression`` and ``latency-p95-regression``, a
  baseline present (the previous release, known-good, with a recorded summary of a day's
  traffic) and the active release being recorded: the worker looks its reference up for each
  baseline rule, the engine judges the sample against it, the book records every quiet sample
  and, after the tick, settles the samples a poll has confirmed, refreshes the reference and
  flushes once a minute, into a store that keeps nothing (``Summary.to_dict`` still runs).
- ``baseline+store``: the same with a real SQLite store (``monitor.store.open_store`` on a
  temporary file, ``synchronous=FULL``): the once-a-minute ``save_summaries`` of every
  service, its JSON and its transaction on the store's thread.

Every service ticks every ``--interval`` seconds (15 s, the default) on a clock the bench
sets, and each tick brings two samples from one stub source (as one exposition scrape gives
both signals): an error rate and a p95, with the ``detail`` the exposition source writes
(``requests``, ``errors``, ``span_s``, ``url``); 20-100 requests a second per service, 0.2%
errors and a p95 of 50-400 ms, each jittered per tick, the same numbers for every variant.
The Railway poll (every ``--poll-interval`` s) is the real ``ReleaseTracker``'s state, set
between ticks: the active release SUCCESS, live for a day, its predecessor the baseline.
Every rule stays INACTIVE, as in a healthy fleet (the run counts transitions: a few at most).

Two scopes, each timed around whole rounds of ``--services`` services (no timer per call):

- ``evaluation``: one evaluation is ``ServiceWorker._evaluate`` for each
  sample of a tick, then the worker's after-tick hook (``Switchboard.after_tick``, whose
  ``BaselineBook.after_tick`` does the settling, the reference and the flush; no controller);
- ``tick`` (``--scopes evaluation,tick``): ``ServiceWorker.tick()`` whole (adds the source
  call under the semaphore, the metrics, the redactor and the signal history), the figure to
  set against a probe's cost.

Each run builds fresh workers and book, ticks ``--warmup`` untimed rounds (the book loads
the baseline, the first flush), then ``--ticks`` timed rounds, after ``gc.collect()`` and
``gc.freeze()`` as the daemon does after startup, with the daemon's GIL switch interval. An
after-tick hook that raises is counted and the ticks go on, as ``ServiceWorker.tick`` does
(the table's ``errors``). Runs alternate variants (a, b, c, c, b, a,
...) for ``--repeats`` rounds; the table shows the median CPU per evaluation and the ratios
of the medians, all from the one run. ``--profile`` adds one cProfile'd pass of the
``baseline`` evaluation scope (not timed) and prints where its CPU goes.

    .venv/bin/python bench/baseline_cpu.py [--services 1000] [--ticks 60] [--repeats 5]
    .venv/bin/python bench/baseline_cpu.py --scopes evaluation,tick --profile baseline

3.5-4.5 minutes by default on 2 busy vCPUs (8 with both scopes and the profile).

It prints a table and writes bench/results/baseline_cpu.json; it opens no socket (the
exposition URL in the generated config, 127.0.0.1, is never fetched).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.baseline import Summary  # noqa: E402
from monitor.baselines import BaselineBook  # noqa: E402
from monitor.clock import FakeClock  # noqa: E402
from monitor.daemon import SWITCH_INTERVAL  # noqa: E402
from monitor.environment import load_environment  # noqa: E402
from monitor.model import Sample, Signal  # noqa: E402
from monitor.plan import Plan  # noqa: E402
from monitor.planning import build_plan  # noqa: E402
from monitor.railway.client import Deployment  # noqa: E402
from monitor.railway.statuses import SUCCESS  # noqa: E402
from monitor.releases import ReleaseTracker  # noqa: E402
from monitor.scheduler import ServiceWorker  # noqa: E402
from monitor.store import open_store  # noqa: E402
from monitor.switchboard import Switchboard  # noqa: E402
from monitor.telemetry import Metrics, configure_logging  # noqa: E402

FIXED_RULES = ["error-rate", "latency-p95-high"]
BASELINE_RULES = [*FIXED_RULES, "error-rate-regression", "latency-p95-regression"]
VARIANTS = {  # name -> (rules, store: None, "memory" or "sqlite")
    "fixed": (FIXED_RULES, None),
    "baseline": (BASELINE_RULES, "memory"),
    "baseline+store": (BASELINE_RULES, "sqlite"),
}
SCOPES = ("evaluation", "tick")
START = 1_700_000_000.0  # the wall clock of the first tick
URL = "http://127.0.0.1:9/metrics"  # never fetched: the stub source answers
DAY = 86_400.0

CONFIG = """
[railway]
poll_interval = "{poll}s"

[tiers.production]
rules = {rules}
"""

SERVICE = """
[[services]]
name = "{name}"
tier = "production"
service_id = "service-{i}"
environment_id = "production"
interval = "{interval}s"
error_rate = {{ source = "exposition", url = "{url}" }}
latency = {{ source = "exposition", url = "{url}" }}
"""


def service_name(i: int) -> str:
    """The i-th service's name."""
    return f"svc-{i:04d}"


def release(i: int, version: str) -> str:
    """The release key of service i's ``version`` (its commit, as release_key reads it)."""
    return f"commit:{i:04d}{version}"


# -- the fleet's numbers: the same for every variant and run ---------------------------------


@dataclass(frozen=True)
class Traffic:
    """One service's steady behaviour."""

    rps: float
    error_ratio: float
    p95: float  # seconds


def fleet(services: int, error_rate: float, seed: int) -> list[Traffic]:
    """Every service's traffic: 20-100 requests a second, ``error_rate`` x 0.5-1.5 failing,
    a p95 of 50-400 ms."""
    rng = random.Random(seed)
    return [
        Traffic(
            rps=rng.uniform(20, 100),
            error_ratio=error_rate * rng.uniform(0.5, 1.5),
            p95=rng.uniform(0.05, 0.4),
        )
        for _ in range(services)
    ]


def tick_samples(
    traffic: Sequence[Traffic], rounds: int, interval: float, seed: int
) -> list[list[list[Sample]]]:
    """``[round][service]`` -> the tick's two samples, as an exposition scrape makes them."""
    rng = random.Random(seed + 1)
    out = []
    for k in range(rounds):
        at = START + k * interval
        row = []
        for t in traffic:
            requests = max(1, round(t.rps * interval * rng.uniform(0.9, 1.1)))
            mean = requests * t.error_ratio
            errors = min(requests, max(0, round(rng.gauss(mean, max(mean, 1e-9) ** 0.5))))
            rate = Sample(
                Signal.ERROR_RATE,
                at,
                errors / requests,
                detail={"url": URL, "requests": requests, "errors": errors, "span_s": interval},
            )
            p95 = Sample(
                Signal.LATENCY_P95,
                at,
                round(t.p95 * rng.uniform(0.9, 1.1), 4),
                detail={"url": URL, "requests": requests, "span_s": interval},
            )
            row.append([rate, p95])
        out.append(row)
    return out


def recorded(traffic: Sequence[Traffic], interval: float, seed: int) -> list[dict[str, Any]]:
    """The previous release's summaries (a day of serving), as the store keeps them."""
    rng = random.Random(seed + 2)
    out = []
    for t in traffic:
        requests = t.rps * DAY
        errors = Summary(
            Signal.ERROR_RATE, requests=requests, errors=round(requests * t.error_ratio)
        )
        errors.samples, errors.first_at, errors.last_at = (
            int(DAY / interval),
            START - 2 * DAY,
            START - DAY,
        )
        latency = Summary(Signal.LATENCY_P95)
        for j in range(500):  # the sketch of a day of window quantiles (500 draws)
            value = t.p95 * rng.uniform(0.9, 1.1)
            at = START - 2 * DAY + j * DAY / 500
            latency.add(Sample(Signal.LATENCY_P95, at, value, detail={"requests": requests / 500}))
        out.append({s.signal.value: s.to_dict() for s in (errors, latency)})
    return out


# -- the daemon's objects, with a stub source and the tracker's state set --------------------


class StubSource:
    """One exposition source's worth of samples: the prepared ones of each round in turn."""

    signals = frozenset({Signal.ERROR_RATE, Signal.LATENCY_P95})

    def __init__(self) -> None:
        self.next: list[Sample] = []

    async def collect(self, at: float) -> list[Sample]:
        return self.next


class MemoryStore:
    """What BaselineBook asks of the store, keeping nothing: the book's CPU without the I/O."""

    def __init__(self, saved: Mapping[str, dict[str, dict[str, Any]]]) -> None:
        self.saved = saved
        self.writes = 0

    async def summaries(self, service: str) -> dict[str, dict[str, Any]]:
        return self.saved.get(service, {})

    async def save_summaries(
        self, service: str, release: str, summaries: Mapping[str, Any], at: float
    ) -> None:
        self.writes += 1

    async def forget_summaries(self, service: str, keep: Any) -> None:
        return None


@dataclass
class Fleet:
    """One run's objects."""

    workers: list[ServiceWorker]
    sources: list[StubSource]
    clock: FakeClock
    tracker: ReleaseTracker
    book: BaselineBook | None
    metrics: Metrics
    store: Any  # the SQLite store to close, if any
    errors: list[str] = field(default_factory=list)  # after-tick hooks that raised


async def build(
    plan: Plan,
    kind: str | None,
    saved: Mapping[str, dict[str, dict[str, Any]]],
    tmp: Path,
    run: int,
) -> Fleet:
    """Fresh workers (and book) for ``plan``, the baseline releases in place."""
    clock = FakeClock(START)
    metrics = Metrics(CollectorRegistry())
    store: Any = None
    if kind == "sqlite":
        store = await open_store(tmp / f"baseline_cpu-{run}.db")
        # The baselines as earlier runs would have left them, written together (group
        # commits). A write can fail with SQLITE_MISUSE when many run at once (see
        # bench/README.md): this is setup, not measured, so a failed one is written again.
        todo = [service_name(i) for i in range(len(plan.services))]
        for _ in range(5):
            outcomes = await asyncio.gather(
                *(
                    store.save_summaries(name, release(_number(name), "v1"), data, START - DAY)
                    for name in todo
                    for data in [saved[name][release(_number(name), "v1")]]
                ),
                return_exceptions=True,
            )
            todo = [n for n, o in zip(todo, outcomes, strict=True) if isinstance(o, Exception)]
            if not todo:
                break
        else:
            raise RuntimeError(f"could not write the baselines of {len(todo)} services")
        save = store.save_summaries

        async def counted(*args: Any) -> None:
            store.writes += 1
            await save(*args)

        store.writes = 0
        store.save_summaries = counted
    elif kind == "memory":
        store = MemoryStore(saved)
    tracker = ReleaseTracker(store, clock=clock, metrics=metrics, troubled=lambda name: False)
    book = None if kind is None else BaselineBook(store, tracker, clock=clock)
    workers: dict[str, ServiceWorker] = {}
    board = Switchboard(lambda name: workers[name].states)
    board.baselines = book
    semaphore = asyncio.Semaphore(plan.config.daemon.max_concurrent_probes)
    sources = []
    for i, service in enumerate(plan.services):
        source = StubSource()
        worker = ServiceWorker(
            service,
            [("exposition", source)],
            clock=clock,
            metrics=metrics,
            semaphore=semaphore,
            sink=board.on_verdict,
            after_tick=board.after_tick,
            redactor=plan.redactor,
        )
        worker.baselines = book
        workers[service.name] = worker
        sources.append(source)
        state = tracker._state(service.name)  # what a poll would have left
        state.active = Deployment(
            id=f"dep-{i}-v2",
            status=SUCCESS,
            created_at=START - DAY - 300,
            updated_at=START - DAY,
            can_rollback=True,
            service_id=f"service-{i}",
            environment_id="production",
            meta={"commitHash": f"{i:04d}v2"},
            status_updated_at=START - DAY,
            instances=("RUNNING",),
        )
        state.live_since = START - DAY
        state.baseline = (release(i, "v1"), "v1")
    return Fleet(list(workers.values()), sources, clock, tracker, book, metrics, store)


def poll(fleet: Fleet, at: float) -> None:
    """A Railway poll answered at ``at``: every service's tracker state says so."""
    for worker in fleet.workers:
        fleet.tracker._state(worker.plan.name).observed_at = at


async def rounds(
    fleet: Fleet,
    samples: Sequence[Sequence[Sequence[Sample]]],
    first: int,
    last: int,
    scope: str,
    interval: float,
    poll_interval: float,
) -> float:
    """Tick every service in rounds ``first`` .. ``last - 1``; the CPU seconds it took."""
    cpu = 0.0
    polled = -1
    for k in range(first, last):
        now = k * interval
        await fleet.clock.advance(now - fleet.clock.monotonic())
        # The poll is answered a third of the way into its interval (samples before it settle).
        due = int((now - poll_interval / 3) // poll_interval)
        if due >= 0 and due != polled:
            poll(fleet, START + due * poll_interval + poll_interval / 3)
            polled = due
        row = samples[k]
        if scope == "tick":
            for source, batch in zip(fleet.sources, row, strict=True):
                source.next = list(batch)
            started = time.process_time()
            for worker in fleet.workers:
                await worker.tick()
            cpu += time.process_time() - started
        else:
            started = time.process_time()
            for worker, batch in zip(fleet.workers, row, strict=True):
                for sample in batch:
                    await worker._evaluate(sample)
                hook = worker.after_tick
                if hook is not None:
                    try:
                        await hook(worker.plan)
                    except Exception as e:  # as ServiceWorker.tick: counted, ticks go on
                        fleet.errors.append(f"{type(e).__name__}: {e}")
            cpu += time.process_time() - started
    return cpu


def tick_errors(metrics: Metrics) -> int:
    """Errors ServiceWorker.tick counted (its after-tick hook's included)."""
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == "railguard_tick_errors":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def transitions(metrics: Metrics) -> float:
    """Every rule transition counted so far (a healthy fleet makes none)."""
    total = 0.0
    for family in metrics.registry.collect():
        if family.name == "railguard_rule_transitions":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


async def one_run(
    plan: Plan,
    kind: str | None,
    scope: str,
    saved: Mapping[str, dict[str, dict[str, Any]]],
    samples: Sequence[Sequence[Sequence[Sample]]],
    args: argparse.Namespace,
    tmp: Path,
    run: int,
    profiler: cProfile.Profile | None = None,
) -> dict[str, float]:
    """Build, warm up, time ``--ticks`` rounds; the CPU and what the book did."""
    fleet = await build(plan, kind, saved, tmp, run)
    try:
        warm = args.warmup
        await rounds(fleet, samples, 0, warm, scope, args.interval, args.poll_interval)
        flushes = _writes(fleet)
        gc.collect()
        gc.freeze()
        if profiler is not None:
            profiler.enable()
        cpu = await rounds(
            fleet, samples, warm, warm + args.ticks, scope, args.interval, args.poll_interval
        )
        if profiler is not None:
            profiler.disable()
        gc.unfreeze()
        evaluations = len(fleet.workers) * args.ticks * 2
        book = fleet.book
        recorded_samples = 0
        if book is not None:
            for worker in fleet.workers:
                active = book.summaries(worker.plan.name).get(release(_index(worker), "v2"), {})
                recorded_samples += sum(s.samples for s in active.values())
        return {
            "cpu_s": cpu,
            "evaluations": evaluations,
            "us_per_evaluation": 1e6 * cpu / evaluations,
            "us_per_tick": 2e6 * cpu / evaluations,
            "transitions": transitions(fleet.metrics),
            "hook_errors": len(fleet.errors) + tick_errors(fleet.metrics),
            "hook_error_examples": sorted(set(fleet.errors))[:3],
            "flushes": _writes(fleet) - flushes,
            "recorded_samples": recorded_samples,
            "with_reference": sum(
                1
                for w in fleet.workers
                if book is not None
                and book.reference(w.plan.name, Signal.LATENCY_P95) is not None
                and book.reference(w.plan.name, Signal.ERROR_RATE) is not None
            ),
        }
    finally:
        if fleet.store is not None and kind == "sqlite":
            await fleet.store.close()


def _index(worker: ServiceWorker) -> int:
    return _number(worker.plan.name)


def _number(name: str) -> int:
    return int(name.removeprefix("svc-"))


def _writes(fleet: Fleet) -> int:
    """How many ``save_summaries`` calls the book has made (one per flush here)."""
    return 0 if fleet.store is None else int(fleet.store.writes)


# -- the run ---------------------------------------------------------------------------------


def make_plan(rules: list[str], args: argparse.Namespace, tmp: Path) -> Plan:
    """The plan of ``--services`` services with ``rules``, built as the daemon builds it."""
    text = CONFIG.format(poll=args.poll_interval, rules=json.dumps(rules)) + "".join(
        SERVICE.format(name=service_name(i), i=i, interval=args.interval, url=URL)
        for i in range(args.services)
    )
    path = tmp / f"railguard-{len(rules)}.toml"
    path.write_text(text)
    environ = {"RAILWAY_API_TOKEN": "bench-token", "RAILWAY_API_URL": "http://127.0.0.1:9/"}
    return build_plan(path, load_environment(environ), environ)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "count": len(values),
    }


def profile_text(profiler: cProfile.Profile, limit: int) -> str:
    """The top of a profile by own time, and by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Every variant and scope, interleaved, ``--repeats`` times."""
    configure_logging("json", "error")
    # As the daemon does at startup: the store's thread takes the GIL back sooner.
    sys.setswitchinterval(SWITCH_INTERVAL)
    info = machine()
    traffic = fleet(args.services, args.error_rate, args.seed)
    samples = tick_samples(traffic, args.warmup + args.ticks, args.interval, args.seed)
    saved = {
        service_name(i): {release(i, "v1"): data}
        for i, data in enumerate(recorded(traffic, args.interval, args.seed))
    }
    variants = [v for v in VARIANTS if v in args.variants]
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        plans = {tuple(rules): make_plan(rules, args, tmp) for rules, _ in VARIANTS.values()}
        run = 0
        for r in range(args.repeats):
            order = variants if r % 2 == 0 else variants[::-1]
            for scope in args.scopes:
                for variant in order:
                    rules, kind = VARIANTS[variant]
                    run += 1
                    result = await one_run(
                        plans[tuple(rules)], kind, scope, saved, samples, args, tmp, run
                    )
                    runs.setdefault((variant, scope), []).append(result)
                    print(
                        f"repeat {r + 1}/{args.repeats} {scope:<10} {variant:<15} "
                        f"{result['us_per_evaluation']:7.2f} µs/evaluation "
                        f"({result['cpu_s']:.2f} CPU-s)",
                        flush=True,
                    )
        profile = None
        if args.profile:
            profiler = cProfile.Profile()
            rules, kind = VARIANTS[args.profile]
            await one_run(
                plans[tuple(rules)], kind, "evaluation", saved, samples, args, tmp, 0, profiler
            )
            profile = profile_text(profiler, 30)
    info["loadavg_end"] = list(_loadavg())
    info["wall_s"] = time.perf_counter() - started
    results: dict[str, Any] = {}
    for scope in args.scopes:
        per = {}
        for variant in variants:
            rows = runs[(variant, scope)]
            per[variant] = {
                "us_per_evaluation": summary([x["us_per_evaluation"] for x in rows]),
                "us_per_tick": summary([x["us_per_tick"] for x in rows]),
                "transitions": max(x["transitions"] for x in rows),
                "hook_errors": sum(x["hook_errors"] for x in rows),
                "hook_error_examples": sorted({e for x in rows for e in x["hook_error_examples"]}),
                "flushes_per_run": statistics.median(x["flushes"] for x in rows),
                "recorded_samples_per_run": statistics.median(x["recorded_samples"] for x in rows),
                "services_with_both_references": min(x["with_reference"] for x in rows),
                "runs": rows,
            }
        base = per.get("fixed", {}).get("us_per_evaluation", {}).get("median")
        for variant in variants:
            median = per[variant]["us_per_evaluation"]["median"]
            per[variant]["ratio_to_fixed"] = None if not base else median / base
        results[scope] = per
    report(results, args, info)
    if profile is not None:
        print(f"\ncProfile of one {args.profile} evaluation run ({args.ticks} rounds):\n")
        print(profile)
    return {"machine": info, "args": vars(args), "results": results, "profile": profile}


def report(results: Mapping[str, Any], args: argparse.Namespace, info: Mapping[str, Any]) -> None:
    """The table."""
    print()
    print(
        f"CPU per evaluation (one sample through a service's rules and the book), "
        f"{args.services} services x {args.ticks} ticks x 2 samples, every {args.interval:g} s, "
        f"poll {args.poll_interval:g} s, {args.repeats} repeats; "
        f"nproc {info['nproc']}, Python {info['python']}, load {info['loadavg_start'][0]:.2f} "
        f"-> {info['loadavg_end'][0]:.2f}"
    )
    header = (
        f"{'scope':<11} {'variant':<15} {'µs/eval median':>15} {'min..max':>16} "
        f"{'µs/tick':>8} {'x fixed':>8} {'transitions':>11} {'flushes':>8} {'errors':>6}"
    )
    print(header)
    print("-" * len(header))
    for scope, per in results.items():
        for variant, row in per.items():
            s = row["us_per_evaluation"]
            ratio = row["ratio_to_fixed"]
            print(
                f"{scope:<11} {variant:<15} {s['median']:>15.2f} "
                f"{s['min']:>7.2f}..{s['max']:<7.2f} {row['us_per_tick']['median']:>8.2f} "
                f"{'-' if ratio is None else f'{ratio:.2f}':>8} {row['transitions']:>11.0f} "
                f"{row['flushes_per_run']:>8.0f} {row['hook_errors']:>6}"
            )
            for example in row["hook_error_examples"]:
                print(f"    error: {example}")


def machine() -> dict[str, Any]:
    """Where it ran."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": multiprocessing.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "commit": commit,
        "loadavg_start": list(_loadavg()),
    }


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def _names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=60, help="timed rounds per run")
    parser.add_argument("--warmup", type=int, default=4, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=5, help="runs per variant and scope")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between ticks")
    parser.add_argument("--poll-interval", type=float, default=30.0, help="Railway poll, s")
    parser.add_argument(
        "--error-rate",
        type=float,
        default=0.002,
        help="the fleet's error ratio (above 1%% the regression rule judges every sample)",
    )
    parser.add_argument(
        "--variants", type=_names(list(VARIANTS)), default=list(VARIANTS), help="comma-separated"
    )
    parser.add_argument(
        "--scopes",
        type=_names(SCOPES),
        default=["evaluation"],
        help="evaluation (default), tick, or both: evaluation,tick",
    )
    parser.add_argument(
        "--profile",
        choices=["", *VARIANTS],
        default="",
        help="one extra cProfile'd evaluation run of this variant",
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "baseline_cpu.json"
    )
    args = parser.parse_args()
    outcome = asyncio.run(main(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(outcome, indent=2, default=str))
    print(f"\nwrote {args.output}")
