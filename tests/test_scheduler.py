"""The scheduler: drift-free cadence, stagger, skipped ticks, contained errors, bounded stop."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client import CollectorRegistry

from monitor.clock import FakeClock
from monitor.engine import Transition, Verdict
from monitor.model import Phase, Sample, Signal
from monitor.plan import ServicePlan
from monitor.rules import RuleSpec
from monitor.scheduler import Scheduler, ServiceWorker
from monitor.settings import ServiceConfig, TierPolicy
from monitor.telemetry import Metrics


class ScriptedHealth:
    """A source that answers from a script, optionally taking (fake) time to do so."""

    signals = frozenset({Signal.HEALTH})

    def __init__(self, clock: FakeClock, values: list[float | None] | None = None) -> None:
        self.clock = clock
        self.values = values or []
        self.calls: list[float] = []
        self.takes = 0.0
        self.hang: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def collect(self, at: float) -> list[Sample]:
        self.calls.append(self.clock.monotonic())
        if self.hang is not None:
            await self.hang.wait()
        if self.takes:
            await self.clock.sleep(self.takes)
        if self.fail is not None:
            raise self.fail
        value = self.values.pop(0) if self.values else 1.0
        return [Sample(Signal.HEALTH, at, value, "" if value else "scripted failure")]


def service_plan(name: str = "web", interval: float = 10.0, for_: str = "30s") -> ServicePlan:
    spec = RuleSpec.model_validate(
        {"name": "health-failing", "signal": "health", "op": "<", "threshold": 1, "for": for_},
        context={"environ": {}},
    )
    config = ServiceConfig(name=name, tier="production", interval=interval)
    return ServicePlan(config=config, policy=TierPolicy(), rules=(spec.resolve(interval),))


def make_worker(
    clock: FakeClock, metrics: Metrics, source: ScriptedHealth, plan: ServicePlan | None = None
) -> tuple[ServiceWorker, list[Verdict]]:
    verdicts: list[Verdict] = []

    async def sink(_: ServicePlan, verdict: Verdict) -> None:
        verdicts.append(verdict)

    worker = ServiceWorker(
        plan or service_plan(),
        [("health", source)],
        clock=clock,
        metrics=metrics,
        semaphore=asyncio.Semaphore(10),
        sink=sink,
    )
    return worker, verdicts


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_ticks_follow_the_schedule_without_drift(clock: FakeClock, metrics: Metrics) -> None:
    source = ScriptedHealth(clock)
    source.takes = 3.0  # work takes time; the cadence must not slip by it
    worker, _ = make_worker(clock, metrics, source)
    scheduler = Scheduler([worker], clock=clock, metrics=metrics)
    scheduler.start()
    await clock.advance(42)
    assert source.calls == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert await scheduler.stop(grace=0) == 1  # the tick at 40 works until 43
    assert value(metrics, "railguard_scheduler_lag_seconds_count") == 5


async def test_first_ticks_are_staggered(clock: FakeClock, metrics: Metrics) -> None:
    sources = [ScriptedHealth(clock) for _ in range(4)]
    workers = [
        make_worker(clock, metrics, s, service_plan(f"s{i}"))[0] for i, s in enumerate(sources)
    ]
    scheduler = Scheduler(workers, clock=clock, metrics=metrics)
    scheduler.start()
    await clock.advance(9)
    assert [s.calls for s in sources] == [[0.0], [2.5], [5.0], [7.5]]
    await scheduler.stop(grace=1)


async def test_overrun_skips_missed_slots(clock: FakeClock, metrics: Metrics) -> None:
    source = ScriptedHealth(clock)
    source.takes = 25.0
    worker, _ = make_worker(clock, metrics, source)
    scheduler = Scheduler([worker], clock=clock, metrics=metrics, stagger=False)
    scheduler.start()
    await clock.advance(61)
    # 0 runs until 25: slot 10 is skipped, slot 20 runs late at 25 until 50; then 30 and 40
    # are skipped and slot 50 runs on time.
    assert source.calls == [0.0, 25.0, 50.0]
    assert value(metrics, "railguard_ticks_skipped_total", service="web", tier="production") == 3
    await scheduler.stop(grace=0)


async def test_rule_fires_and_resolves_through_the_worker(
    clock: FakeClock, metrics: Metrics
) -> None:
    source = ScriptedHealth(clock, [1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    worker, verdicts = make_worker(clock, metrics, source)
    scheduler = Scheduler([worker], clock=clock, metrics=metrics)
    scheduler.start()
    await clock.advance(55)
    assert [(v.at - clock.time() + 55, v.transitions) for v in verdicts] == [
        (10.0, (Transition.PENDING,)),
        (40.0, (Transition.FIRING,)),
        (50.0, (Transition.RESOLVED,)),
    ]
    assert verdicts[1].evidence
    assert all(s.value == 0.0 for s in verdicts[1].evidence)
    labels = {"service": "web", "tier": "production", "rule": "health-failing"}
    assert value(metrics, "railguard_rule_state", **labels) == 0
    assert value(metrics, "railguard_rule_transitions_total", transition="firing", **labels) == 1
    health = {"service": "web", "tier": "production", "signal": "health"}
    assert value(metrics, "railguard_probes_total", outcome="failing", **health) == 4
    assert value(metrics, "railguard_signal_value", **health) == 1.0
    assert worker.firing == []
    snapshot = worker.snapshot()
    assert snapshot["ticks"] == 6
    await scheduler.stop(grace=1)


async def test_source_errors_are_contained_and_counted(clock: FakeClock, metrics: Metrics) -> None:
    source = ScriptedHealth(clock)
    source.fail = RuntimeError("boom")
    worker, verdicts = make_worker(clock, metrics, source)
    scheduler = Scheduler([worker], clock=clock, metrics=metrics)
    scheduler.start()
    await clock.advance(35)
    assert len(source.calls) == 4  # kept ticking
    labels = {"service": "web", "tier": "production"}
    assert value(metrics, "railguard_tick_errors_total", error="RuntimeError", **labels) == 4
    assert value(metrics, "railguard_source_unknown_total", source="health", **labels) == 4
    nan = value(metrics, "railguard_signal_value", signal="health", **labels)
    assert nan is not None
    assert math.isnan(nan)
    # No known sample for longer than max_gap (20s): blind, never firing.
    assert [v.transitions for v in verdicts] == [(Transition.BLIND,)]
    assert worker.states["health-failing"].phase is Phase.INACTIVE
    assert "boom" in verdicts[0].reason
    await scheduler.stop(grace=1)


async def test_tick_errors_outside_sources_are_contained(
    clock: FakeClock, metrics: Metrics
) -> None:
    source = ScriptedHealth(clock)
    worker, _ = make_worker(clock, metrics, source)

    async def broken_sink(_: ServicePlan, __: Verdict) -> None:
        raise ValueError("sink broke")

    worker.sink = broken_sink
    source.values = [0.0, 0.0]
    scheduler = Scheduler([worker], clock=clock, metrics=metrics)
    scheduler.start()
    await clock.advance(25)
    assert len(source.calls) == 3
    errors = value(
        metrics, "railguard_tick_errors_total", service="web", tier="production", error="ValueError"
    )
    assert errors == 2  # the pending and the reset verdicts each failed in the sink
    await scheduler.stop(grace=1)


async def test_stop_is_bounded_and_cancels_hung_ticks(clock: FakeClock, metrics: Metrics) -> None:
    hung, idle = ScriptedHealth(clock), ScriptedHealth(clock)
    hung.hang = asyncio.Event()
    workers = [
        make_worker(clock, metrics, hung, service_plan("hung"))[0],
        make_worker(clock, metrics, idle, service_plan("idle"))[0],
    ]
    scheduler = Scheduler(workers, clock=clock, metrics=metrics, stagger=False)
    scheduler.start()
    await clock.advance(1)
    stopping = asyncio.ensure_future(scheduler.stop(grace=5))
    await clock.advance(4.9)
    assert not stopping.done()
    await clock.advance(0.2)
    assert await stopping == 1
    assert not scheduler.running


async def test_stalled_services_are_reported(clock: FakeClock, metrics: Metrics) -> None:
    source = ScriptedHealth(clock)
    source.hang = asyncio.Event()
    worker, _ = make_worker(clock, metrics, source)
    scheduler = Scheduler([worker], clock=clock, metrics=metrics)
    assert scheduler.stalled(clock.monotonic()) == []
    scheduler.start()
    await clock.advance(29)
    assert scheduler.stalled(clock.monotonic()) == []
    await clock.advance(2)  # last tick started 31s ago > 2 x 10s + 10s grace
    assert scheduler.stalled(clock.monotonic()) == ["web"]
    source.hang.set()
    await scheduler.stop(grace=1)


async def test_workers_added_tick_at_once_and_removed_ones_stop(
    clock: FakeClock, metrics: Metrics
) -> None:
    first, later = ScriptedHealth(clock), ScriptedHealth(clock)
    later.hang = asyncio.Event()  # removed mid-tick: the tick is cancelled
    scheduler = Scheduler(
        [make_worker(clock, metrics, first)[0]], clock=clock, metrics=metrics, stagger=False
    )
    added = make_worker(clock, metrics, later, service_plan("pr"))[0]
    scheduler.start()
    await clock.advance(5)
    scheduler.add(added)
    await clock.advance(0)
    assert later.calls == [5.0]
    assert [w.plan.name for w in scheduler.workers] == ["web", "pr"]
    assert await scheduler.remove("pr") is added
    assert await scheduler.remove("pr") is None
    assert [w.plan.name for w in scheduler.workers] == ["web"]
    assert scheduler.stalled(clock.monotonic() + 60) == ["web"]  # "pr" is not missed
    later.hang.set()
    await clock.advance(20)
    assert later.calls == [5.0]
    assert first.calls == [0.0, 10.0, 20.0]
    assert await scheduler.stop(grace=1) == 0


async def test_a_worker_added_before_start_starts_with_the_others(
    clock: FakeClock, metrics: Metrics
) -> None:
    source = ScriptedHealth(clock)
    scheduler = Scheduler([], clock=clock, metrics=metrics, stagger=False)
    scheduler.add(make_worker(clock, metrics, source)[0])
    scheduler.start()
    await clock.advance(0)
    assert source.calls == [0.0]
    await scheduler.stop(grace=1)
