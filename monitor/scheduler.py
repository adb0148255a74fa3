"""The per-service tick and the drift-free scheduler that runs it.

Each service has a :class:`ServiceWorker`: one tick samples its sources, feeds every rule
through the engine and reports transitions. The :class:`Scheduler` runs one task per
service on a drift-free cadence (the schedule advances by the interval from where it was,
not from when the work ended), staggers first ticks across the interval, and contains every
error to the tick that raised it.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from monitor.clock import Clock
from monitor.engine import RuleState, Transition, Verdict, evaluate
from monitor.history import SignalHistory, capacity
from monitor.model import Phase, Rule, Sample, Signal
from monitor.plan import ServicePlan
from monitor.redact import Redactor
from monitor.sources.base import Source
from monitor.telemetry import Metrics

if TYPE_CHECKING:
    from monitor.baselines import BaselineBook

log = structlog.get_logger("railguard.scheduler")

VerdictSink = Callable[[ServicePlan, Verdict], Awaitable[None]]
TickHook = Callable[[ServicePlan], Awaitable[None]]

_LOUD = {Transition.FIRING, Transition.BLIND}


def _outcome(sample: Sample) -> str:
    if sample.value is None:
        return "unknown"
    if sample.signal is Signal.HEALTH:
        return "healthy" if sample.value >= 1 else "failing"
    return "ok"


class ServiceWorker:
    """Ticks one service: samples its sources, evaluates its rules, reports transitions."""

    def __init__(
        self,
        plan: ServicePlan,
        sources: Sequence[tuple[str, Source]],
        *,
        clock: Clock,
        metrics: Metrics,
        semaphore: asyncio.Semaphore,
        sink: VerdictSink | None = None,
        after_tick: TickHook | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.plan = plan
        # Samples leave the worker (logs, /status, evidence) only as this shows them.
        self.redactor = redactor or Redactor()
        self.after_tick = after_tick
        self.sources = tuple(sources)
        self.clock = clock
        self.metrics = metrics
        self.semaphore = semaphore
        self.sink = sink
        self.states: dict[str, RuleState] = {rule.name: RuleState() for rule in plan.rules}
        self.reasons: dict[str, str] = {}  # each rule's last verdict, in words
        self.latest: dict[Signal, Sample] = {}
        # Each release's record and each baseline rule's baseline (services on Railway).
        self.baselines: BaselineBook | None = None
        self.last_started: float | None = None
        self.ticks = 0  # completed ticks
        labels = (plan.name, plan.tier)
        self._labels = labels
        self._duration = {
            name: metrics.probe_duration.labels(plan.tier, name) for name, _ in self.sources
        }
        signals = {signal for _, source in self.sources for signal in source.signals}
        self._value = {s: metrics.signal_value.labels(*labels, s.value) for s in signals}
        self.history = {s: SignalHistory(capacity(plan.rules, s, plan.interval)) for s in signals}
        self._state = {r.name: metrics.rule_state.labels(*labels, r.name) for r in plan.rules}
        self._blind = {r.name: metrics.rule_blind.labels(*labels, r.name) for r in plan.rules}
        for rule in plan.rules:
            self._state[rule.name].set(0)
            self._blind[rule.name].set(0)

    async def _collect(self, name: str, source: Source) -> list[Sample]:
        async with self.semaphore:
            self.metrics.probes_in_flight.inc()
            at = self.clock.time()
            started = self.clock.monotonic()
            try:
                samples = await source.collect(at)
            except Exception as e:  # contained: the signal is UNKNOWN for this tick
                self.metrics.tick_errors.labels(*self._labels, type(e).__name__).inc()
                error = self.redactor.text(repr(e))
                log.warning("source failed", service=self.plan.name, source=name, error=error)
                reason = f"{name} source failed: {error}"
                samples = [Sample(signal, at, None, reason) for signal in source.signals]
            finally:
                self._duration[name].observe(self.clock.monotonic() - started)
                self.metrics.probes_in_flight.dec()
        unknown = sum(1 for sample in samples if sample.value is None)
        if unknown:
            self.metrics.source_unknown.labels(*self._labels, name).inc(unknown)
        return [self.redactor.sample(sample) for sample in samples]

    async def tick(self) -> None:
        """Sample every source once and evaluate every rule on what came back."""
        self.last_started = self.clock.monotonic()
        try:
            await self._tick()
        finally:
            self.ticks += 1

    async def _tick(self) -> None:
        if len(self.sources) == 1:
            name, source = self.sources[0]
            batches = [await self._collect(name, source)]
        else:
            batches = await asyncio.gather(*(self._collect(n, s) for n, s in self.sources))
        for batch in batches:
            for sample in batch:
                self._observe(sample)
                try:
                    await self._evaluate(sample)
                except Exception as e:  # one sample's judgment must not cost the others, nor
                    # the decision after them
                    self.metrics.tick_errors.labels(*self._labels, type(e).__name__).inc()
                    log.exception(
                        "evaluation failed", service=self.plan.name, signal=sample.signal.value
                    )
        if self.after_tick is not None:
            try:
                await self.after_tick(self.plan)
            except Exception as e:  # the decision failing must not stop the ticks
                self.metrics.tick_errors.labels(*self._labels, type(e).__name__).inc()
                log.exception("evaluation hook failed", service=self.plan.name)

    def _observe(self, sample: Sample) -> None:
        self.latest[sample.signal] = sample
        self.history[sample.signal].add(sample)
        self._value[sample.signal].set(math.nan if sample.value is None else sample.value)
        self.metrics.probes.labels(*self._labels, sample.signal.value, _outcome(sample)).inc()

    async def _evaluate(self, sample: Sample) -> None:
        book = self.baselines
        for rule in self.plan.rules:
            if rule.signal is not sample.signal:
                continue
            reference = None
            if rule.baseline is not None and book is not None:
                if not book.ready(self.plan.name):
                    # Just started: judging now would take "not read yet" for "no baseline"
                    # and reset the rule a previous run left pending. Its state waits.
                    self.reasons[rule.name] = "waiting for the baseline (store and Railway)"
                    continue
                reference = book.reference(self.plan.name, rule.signal)
            state, verdict = evaluate(rule, self.states[rule.name], sample, reference)
            self.states[rule.name] = state
            self.reasons[rule.name] = verdict.reason
            if not verdict.transitions:
                continue
            self._state[rule.name].set(verdict.phase.level)
            self._blind[rule.name].set(1 if verdict.blind else 0)
            for transition in verdict.transitions:
                self.metrics.rule_transitions.labels(
                    *self._labels, rule.name, transition.value
                ).inc()
            loud = bool(_LOUD.intersection(verdict.transitions))
            (log.warning if loud else log.info)(
                "rule " + ",".join(t.value for t in verdict.transitions),
                service=self.plan.name,
                tier=self.plan.tier,
                rule=rule.name,
                phase=verdict.phase.value,
                reason=verdict.reason,
                evidence=[s.to_dict() for s in verdict.evidence] if verdict.fired else None,
            )
            if self.sink is not None:
                await self._deliver(verdict)
        if book is not None:
            troubled = any(s.phase is not Phase.INACTIVE or s.blind for s in self.states.values())
            book.record(self.plan, sample, troubled)

    async def _deliver(self, verdict: Verdict) -> None:
        assert self.sink is not None
        try:
            await self.sink(self.plan, verdict)
        except Exception as e:  # one rule's consumer failing must not hide the others
            self.metrics.tick_errors.labels(*self._labels, type(e).__name__).inc()
            log.exception("verdict handling failed", service=self.plan.name, rule=verdict.rule)

    def snapshot(self) -> dict[str, object]:
        """The service's current state, JSON-ready (for /status)."""
        # Rules on the same signal share its chart: picked once.
        charts = {signal: history.chart() for signal, history in self.history.items()}
        return {
            "name": self.plan.name,
            "tier": self.plan.tier,
            "interval": self.plan.interval,
            "ticks": self.ticks,
            "signals": {s.value: sample.to_dict() for s, sample in self.latest.items()},
            "rules": {rule.name: self._rule_snapshot(rule, charts) for rule in self.plan.rules},
        }

    def _rule_snapshot(
        self, rule: Rule, charts: dict[Signal, list[list[float | None]]]
    ) -> dict[str, object]:
        state = self.states[rule.name]
        snapshot: dict[str, object] = {
            "rule": rule.describe(),
            "signal": rule.signal.value,
            "op": rule.op.value,
            "threshold": rule.threshold,
            "for": rule.for_,
            "phase": state.phase.value,
            "since": state.since,
            "blind": state.blind,
            "compared": self.reasons.get(rule.name, ""),
            "history": charts.get(rule.signal, []),
        }
        if rule.baseline is not None:
            reference = None
            if self.baselines is not None:
                reference = self.baselines.reference(self.plan.name, rule.signal)
            limit = None
            # Only a baseline the engine judges by has a limit (monitor/baseline.py: a thin
            # record, or a latency of 0, leaves the rule idle, and nothing is above a limit).
            if (
                reference is not None
                and reference.requests >= rule.baseline.min_requests
                and (rule.signal.quantile is None or reference.value > 0)
            ):
                limit = max(rule.threshold or 0.0, rule.baseline.factor * reference.value)
            snapshot |= {
                "baseline_rule": True,
                "baseline": None if reference is None else reference.to_dict(),
                "limit": limit,
            }
        return snapshot

    @property
    def firing(self) -> list[str]:
        """Names of the rules firing now."""
        return [n for n, s in self.states.items() if s.phase is Phase.FIRING]


