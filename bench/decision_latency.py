"""Decision latency at 1,000 services: a rule firing (or a hold ending) to the rollback mutation.

The issue's goal: *decision latency (firing, or a hold ending, to mutation sent) p99 under
100 ms at 1,000 services*. One real railguard Daemon (in this process, the system clock, a
SQLite store on disk as ``railguard run`` has) guards ``--services`` services of the
production tier on the Railway emulator; every service ticks every second (first ticks
staggered over the second) and reads its error rate from the batched Railway poll. Each
service has an old known-good release (v1, inferred from Railway's history: it served an
hour before v2 replaced it) and the current one (v2). Then, in each round, ``--bad``
services start failing half their requests at once (the *firing* case), and ``--bad`` more
do so while frozen and are unfrozen once held (the *hold ending* case).

Measured per service, with ``time.perf_counter`` (CLOCK_MONOTONIC, shared by the processes):

- start, firing: the start of the ``controller.evaluate()`` call in which the rollback rule is
  first FIRING on fresh evidence; hold ending: the start of the first ``evaluate()`` after the
  service's ``store.unfreeze()`` returned
- end: the emulator's ``deploymentRollback`` resolver starting to run for it
- railguard's own time: start to ``client.rollback()`` being called, less the wall time of
  the precondition re-check on Railway's deployments (the API's latency, as the
  ``railguard_rollback_decision_seconds`` metric leaves it out)

The emulator runs in its own process by default (``--emulator thread``: in this process, on
its own thread and event loop, its CPU competing with the daemon's for the GIL). At 1,000
services it cannot keep a 2 s poll as it is (each poll re-parses and re-validates a 300 KB
document and scans every deployment for every service alias: 10-13 s of CPU), so the bench
caches the parsed document and indexes deployments by service (runtime patches of the
emulator, here only). What remains, ~1 s of graphql-core execution per poll, blocks the
emulator's loop, so a request that arrives meanwhile waits: that is in the end-to-end figure
and not in railguard's own.

    .venv/bin/python bench/decision_latency.py [--services 100,1000] [--bad 50] [--rounds 3]

It prints a table and writes bench/results/decision_latency.json; everything runs on
127.0.0.1 and stops by itself (``--deadline``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import gc
import inspect
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import graphql  # noqa: E402
from aiohttp import web  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.clock import SystemClock  # noqa: E402
from monitor.daemon import Daemon  # noqa: E402
from monitor.environment import load_environment  # noqa: E402
from monitor.plan import ServicePlan  # noqa: E402
from monitor.planning import build_plan  # noqa: E402
from monitor.sandbox import emulator_resolvers, railway_emulator  # noqa: E402
from monitor.sandbox.emulator_nodes import RequestContext, connection, deployment_node  # noqa: E402
from monitor.sandbox.railway_emulator import RailwayEmulator  # noqa: E402
from monitor.store import open_store  # noqa: E402
from monitor.telemetry import Metrics, configure_logging  # noqa: E402

TOKEN = "bench-token"
RPS = 10.0  # every service's steady traffic on the emulator
BAD_RATIO = 0.5  # the share of requests a bad service fails
ROLLOUT = (("INITIALIZING", 0.5), ("DEPLOYING", 1.0))  # a rollback's rollout (no build)

CONFIG = """
[railway]
poll_interval = "{poll}"
# Far above any plan: the bench measures railguard, not the API budget.
requests_per_hour = 1000000
requests_per_second = 1000

[daemon]
shutdown_timeout = "2s"

[tiers.production]
rules = ["error-rate"]
bake = "10m"
grace = "0s"
cooldown = "10m"
rollback_timeout = "60s"
delivery = "off"
notify_verified = false
"""

SERVICE = """
[[services]]
name = "{name}"
tier = "production"
service_id = "{service}"
environment_id = "{env}"
interval = "{interval}"
error_rate = {{ source = "railway", min_requests = 5, step = "{step}" }}
rules = {{ error-rate = {{ for = "{for_}", max_gap = "{max_gap}" }} }}
"""


def service_name(i: int) -> str:
    """The i-th service's name, in railguard and on the emulator."""
    return f"svc-{i:04d}"


# -- the emulator's side: its own process (or thread), driven over a pipe --------------------