class Scheduler:
    """Runs every worker on its own drift-free cadence until stopped."""

    def __init__(
        self,
        workers: Sequence[ServiceWorker],
        *,
        clock: Clock,
        metrics: Metrics,
        stagger: bool = True,
    ) -> None:
        self.workers = tuple(workers)
        self.clock = clock
        self.metrics = metrics
        self.stagger = stagger
        self.started_at: float | None = None
        self._stopping = False
        self._tasks: dict[asyncio.Task[None], ServiceWorker] = {}
        self._busy: set[ServiceWorker] = set()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self.started_at is not None and not self._stopping

    def start(self) -> None:
        """Start one task per worker; first ticks spread evenly over each interval."""
        self.started_at = self.clock.monotonic()
        count = len(self.workers)
        for index, worker in enumerate(self.workers):
            offset = worker.plan.interval * index / count if self.stagger else 0.0
            task = asyncio.create_task(self._run(worker, offset), name=f"tick:{worker.plan.name}")
            self._tasks[task] = worker

    def add(self, worker: ServiceWorker) -> None:
        """Start ticking one more worker (a service that appeared: its first tick now)."""
        self.workers += (worker,)
        if self.running:
            task = asyncio.create_task(self._run(worker, 0.0), name=f"tick:{worker.plan.name}")
            self._tasks[task] = worker

    async def remove(self, name: str) -> ServiceWorker | None:
        """Stop and forget worker ``name`` (a tick in flight is cancelled: the service is
        gone); returns it, or None if there is none."""
        worker = next((w for w in self.workers if w.plan.name == name), None)
        if worker is None:
            return None
        self.workers = tuple(w for w in self.workers if w is not worker)
        tasks = [t for t, w in self._tasks.items() if w is worker]
        for task in tasks:
            task.cancel()
            del self._tasks[task]
        await asyncio.gather(*tasks, return_exceptions=True)
        self._busy.discard(worker)
        return worker

    async def _run(self, worker: ServiceWorker, offset: float) -> None:
        interval = worker.plan.interval
        labels = (worker.plan.name, worker.plan.tier)
        next_at = self.clock.monotonic() + offset
        while not self._stopping:
            delay = next_at - self.clock.monotonic()
            if delay > 0:
                await self.clock.sleep(delay)
            lag = self.clock.monotonic() - next_at
            if lag >= interval:
                # The last tick overran: skip the missed slots rather than bunching them.
                missed = int(lag // interval)
                self.metrics.ticks_skipped.labels(*labels).inc(missed)
                next_at += missed * interval
                lag -= missed * interval
            self.metrics.scheduler_lag.observe(max(lag, 0.0))
            self._busy.add(worker)
            try:
                await worker.tick()
            except Exception as e:  # one place per unit of work: count it and keep going
                self.metrics.tick_errors.labels(*labels, type(e).__name__).inc()
                log.exception("tick failed", service=worker.plan.name)
            finally:
                self._busy.discard(worker)
            next_at += interval

    def stalled(self, now: float, grace: float = 10.0) -> list[str]:
        """Services whose last tick started too long ago (the liveness check)."""
        if self.started_at is None:
            return []
        out = []
        for worker in self.workers:
            last = worker.last_started if worker.last_started is not None else self.started_at
            if now - last > 2 * worker.plan.interval + grace:
                out.append(worker.plan.name)
        return out

    async def stop(self, grace: float) -> int:
        """Let ticks in flight finish for up to ``grace`` seconds (on the Clock), then cancel.

        Returns how many ticks had to be cancelled.
        """
        self._stopping = True
        busy = [t for t, w in self._tasks.items() if w in self._busy]
        for task, worker in self._tasks.items():
            if worker not in self._busy:
                task.cancel()  # sleeping between ticks: nothing to lose
        if busy:
            waiter = asyncio.ensure_future(self.clock.sleep(grace))
            pending = set(busy)
            while pending and not waiter.done():
                _, pending = await asyncio.wait(
                    pending | {waiter}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(waiter)
            waiter.cancel()
        cancelled = 0
        for task in self._tasks:
            if not task.done():
                cancelled += task in busy
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if cancelled:
            log.warning("shutdown cancelled ticks in flight", count=cancelled)
        return cancelled