class _CachedGraphQL:
    """graphql-core for the emulator module, parsing and validating each document once."""

    def __init__(self) -> None:
        self._parsed: dict[str, graphql.DocumentNode] = {}
        self._checked: dict[int, tuple[graphql.DocumentNode, list[graphql.GraphQLError]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(graphql, name)

    def parse(self, source: str, **kwargs: Any) -> graphql.DocumentNode:
        if kwargs:
            return graphql.parse(source, **kwargs)
        if source not in self._parsed:
            self._parsed[source] = graphql.parse(source)
        return self._parsed[source]

    def validate(
        self, schema: graphql.GraphQLSchema, document: graphql.DocumentNode
    ) -> list[graphql.GraphQLError]:
        key = id(document)
        if key not in self._checked:
            self._checked[key] = (document, graphql.validate(schema, document))
        return list(self._checked[key][1])


def _accelerate(emu: RailwayEmulator) -> Callable[[], None]:
    """Make the emulator keep up with a 1,000-service poll; returns the undo."""
    index: dict[tuple[str, str], list[Any]] = {}
    add = emu.add_deployment

    def add_deployment(*args: Any, **kwargs: Any) -> Any:
        deployment = add(*args, **kwargs)
        index.setdefault((deployment.service_id, deployment.environment_id), []).append(deployment)
        return deployment

    original = emulator_resolvers.QUERIES["deployments"]

    def q_deployments(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
        # The same answer as the emulator's q_deployments, from the service's own list.
        filters = args["input"]
        key = (filters.get("serviceId"), filters.get("environmentId"))
        if ctx.model is not emu or None in key or filters.get("projectId") is not None:
            return original(ctx, args)
        scope = emulator_resolvers._check_filters(ctx, filters)
        status = filters.get("status") or {}
        include, exclude = status.get("in"), status.get("notIn")
        mine = sorted(index.get(key, ()), key=lambda d: (d.created_at, d.seq), reverse=True)
        nodes = [
            deployment_node(ctx, d)
            for d in mine
            if scope.allows(d.project_id, d.environment_id)
            and (include is None or d.status in include)
            and (exclude is None or d.status not in exclude)
        ]
        return connection(nodes, args)

    emu.add_deployment = add_deployment  # type: ignore[method-assign]
    emulator_resolvers.QUERIES["deployments"] = q_deployments
    module_graphql = railway_emulator.graphql
    railway_emulator.graphql = _CachedGraphQL()  # type: ignore[assignment]

    def undo() -> None:
        emulator_resolvers.QUERIES["deployments"] = original
        railway_emulator.graphql = module_graphql

    return undo


def emulator_main(conn: Connection, services: int, threaded: bool) -> None:
    """The Railway emulator with ``services`` services, serving until told to stop."""
    asyncio.run(_emulator(conn, services, threaded))


async def _emulator(conn: Connection, services: int, threaded: bool) -> None:
    cpu = time.thread_time if threaded else time.process_time
    clock = SystemClock()
    emu = RailwayEmulator(clock, tokens=[TOKEN], rollout=ROLLOUT)
    emu.set_faults(rate_limit=10**9)  # Railway's own limit is not what is measured
    undo = _accelerate(emu)
    project = emu.add_project("fleet")
    env = emu.add_environment(project.id, "production").id
    now = clock.time()
    world = []
    for i in range(services):
        sid = emu.add_service(project.id, service_name(i)).id
        good = emu.add_deployment(
            sid, env, meta={"release": "v1", "commitHash": f"{i:04d}v1"}, created_at=now - 7200
        )
        emu.add_deployment(
            sid, env, meta={"release": "v2", "commitHash": f"{i:04d}v2"}, created_at=now - 3600
        )
        emu.set_traffic(sid, env, RPS, at=now - 600)
        world.append((sid, good.id))
    rollback = emulator_resolvers.MUTATIONS["deploymentRollback"]

    def timed_rollback(ctx: RequestContext, args: dict[str, Any]) -> Any:
        conn.send(("mutation", args.get("id"), time.perf_counter()))
        return rollback(ctx, args)

    def activated(deployment: Any) -> None:
        # The restored release serves: its traffic is healthy again (verification sees it).
        if deployment.meta.get("release") == "v1":
            emu.set_traffic(deployment.service_id, deployment.environment_id, RPS)

    emulator_resolvers.MUTATIONS["deploymentRollback"] = timed_rollback
    emu.on_activate.append(activated)
    runner = web.AppRunner(emu.app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/graphql/v2"
    stop = asyncio.Event()
    cpu_start = cpu()

    def obey() -> None:
        while not stop.is_set() and conn.poll():
            try:
                message = conn.recv()
            except (EOFError, OSError):
                stop.set()
                return
            if message[0] == "traffic":
                _, indices, ratio = message
                at = clock.time()
                for i in indices:
                    emu.set_traffic(world[i][0], env, RPS, error_ratio=ratio, at=at)
                conn.send(("done", time.perf_counter()))
            elif message[0] == "stats":
                rollbacks = len(emu.mutation_calls("deploymentRollback"))
                stats = {"cpu_s": cpu() - cpu_start, "requests": len(emu.requests)}
                conn.send(("stats", stats | {"rollbacks": rollbacks}))
            else:
                stop.set()

    loop = asyncio.get_running_loop()
    loop.add_reader(conn.fileno(), obey)
    try:
        conn.send(("ready", url, env, world))
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        await runner.cleanup()  # also ends the emulator's rollouts
        emulator_resolvers.MUTATIONS["deploymentRollback"] = rollback
        undo()
        conn.close()


class EmulatorHost:
    """The emulator in its own process or thread, and what it reports back."""

    def __init__(self, services: int, mode: str) -> None:
        self.conn, child = multiprocessing.Pipe()
        self.mode = mode
        self.worker: multiprocessing.process.BaseProcess | threading.Thread
        if mode == "process":
            context = multiprocessing.get_context("spawn")
            self.worker = context.Process(
                target=emulator_main, args=(child, services, False), daemon=True
            )
        else:
            self.worker = threading.Thread(
                target=emulator_main, args=(child, services, True), daemon=True
            )
        self.worker.start()
        self.mutations: dict[str, list[float]] = {}  # deployment id -> resolver start times
        self._replies: list[tuple[Any, ...]] = []

    def drain(self) -> None:
        """Take every message the emulator sent so far."""
        while self.conn.poll():
            message = self.conn.recv()
            if message[0] == "mutation":
                self.mutations.setdefault(message[1], []).append(message[2])
            else:
                self._replies.append(message)

    async def reply(self, kind: str, within: float) -> tuple[Any, ...]:
        """Wait up to ``within`` seconds for the emulator's next ``kind`` message."""
        deadline = time.monotonic() + within
        while True:
            self.drain()
            for message in self._replies:
                if message[0] == kind:
                    self._replies.remove(message)
                    return message
            if time.monotonic() > deadline or not self.worker.is_alive():
                raise RuntimeError(f"the emulator did not answer {kind!r} within {within:g}s")
            await asyncio.sleep(0.01)

    async def ask(self, *message: Any, reply: str) -> tuple[Any, ...]:
        """Send a command and wait (30 s at most) for its answer."""
        self.conn.send(message)
        return await self.reply(reply, 30.0)

    async def close(self) -> None:
        """Stop the emulator (its process is terminated if it does not stop in 10 s)."""
        if self.worker.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(("stop",))
        await asyncio.to_thread(self.worker.join, 10)
        if isinstance(self.worker, multiprocessing.process.BaseProcess):
            if self.worker.is_alive():
                self.worker.terminate()
            self.worker.join(5)
        self.conn.close()


# -- the daemon's side -----------------------------------------------------------------------


@dataclass
class Probe:
    """One measured service in one round: when each step happened (perf_counter)."""

    name: str
    index: int
    kind: str  # "firing" or "hold"
    round: int
    good: str  # the known-good v1 deployment a rollback restores
    bad_at: float | None = None  # its traffic turned bad
    fired_at: float | None = None  # the engine moved the rule to FIRING (before persisting it)
    firing_evaluations: int = 0  # evaluate() calls that saw the rule firing on fresh evidence
    # evaluate() calls after the FIRING transition in which the decision would not yet judge
    # the rule firing, and by how much its breach fell short of `for` at the first of them
    unjudged: int = 0
    shortfall_s: float | None = None
    unfrozen_at: float | None = None  # store.unfreeze() returned
    start: float | None = None  # the evaluate() where the measurement starts
    busy_at_start: bool = False  # a decision task of the service was running then
    rechecks: list[tuple[float, float]] = field(default_factory=list)
    sent_at: float | None = None  # client.rollback() called
    resolved_at: float | None = None  # the emulator's resolver started
    mutations: int = 0
    store_s: float = 0.0  # awaiting the store (its lock included) from start to sent_at
    store_calls: int = 0


# The probe whose decision is running: set around evaluate(), inherited by the task it spawns.
DECIDING: contextvars.ContextVar[Probe | None] = contextvars.ContextVar("deciding", default=None)


class Watch:
    """The bench's hooks on the running daemon (instance attributes, nothing else changed)."""

    def __init__(self, daemon: Daemon) -> None:
        assert daemon.controller is not None
        assert daemon.executor is not None
        assert daemon.railway is not None
        self.probes: dict[str, Probe] = {}
        self.by_good: dict[str, Probe] = {}
        controller, executor, client = daemon.controller, daemon.executor, daemon.railway
        clock = daemon.clock
        evaluate, deployments, rollback = (
            controller.evaluate,
            executor.deployments,
            client.rollback,
        )

        async def timed_evaluate(service: ServicePlan) -> None:
            probe = self.probes.get(service.name)
            if probe is not None and probe.bad_at is not None and probe.start is None:
                now = time.perf_counter()
                firing = controller.firing(service)
                fresh = any(f.judges(None, clock.time()) for f in firing)
                probe.firing_evaluations += fresh
                if firing and not fresh and probe.fired_at is not None:
                    probe.unjudged += 1
                    if probe.shortfall_s is None:
                        probe.shortfall_s = min(f.for_ - (clock.time() - f.since) for f in firing)
                starts = probe.unfrozen_at is not None if probe.kind == "hold" else fresh
                if starts:
                    probe.start = now
                    probe.busy_at_start = service.name in controller._busy
            measuring = probe is not None and probe.start is not None and probe.sent_at is None
            token = DECIDING.set(probe if measuring else None)
            try:
                await evaluate(service)
            finally:
                DECIDING.reset(token)

        async def timed_deployments(service: ServicePlan) -> Any:
            started = time.perf_counter()
            try:
                return await deployments(service)
            finally:
                probe = self.probes.get(service.name)
                if probe is not None and probe.bad_at is not None and probe.sent_at is None:
                    probe.rechecks.append((started, time.perf_counter()))

        async def timed_rollback(to_deployment_id: str) -> bool:
            probe = self.by_good.get(to_deployment_id)
            if probe is not None and probe.sent_at is None:
                probe.sent_at = time.perf_counter()
            return await rollback(to_deployment_id)

        controller.evaluate = timed_evaluate  # type: ignore[method-assign]
        executor.deployments = timed_deployments  # type: ignore[method-assign]
        client.rollback = timed_rollback  # type: ignore[method-assign]
        for worker in daemon.workers:
            worker.sink = self._timed_sink(worker.sink)
        self.store_calls = 0
        self.store_s = 0.0
        self.store_by_method: dict[str, list[float]] = {}  # name -> [calls, seconds]
        store = daemon.store
        for name in dir(store):
            method = getattr(store, name)
            if not name.startswith("_") and inspect.iscoroutinefunction(method):
                setattr(store, name, self._timed_store(name, method))

    def _timed_store(self, name: str, method: Any) -> Any:
        tally = self.store_by_method.setdefault(name, [0, 0.0])

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                self.store_calls += 1
                self.store_s += spent
                tally[0] += 1
                tally[1] += spent
                probe = DECIDING.get()
                if probe is not None and probe.sent_at is None:
                    probe.store_s += spent
                    probe.store_calls += 1

        return timed

    def _timed_sink(self, sink: Any) -> Any:
        async def timed(service: ServicePlan, verdict: Any) -> None:
            probe = self.probes.get(service.name)
            if probe is not None and probe.fired_at is None and verdict.fired:
                probe.fired_at = time.perf_counter()
            if sink is not None:
                await sink(service, verdict)

        return timed

    def add(self, probe: Probe) -> None:
        """Measure ``probe`` from now on (its previous probe, if any, is done)."""
        self.probes[probe.name] = probe
        self.by_good[probe.good] = probe


def measure(probe: Probe) -> dict[str, Any] | None:
    """One service's intervals (ms); None if its mutation never came."""
    if probe.resolved_at is None or probe.sent_at is None:
        return None
    start, raced = probe.start, False
    recheck = max((r for r in probe.rechecks if r[0] <= probe.sent_at), default=None)
    if probe.kind == "hold" and (
        start is None or start > probe.resolved_at or (recheck is not None and recheck[0] < start)
    ):
        # A decision already running when the freeze was lifted sent it: from the unfreeze.
        start, raced = probe.unfrozen_at, True
    if start is None:
        start = probe.fired_at
    if start is None:
        return None
    api = recheck[1] - recheck[0] if recheck is not None and recheck[0] >= start else 0.0
    out = {
        "service": probe.name,
        "round": probe.round,
        "total_ms": 1000 * (probe.resolved_at - start),
        "own_ms": 1000 * (probe.sent_at - start - api),
        "recheck_ms": 1000 * api,
        "transit_ms": 1000 * (probe.resolved_at - probe.sent_at),
        "busy_at_start": probe.busy_at_start,
        "from_unfreeze": raced,
        "mutations": probe.mutations,
        "store_ms": 1000 * probe.store_s,
        "store_calls": probe.store_calls,
        "unjudged": probe.unjudged,
        "shortfall_s": probe.shortfall_s,
    }
    if probe.kind == "firing" and probe.fired_at is not None and probe.start is not None:
        out["persist_ms"] = 1000 * (probe.start - probe.fired_at)
        out["from_fired_ms"] = 1000 * (probe.resolved_at - probe.fired_at)
    if probe.kind == "hold" and probe.unfrozen_at is not None:
        out["since_unfreeze_ms"] = 1000 * (probe.resolved_at - probe.unfrozen_at)
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """count, median, p90, p99, max."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def metric(family: Any, name: str, **labels: str) -> float:
    """The sum of one metric's samples named ``name`` matching ``labels``."""
    total = 0.0
    for collected in family.collect():
        for sample in collected.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def loop_figures(daemon: Daemon) -> dict[str, float]:
    """Counters read before and after the rounds (each metric's own collect: cheap)."""
    m = daemon.metrics
    figures: dict[str, float] = {
        "ticks_skipped": metric(m.ticks_skipped, "railguard_ticks_skipped_total"),
        "tick_errors": metric(m.tick_errors, "railguard_tick_errors_total"),
        "lag_count": metric(m.scheduler_lag, "railguard_scheduler_lag_seconds_count"),
        "lag_le_100ms": metric(m.scheduler_lag, "railguard_scheduler_lag_seconds_bucket", le="0.1"),
        "decision_sum": metric(m.rollback_decision, "railguard_rollback_decision_seconds_sum"),
        "decision_count": metric(m.rollback_decision, "railguard_rollback_decision_seconds_count"),
        "poll_sum": metric(
            m.railway_request_duration,
            "railguard_railway_request_duration_seconds_sum",
            operation="RailguardTick",
        ),
        "poll_count": metric(
            m.railway_request_duration,
            "railguard_railway_request_duration_seconds_count",
            operation="RailguardTick",
        ),
        "held_frozen": metric(m.rollback_held, "railguard_rollback_held_total", guard="frozen"),
        "unknown_samples": metric(m.source_unknown, "railguard_source_unknown_total"),
        "budget_waits": metric(m.railway_budget_waits, "railguard_railway_budget_waits_total"),
        **{
            f"transitions_{t}": metric(
                m.rule_transitions, "railguard_rule_transitions_total", transition=t
            )
            for t in ("pending", "firing", "resolved", "reset", "blind", "sight_restored")
        },
        "polls": float(daemon.poller.polls if daemon.poller is not None else 0),
        "cpu_s": time.process_time(),
        "wall_s": time.perf_counter(),
    }
    return figures


async def beat(stalls: list[float], every: float = 0.01) -> None:
    """How late the event loop wakes a 10 ms sleep (a stall holds every decision up)."""
    while True:
        due = time.perf_counter() + every
        await asyncio.sleep(every)
        stalls.append(max(0.0, time.perf_counter() - due))


def write_config(path: Path, env: str, world: Sequence[Any], args: argparse.Namespace) -> None:
    """The daemon's config: the production tier's error-rate rule on every service."""
    parts = [CONFIG.format(poll=f"{args.poll_interval:g}s")]
    max_gap = args.max_gap or 5 * args.poll_interval
    for i, (service_id, _good) in enumerate(world):
        parts.append(
            SERVICE.format(
                name=service_name(i),
                service=service_id,
                env=env,
                interval=f"{args.interval:g}s",
                step=f"{args.step:g}s",
                for_=f"{args.rule_for:g}s",
                max_gap=f"{max_gap:g}s",
            )
        )
    path.write_text("".join(parts))


def choose(services: int, bad: int, rounds: int) -> list[tuple[int, str, int]]:
    """(index, kind, round) for every measured service, each round spread over the fleet."""
    slots = 2 * bad * rounds
    out = []
    for s in range(slots):
        index = int(s * services / slots)
        out.append((index, "firing" if (s // rounds) % 2 == 0 else "hold", s % rounds))
    return out


async def wait_until(condition: Callable[[], bool], host: EmulatorHost, within: float) -> bool:
    """Poll ``condition`` (draining the emulator's reports) until true, or ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        host.drain()
        if condition():
            return True
        await asyncio.sleep(0.05)
    host.drain()
    return condition()


def settle(watch: Watch, host: EmulatorHost) -> None:
    """Copy the emulator's resolver times onto the probes."""
    for good, times in host.mutations.items():
        probe = watch.by_good.get(good)
        if probe is not None and probe.bad_at is not None:
            probe.resolved_at = times[0]
            probe.mutations = len(times)


async def one_fleet(services: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start the emulator and the daemon for ``services`` services, run the rounds, stop."""
    rounds = max(1, min(args.rounds, services // (2 * args.bad)))
    bad = min(args.bad, services // 2)
    started = time.perf_counter()
    host = EmulatorHost(services, args.emulator)
    daemon: Daemon | None = None
    store = None
    try:
        _, url, env, world = await host.reply("ready", 120)
        config = tmp / f"railguard-{services}.toml"
        write_config(config, env, world, args)
        environ = {"RAILWAY_API_TOKEN": TOKEN, "RAILWAY_API_URL": url}
        plan = build_plan(config, load_environment(environ), environ)
        if args.store == "file":
            store = await open_store(tmp / f"railguard-{services}.db")
        daemon = Daemon(
            plan,
            clock=SystemClock(),
            metrics=Metrics(CollectorRegistry()),
            serve_http=False,
            freeze_gc=True,
            store=store,
        )
        await daemon.startup()
        watch = Watch(daemon)
        # Warm up: every service's v1 known-good (inferred from Railway's history), then a
        # steady stretch.
        deadline = time.monotonic() + 120
        while metric(daemon.metrics.known_good, "railguard_known_good_releases") < services:
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet's v1 releases did not become known-good in 120 s")
            await asyncio.sleep(1.0)
        ready_s = time.perf_counter() - started
        print(f"  {services} services ready after {ready_s:.1f}s; warming up", flush=True)
        await asyncio.sleep(args.warmup)
        before = loop_figures(daemon)
        cpu_emulator = (await host.ask("stats", reply="stats"))[1]["cpu_s"]
        store_before = (watch.store_calls, watch.store_s)
        methods_before = {k: list(v) for k, v in watch.store_by_method.items()}
        stalls: list[float] = []
        heartbeat = asyncio.create_task(beat(stalls))
        probes: list[Probe] = []
        plan_of = choose(services, bad, rounds)
        for r in range(rounds):
            batch = [
                Probe(service_name(i), i, k, r, world[i][1]) for i, k, rr in plan_of if rr == r
            ]
            fire = [p for p in batch if p.kind == "firing"]
            hold = [p for p in batch if p.kind == "hold"]
            for probe in fire + hold:
                watch.add(probe)
            assert daemon.store is not None
            for probe in hold:
                await daemon.store.freeze(probe.name, "bench: hold", "bench", time.time())
            _, bad_at = await host.ask(
                "traffic", [p.index for p in fire + hold], BAD_RATIO, reply="done"
            )
            for probe in fire + hold:
                probe.bad_at = bad_at
            await wait_until(
                lambda fire=fire, hold=hold: (
                    all(p.good in host.mutations for p in fire)
                    and all(p.firing_evaluations >= 3 for p in hold)
                ),
                host,
                args.phase_timeout,
            )
            settle(watch, host)

            async def unfreeze(probe: Probe) -> None:
                assert daemon is not None
                assert daemon.store is not None
                await daemon.store.unfreeze(probe.name)
                probe.unfrozen_at = time.perf_counter()

            await asyncio.gather(*(unfreeze(p) for p in hold))
            await wait_until(
                lambda hold=hold: all(p.good in host.mutations for p in hold),
                host,
                args.phase_timeout,
            )
            await asyncio.sleep(1.0)  # a second mutation for the same service would show
            settle(watch, host)
            probes += fire + hold
            done = sum(p.resolved_at is not None for p in fire + hold)
            print(
                f"  round {r + 1}/{rounds}: {done}/{len(fire) + len(hold)} rollbacks sent",
                flush=True,
            )
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        after = loop_figures(daemon)
        stats = (await host.ask("stats", reply="stats"))[1]
        store_calls = watch.store_calls - store_before[0]
        store_busy = watch.store_s - store_before[1]
        by_method = {
            name: {
                "calls": calls - methods_before[name][0],
                "seconds": seconds - methods_before[name][1],
            }
            for name, (calls, seconds) in watch.store_by_method.items()
            if calls > methods_before[name][0]
        }
        cpu_emulator = stats["cpu_s"] - cpu_emulator
        measured = {p.name + f"#{p.round}": (p, measure(p)) for p in probes}
        ours = {p.good for p in probes}
        unexpected = sum(len(t) for g, t in host.mutations.items() if g not in ours)
        wall = after["wall_s"] - before["wall_s"]
        daemon_cpu = (
            after["cpu_s"] - before["cpu_s"] - (cpu_emulator if args.emulator == "thread" else 0)
        )
        lag_count = after["lag_count"] - before["lag_count"]
        result: dict[str, Any] = {
            "services": services,
            "bad_per_round": bad,
            "rounds": rounds,
            "cases": {},
            "context": {
                "window_s": wall,
                "daemon_cpu_pct": 100 * daemon_cpu / wall,
                "emulator_cpu_pct": 100 * cpu_emulator / wall,
                "polls": after["polls"] - before["polls"],
                "poll_request_mean_ms": 1000
                * (after["poll_sum"] - before["poll_sum"])
                / max(1.0, after["poll_count"] - before["poll_count"]),
                "ticks_skipped": after["ticks_skipped"] - before["ticks_skipped"],
                "tick_errors": after["tick_errors"] - before["tick_errors"],
                "ticks": lag_count,
                "ticks_late_over_100ms": lag_count
                - (after["lag_le_100ms"] - before["lag_le_100ms"]),
                "decision_metric_mean_ms": 1000
                * (after["decision_sum"] - before["decision_sum"])
                / max(1.0, after["decision_count"] - before["decision_count"]),
                "decision_metric_count": after["decision_count"] - before["decision_count"],
                "held_frozen": after["held_frozen"] - before["held_frozen"],
                "unexpected_mutations": unexpected,
                "store_calls_per_s": store_calls / wall,
                "store_call_mean_ms": 1000 * store_busy / max(1, store_calls),
                "loop_stall_ms": summary([1000 * x for x in stalls]),
                "store_by_method": dict(
                    sorted(by_method.items(), key=lambda kv: -kv[1]["seconds"])
                ),
                "unknown_samples": after["unknown_samples"] - before["unknown_samples"],
                "budget_waits": after["budget_waits"] - before["budget_waits"],
                "transitions": {
                    key.removeprefix("transitions_"): after[key] - before[key]
                    for key in after
                    if key.startswith("transitions_")
                },
                "emulator_requests": stats["requests"],
            },
        }
        for kind in ("firing", "hold"):
            rows = [m for p, m in measured.values() if p.kind == kind and m is not None]
            mine = [p for p, _ in measured.values() if p.kind == kind]
            case: dict[str, Any] = {
                "services": len(mine),
                "missing": len(mine) - len(rows),
                "duplicates": sum(1 for r in rows if r["mutations"] > 1),
                "sent_while_frozen": sum(
                    1
                    for p in mine
                    if p.kind == "hold"
                    and p.resolved_at is not None
                    and (p.unfrozen_at is None or p.resolved_at < p.unfrozen_at)
                ),
                "busy_at_start": sum(1 for r in rows if r["busy_at_start"]),
                "from_unfreeze": sum(1 for r in rows if r["from_unfreeze"]),
                "fired_but_not_judged": sum(1 for r in rows if r["unjudged"]),
                "shortfall_max_s": max(
                    (r["shortfall_s"] for r in rows if r["shortfall_s"] is not None), default=None
                ),
            }
            for key in (
                "total_ms",
                "own_ms",
                "recheck_ms",
                "transit_ms",
                "store_ms",
                "store_calls",
                "persist_ms",
                "from_fired_ms",
            ):
                values = [r[key] for r in rows if key in r]
                if values:
                    case[key] = summary(values)
            if kind == "hold":
                case["since_unfreeze_ms"] = summary([r["since_unfreeze_ms"] for r in rows])
            case["samples"] = rows
            result["cases"][kind] = case
        return result
    finally:
        if daemon is not None:
            await daemon.shutdown()
        if store is not None:
            await store.close()
        await host.close()
        gc.unfreeze()


def machine() -> dict[str, Any]:
    """Where it ran."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "monitor"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
    except OSError:
        commit, changed = "", []
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
        "monitor_changed": [line[3:] for line in changed if line.strip()],
        "loadavg_start": list(_loadavg()),
    }


def _loadavg() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def fmt(s: dict[str, float] | None) -> str:
    """median / p90 / p99 / max."""
    if not s or not s.get("count"):
        return "-"
    return " / ".join(f"{s[k]:.1f}" for k in ("median", "p90", "p99", "max"))


COLUMNS = (
    ("total_ms", "to resolver (end-to-end)"),
    ("own_ms", "railguard's own"),
    ("recheck_ms", "re-check round trip"),
    ("transit_ms", "mutation transit"),
    ("store_ms", "awaiting the store"),
)


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The table, the context of each fleet, and the ratios."""
    print()
    print(
        f"decision latency, ms: median / p90 / p99 / max   (emulator: {args.emulator}, "
        f"store: {args.store}, interval {args.interval:g}s, poll {args.poll_interval:g}s)"
    )
    names = {"firing": "firing", "hold": "hold ending"}
    header = f"{'services':>8}  {'case':<12} {'n':>4}  " + "".join(
        f"{title:<30}" for _, title in COLUMNS
    )
    print(header)
    print("-" * len(header))
    for result in results:
        for kind, case in result["cases"].items():
            count = case.get("total_ms", {}).get("count", 0)
            print(
                f"{result['services']:>8}  {names[kind]:<12} {count:>4}  "
                + "".join(f"{fmt(case.get(key)):<30}" for key, _ in COLUMNS)
            )
    print()
    for result in results:
        c = result["context"]
        print(
            f"{result['services']} services, {result['rounds']} round(s) of "
            f"{result['bad_per_round']} + {result['bad_per_round']}, {c['window_s']:.0f} s: "
            f"daemon CPU {c['daemon_cpu_pct']:.0f}% of a core, "
            f"emulator {c['emulator_cpu_pct']:.0f}%; "
            f"{c['polls']:.0f} polls (request mean {c['poll_request_mean_ms']:.0f} ms); "
            f"{c['ticks']:.0f} ticks, {c['ticks_late_over_100ms']:.0f} late by >100 ms, "
            f"{c['ticks_skipped']:.0f} skipped; store {c['store_calls_per_s']:.0f} calls/s, "
            f"mean {c['store_call_mean_ms']:.2f} ms; loop stalls {fmt(c['loop_stall_ms'])} ms; "
            f"railguard_rollback_decision_seconds mean {c['decision_metric_mean_ms']:.1f} ms "
            f"(n={c['decision_metric_count']:.0f}); unexpected mutations "
            f"{c['unexpected_mutations']}"
        )
        top = list(c["store_by_method"].items())[:5]
        print(
            "    store time by call: "
            + ", ".join(
                f"{name} {v['calls']} x {1000 * v['seconds'] / max(1, v['calls']):.1f} ms"
                for name, v in top
            )
        )
        moves = ", ".join(f"{k} {v:.0f}" for k, v in c["transitions"].items())
        print(
            f"    rule transitions: {moves}; UNKNOWN samples {c['unknown_samples']:.0f}; "
            f"Railway budget waits {c['budget_waits']:.0f}"
        )
        for kind, case in result["cases"].items():
            line = (
                f"    {names[kind]}: missing {case['missing']}, duplicates {case['duplicates']}, "
                f"busy at start {case['busy_at_start']}, store calls per decision "
                f"{fmt(case.get('store_calls'))}"
            )
            if kind == "hold":
                line += (
                    f", sent while frozen {case['sent_while_frozen']}, timed from the unfreeze "
                    f"{case['from_unfreeze']}, unfreeze -> resolver "
                    f"{fmt(case.get('since_unfreeze_ms'))}"
                )
            else:
                line += (
                    f", FIRING -> its evaluate() {fmt(case.get('persist_ms'))}, "
                    f"FIRING -> resolver {fmt(case.get('from_fired_ms'))}, FIRING but not yet "
                    f"judged firing by the next evaluate() {case['fired_but_not_judged']} "
                    f"(short of `for` by up to {case['shortfall_max_s'] or 0:.3f} s)"
                )
            print(line)
    if len(results) >= 2:
        small, large = results[0], results[-1]
        for kind in ("firing", "hold"):
            parts = []
            for key, title in COLUMNS[:2]:
                a = small["cases"][kind].get(key, {})
                b = large["cases"][kind].get(key, {})
                if a.get("count") and b.get("count"):
                    parts.append(
                        f"{title} median {b['median'] / a['median']:.2f}x, "
                        f"p99 {b['p99'] / a['p99']:.2f}x"
                    )
            print(
                f"ratio {large['services']}/{small['services']} services, {names[kind]}: "
                + "; ".join(parts)
            )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Every fleet size in turn, within the deadline."""
    configure_logging("json", "error")
    info = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        async with asyncio.timeout(args.deadline):
            for services in args.services:
                print(f"{services} services ({args.emulator} emulator)", flush=True)
                results.append(await one_fleet(services, args, Path(tmp)))
    info["loadavg_end"] = list(_loadavg())
    report(results, args)
    return {"machine": info, "args": vars(args), "results": results}


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--services", type=_sizes, default=[100, 1000], help="fleet sizes, e.g. 100,1000"
    )
    parser.add_argument(
        "--bad", type=int, default=50, help="services going bad at once (each case)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per fleet (fewer if it is small)"
    )
    parser.add_argument("--emulator", choices=("process", "thread"), default="process")
    parser.add_argument("--store", choices=("file", "memory"), default="file")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="Railway poll, seconds")
    parser.add_argument("--step", type=float, default=10.0, help="error rate's step, seconds")
    parser.add_argument("--rule-for", type=float, default=4.0, help="the rule's for, seconds")
    parser.add_argument("--max-gap", type=float, default=0.0, help="seconds (0: 5 x poll)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of steady state first")
    parser.add_argument("--phase-timeout", type=float, default=90.0, help="seconds per wait")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds for everything")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "decision_latency.json"
    )
    args = parser.parse_args()
    outcome = asyncio.run(main(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(outcome, indent=2, default=str))
    print(f"\nwrote {args.output}")
