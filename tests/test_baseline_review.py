"""Review of issue 13 (baselines): hostile records, a zero baseline, and a failing book.

Each test is one way the change was attacked; see the module docstrings of
monitor/baseline.py and monitor/baselines.py for what they promise.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.baseline import Reference, Summary, breaches_now, judge
from monitor.baselines import KEEP
from monitor.clock import FakeClock
from monitor.engine import RuleState, evaluate
from monitor.environment import load_environment
from monitor.errors import ConfigError
from monitor.model import Baseline, Op, Phase, Rule, Sample, Signal
from monitor.plan import ServicePlan
from monitor.planning import build_plan
from monitor.pr_plan import pr_service_plans
from monitor.railway.environments import PrEnvironment
from monitor.rules import builtin_rules_path, dry_run
from monitor.scheduler import ServiceWorker
from monitor.store import open_store
from monitor.store.sqlite import SQLiteStore
from monitor.switchboard import Switchboard
from monitor.telemetry import Metrics
from tests.stage import CONFIG as STAGE_CONFIG
from tests.stage import Stage, store_of, worker
from tests.test_baseline_scenarios import configure
from tests.test_baselines import REGRESSION, Tracker, book_of, deployment, plan, poll, rate

P50_REGRESSION = Rule(
    "p50-regression", Signal.LATENCY_P50, Op.GT, None, 60.0, 30.0, baseline=Baseline(1.5, 100)
)


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    async with await open_store(tmp_path / "state.db") as store:
        yield store


def p50(at: float, value: float, requests: float = 1000.0) -> Sample:
    return Sample(Signal.LATENCY_P50, at, value, detail={"requests": requests})


# --- a latency baseline of zero -------------------------------------------------------------


def test_a_zero_latency_baseline_is_nothing_to_scale() -> None:
    """Railway answers whole milliseconds: a fast service's p50 is often 0ms. 1.5x 0 is 0,
    so any later release answering in 1ms was "∞x the baseline" and rolled back."""
    baseline = Baseline(1.5, 100)
    judged = judge(baseline, Signal.LATENCY_P50, p50(1.0, 0.001), Reference("v1", 0.0, 10_000))
    assert judged.breaching is None
    assert judged.baseless
    assert "0s" in judged.text
    rule = P50_REGRESSION
    assert not breaches_now(rule, p50(1.0, 0.001), Reference("v1", 0.0, 10_000))


def test_a_zero_latency_baseline_never_fires_the_rule() -> None:
    state, ref = RuleState(), Reference("v1", 0.0, 10_000)
    for k in range(20):
        state, verdict = evaluate(P50_REGRESSION, state, p50(10.0 * k, 0.002), ref)
        assert not verdict.fired
    assert state.phase is Phase.INACTIVE
    assert not state.blind


def test_an_error_count_above_the_requests_is_no_traceback() -> None:
    """``errors`` > ``requests`` in a sample's detail (garbage) made the test's variance
    negative: math.sqrt raised inside the engine."""
    sample = Sample(Signal.ERROR_RATE, 1.0, 0.5, detail={"requests": 1000, "errors": 5000})
    judged = judge(Baseline(2.0, 200), Signal.ERROR_RATE, sample, Reference("v1", 0.001, 1e5, 100))
    assert judged.breaching is not None  # judged (the errors counted as at most every request)


# --- stored summaries that are garbage -------------------------------------------------------

GARBAGE: list[dict[str, Any]] = [
    # json.dumps writes Infinity; int(inf) raised OverflowError, which _load did not catch
    {"signal": "latency_p50", "requests": 5000, "samples": float("inf"), "sketch": {"-100": 5000}},
    # a bucket no value can reach: 1.02 ** 100000 overflowed in every _refresh
    {"signal": "latency_p50", "requests": 5000, "samples": 3, "sketch": {"100000": 5000}},
    # a bucket below the smallest positive float: a baseline of 0
    {"signal": "latency_p50", "requests": 5000, "samples": 3, "sketch": {"-100000": 5000}},
    # the sketch's weights are not the requests: one request decides a "5,000,000" baseline
    {"signal": "latency_p50", "requests": 5e6, "samples": 3, "sketch": {"-300": 1}},
    {"signal": "latency_p50", "requests": 5000, "samples": -3, "sketch": {"-100": 5000}},
]


@pytest.mark.parametrize("data", GARBAGE)
def test_a_summary_that_cannot_be_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        Summary.from_dict(json.loads(json.dumps(data)))


def test_more_errors_than_requests_is_refused() -> None:
    with pytest.raises(ValueError, match="no more errors than requests"):
        Summary.from_dict({"signal": "error_rate", "requests": 5, "errors": 50})


@pytest.mark.parametrize("data", GARBAGE)
async def test_a_garbage_summary_in_the_store_leaves_the_book_working(
    store: SQLiteStore, clock: FakeClock, data: dict[str, Any]
) -> None:
    await store.save_summaries("web", "commit:aaa", {"latency_p50": data}, 1.0)
    service = plan(P50_REGRESSION)
    tracker = Tracker(serving=deployment("bbb"), baseline=("commit:aaa", "aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)  # no exception
    assert book.reference("web", Signal.LATENCY_P50) is None
    book.record(service, p50(11.0, 0.2), troubled=False)
    await poll(book, tracker, 12.0, service)
    assert book.summaries("web")["commit:bbb"][Signal.LATENCY_P50].samples == 1


# --- the book failing must not stop the decisions --------------------------------------------


class Failing:
    async def after_tick(self, service: ServicePlan) -> None:
        raise OSError("database is locked")


class Controller:
    def __init__(self) -> None:
        self.evaluated: list[str] = []

    async def evaluate(self, service: ServicePlan) -> None:
        self.evaluated.append(service.name)


async def test_a_failing_baseline_book_still_lets_the_controller_decide() -> None:
    """Switchboard.after_tick awaited the book first: a store locked at the minute's flush
    (or a summary it could not read, on every tick) skipped the rollback decision."""
    board = Switchboard(lambda _: {})
    controller = Controller()
    board.baselines = Failing()  # type: ignore[assignment]
    board.controller = controller  # type: ignore[assignment]
    with pytest.raises(OSError, match="locked"):  # still raised: the worker counts and logs it
        await board.after_tick(plan(REGRESSION))
    assert controller.evaluated == ["web"]


# --- the record of a release rolled back to --------------------------------------------------


async def test_a_release_serving_again_is_not_forgotten(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """A rollback to an old release: it serves again, but its record sat first in the order,
    so the next release's flush (more than KEEP releases) dropped the record of the release
    that had just served (the next release's baseline: it had nothing to compare with)."""
    service = plan(REGRESSION)
    tracker = Tracker()
    book = book_of(store, tracker, clock)
    at = 0.0
    for release in ["r0", *(f"r{i}" for i in range(1, KEEP)), "r0", "r-next"]:
        tracker.serving = deployment(release)
        at += 1.0
        await poll(book, tracker, at, service)
        book.record(service, rate(at + 0.5, 0.01), troubled=False)
        at += 1.0
        await poll(book, tracker, at, service)
        await clock.advance(120.0)
        await poll(book, tracker, at, service)
    assert "commit:r0" in book.summaries("web")
    assert book.summaries("web")["commit:r0"][Signal.ERROR_RATE].samples == 2
    assert "commit:r0" in await store.summaries("web")


# --- a baseline rule on a source that counts no requests -------------------------------------

PROMQL_ERRORS = """
[tiers.production]
rules = ["error-rate-regression"]

[[services]]
name = "web"
tier = "production"
service_id = "s"
environment_id = "e"
error_rate = { source = "promql", url = "http://127.0.0.1:9", query = "sum(a)/sum(b)", \
traffic_query = "sum(b)" }
"""


def test_a_promql_error_rate_sample_counts_no_requests() -> None:
    """What the PromQL error rate says (its ``traffic``, never ``requests``): a baseline rule
    on it can never record a release nor compare with one; it rests idle for ever."""
    sample = Sample(Signal.ERROR_RATE, 1.0, 0.02, detail={"query": "q", "traffic": 5000.0})
    assert not Summary(Signal.ERROR_RATE).add(sample)


def test_a_baseline_rule_on_a_promql_error_rate_is_refused(
    write: Callable[[str, str], Path],
) -> None:
    path = write(PROMQL_ERRORS, "railguard.toml")
    with pytest.raises(ConfigError, match=r"error-rate-regression.*promql") as caught:
        build_plan(path, load_environment({}), {})
    assert "error_rate" in str(caught.value)


# --- /status and the page: the limit drawn is the one the engine judges by -------------------


class References:
    def __init__(self, reference: Reference) -> None:
        self.given = reference

    def reference(self, name: str, signal: Signal) -> Reference:
        return self.given


@pytest.mark.parametrize(
    "reference",
    [
        Reference("v1", 0.0, 10_000),  # a latency of 0: idle (no multiple of it is a limit)
        Reference("v1", 0.2, 50),  # thinner than min_requests: idle
    ],
)
def test_an_idle_baseline_rule_shows_no_limit(clock: FakeClock, reference: Reference) -> None:
    """A limit the engine does not judge by painted every point above it red on the page
    (above 0s: all of them) while the rule rested idle."""
    worker = ServiceWorker(
        plan(P50_REGRESSION), (), clock=clock, metrics=Metrics(), semaphore=asyncio.Semaphore(1)
    )
    worker.baselines = References(reference)  # type: ignore[assignment]
    shown = worker.snapshot()["rules"]
    assert isinstance(shown, dict)
    assert shown["p50-regression"]["limit"] is None
    assert shown["p50-regression"]["baseline"] == reference.to_dict()


# --- a restart mid-regression ----------------------------------------------------------------


async def test_a_restart_does_not_reset_a_pending_baseline_rule(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """The daemon restores a pending rule at start, but the first tick ran before the book
    had read the store or the tracker had polled: "no baseline" (idle) reset the rule, and
    the rollback of a release that regressed before the restart came up to ``for`` late."""
    service = plan(P50_REGRESSION)
    worker = ServiceWorker(
        service, (), clock=clock, metrics=Metrics(), semaphore=asyncio.Semaphore(1)
    )
    # The previous run: the baseline is recorded, the rule pending on a tripled p50.
    recorded = Summary(Signal.LATENCY_P50)
    recorded.add(p50(1.0, 0.1, requests=50_000))
    await store.save_summaries("web", "commit:aaa", {"latency_p50": recorded.to_dict()}, 1.0)
    state = RuleState()
    for k in range(3):
        state, _ = evaluate(
            P50_REGRESSION, state, p50(100.0 + 10 * k, 0.3), Reference("v1", 0.1, 5e4)
        )
    assert state.phase is Phase.PENDING
    worker.states[P50_REGRESSION.name] = state
    # The restart: the book knows nothing yet, the tracker has not polled.
    tracker = Tracker(serving=deployment("bbb"), baseline=("commit:aaa", "aaa"))
    book = book_of(store, tracker, clock)
    worker.baselines = book
    await worker._evaluate(p50(130.0, 0.3))
    assert worker.states[P50_REGRESSION.name].phase is Phase.PENDING
    await poll(book, tracker, 131.0, service)
    await worker._evaluate(p50(140.0, 0.3))
    assert worker.states[P50_REGRESSION.name].phase is Phase.PENDING
    assert worker.states[P50_REGRESSION.name].since == state.since


# --- a PR environment's latency ----------------------------------------------------------------

PR_LATENCY = """
[railway]
project_id = "proj-1"

[tiers.production]
rules = ["health-failing"]

[[services]]
name = "web"
tier = "production"
service_id = "svc-web"
environment_id = "env-prod"
health = {{ url = "https://web.example.com/health" }}
latency = {latency}

[pr_environments]
[[pr_environments.services]]
from = "web"
health_url = "https://web-{{environment}}.up.railway.app/health"
"""


@pytest.mark.parametrize(
    ("latency", "copied"),
    [
        ('{ source = "exposition", url = "https://web.example.com/metrics" }', None),
        ('{ source = "promql", url = "http://127.0.0.1:9", selector = \'job="web"\' }', None),
        ('{ source = "railway" }', "railway"),
        ('{ source = "health" }', "health"),
    ],
)
def test_a_pr_service_does_not_measure_the_templates_app(
    write: Callable[[str, str], Path], latency: str, copied: str | None
) -> None:
    """Only Railway's error rate and memory were copied; the latency table came along whole,
    so a PR service's latency rules judged the base environment's own app (its exposition,
    its Prometheus series) as if it were the PR's."""
    path = write(PR_LATENCY.format(latency=latency), "railguard.toml")
    plan = build_plan(path, load_environment({}), {})
    (service,) = pr_service_plans(plan, PrEnvironment("env-pr-7", "web-pr-7"))
    got = service.config.latency
    assert (None if got is None else got.source) == copied


# --- Railway's steps, read by more than one poll ---------------------------------------------


async def test_a_railway_step_read_by_two_polls_is_recorded_once(
    store: SQLiteStore, clock: FakeClock
) -> None:
    """Each poll hands over the newest complete step: at the default 30s poll and 1m step,
    every step arrived twice and the record counted its requests (and errors) twice: the
    proportion test took the baseline for twice as sure as it is, the evidence said twice the
    requests Railway counted."""
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    for at, step in ((30.0, 0.0), (60.0, 0.0), (90.0, 60.0), (120.0, 60.0)):
        sample = rate(at, 0.01)
        book.record(
            service,
            Sample(
                sample.signal,
                at,
                sample.value,
                detail={**sample.detail, "step_start": step, "step_s": 60.0},
            ),
            troubled=False,
        )
    await poll(book, tracker, 130.0, service)
    summary = book.summaries("web")["commit:aaa"][Signal.ERROR_RATE]
    assert (summary.samples, summary.requests, summary.errors) == (2, 2000.0, 20.0)


# --- the dry run of a baseline rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "min_requests", "confidence"), [(2.0, 10, 0.999), (1.1, 10, 0.99), (1.05, 50, 0.95)]
)
def test_a_valid_baseline_table_passes_the_dry_run(
    factor: float, min_requests: int, confidence: float
) -> None:
    """The trial gave each side 100 x min_requests requests: with min_requests = 10 and a
    high confidence the test was never sure, and a valid rule was refused at load saying it
    "did not fire within for + one interval" (a timing it has nothing to do with)."""
    rule = Rule(
        "r",
        Signal.ERROR_RATE,
        Op.GT,
        None,
        120.0,
        30.0,
        baseline=Baseline(factor, min_requests, confidence),
    )
    assert dry_run(rule, 15.0) is None


# --- restarts on the stage ---------------------------------------------------------------------


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    stage.traffic_per_second = 20
    yield stage
    await stage.close()


async def baked_on(stage: Stage, store: SQLiteStore) -> str:
    """As the scenarios' ``baked``, on a state file that outlives the daemon."""
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon(store)
    await stage.run_for(24)
    record = await store.deployment("web", good.id)
    assert record is not None
    assert record.verdict == "good"
    return str(good.id)


async def test_the_first_deploy_after_a_restart_is_judged_against_the_record(
    stage: Stage, store: SQLiteStore
) -> None:
    configure(stage, ["latency-regression"])
    stage.behaviour = {"v1.1": {"latency": 0.08}, "v2": {"latency": 0.24}}
    good = await baked_on(stage, store)
    await stage.stop_daemon()  # a graceful restart: the record is written at shutdown
    assert await store.summaries("web")
    await stage.start_daemon(store)
    stage.deploy("v2")
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    (rollback,) = await store.rollbacks("web")
    assert "vs baseline" in rollback.reason


async def test_a_restart_mid_regression_still_rolls_back_in_time(
    stage: Stage, store: SQLiteStore
) -> None:
    configure(stage, ["latency-regression"])
    stage.behaviour = {"v1.1": {"latency": 0.08}, "v2": {"latency": 0.24}}
    good = await baked_on(stage, store)
    stage.deploy("v2")
    await stage.run_for(4)
    assert worker(stage).states["latency-regression"].phase.value == "pending"
    await stage.stop_daemon()
    await stage.start_daemon(store)
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]


def test_counts_past_floats_range_are_no_traceback() -> None:
    """1e308 requests on each side (a garbage exposition's counters): the test's variance
    underflowed to 0 and the engine raised ZeroDivisionError (the rest of the tick, the
    controller's decision included, was skipped); a record summed them to infinity."""
    huge = Sample(Signal.ERROR_RATE, 1.0, 0.0, detail={"requests": 1e308, "errors": 0})
    judged = judge(Baseline(2.0, 200), Signal.ERROR_RATE, huge, Reference("v1", 0.0, 1e308))
    assert judged.breaching is False
    summary = Summary(Signal.ERROR_RATE)
    assert summary.add(huge)
    assert not summary.add(huge)
    assert summary.requests == 1e308


class OneSample:
    signals = frozenset({Signal.LATENCY_P50})

    async def collect(self, at: float) -> list[Sample]:
        return [p50(at, 0.2)]


async def test_a_rule_that_cannot_be_evaluated_leaves_the_decision_to_run(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception judging one sample (the ones above, or the next) ended the tick there:
    the other samples went unjudged and after_tick, the baselines and the controller's
    decision, never ran for the service, tick after tick while the cause lasted."""
    hooked: list[str] = []

    async def after_tick(service: ServicePlan) -> None:
        hooked.append(service.name)

    def broken(*args: object) -> object:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr("monitor.scheduler.evaluate", broken)
    worker = ServiceWorker(
        plan(P50_REGRESSION),
        (("latency", OneSample()),),
        clock=clock,
        metrics=Metrics(),
        semaphore=asyncio.Semaphore(1),
        after_tick=after_tick,
    )
    await worker.tick()
    assert hooked == ["web"]
    assert worker.latest[Signal.LATENCY_P50].value == 0.2


# --- a rollback on the health probes' latency ------------------------------------------------

PROBE_RULES = """
[[rules]]
name = "probe-slow"
signal = "latency_p95"
op = ">"
threshold = "500ms"
for = "5s"
"""


def probe_latency_config(tmp: Path, window: str) -> str:
    """The stage's config with the health probes' latency and only the latency rule."""
    (tmp / "probe.toml").write_text(PROBE_RULES)
    head = f'rule_files = ["{builtin_rules_path()}", "probe.toml"]\n'
    service = STAGE_CONFIG.split("[[services]]")[1].split("error_rate =")[0]
    return (
        head
        + STAGE_CONFIG.split("[[services]]")[0].replace("{tier_extra}", 'rules = ["probe-slow"]')
        + "[[services]]"
        + service
        + f'latency = {{{{ source = "health", window = "{window}", min_probes = 3 }}}}\n'
    )


async def test_a_rollback_on_probe_latency_verifies_within_the_timeout(stage: Stage) -> None:
    """The probe window reached back past the replacement's start for a whole ``window``: the
    verification found "no latency_p95 sample taken since the replacement went live" until
    then, so with a window longer than rollback_timeout (the defaults: 5m and 2m) every such
    rollback failed and escalated. A switch of the active deployment now restarts it."""
    stage.config_template = probe_latency_config(stage.tmp, "60s")  # rollback_timeout 30s
    stage.behaviour = {"v2": {"mode": "slow", "delay": 0.8}}
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(24)
    stage.deploy("v2")
    # (The decision waits until the evidence's windows began after the deploy: a whole
    # window, 60s, and `for`.)
    await stage.run_for(80)
    assert stage.rollbacks_sent() == [good.id]
    await stage.run_for(40)  # 3s to roll out, 30s rollback_timeout
    (rollback,) = await store_of(stage).rollbacks("web")
    assert rollback.state == "succeeded", rollback.error


async def test_a_slow_release_on_probe_latency_rolls_back_within_for(stage: Stage) -> None:
    stage.config_template = probe_latency_config(stage.tmp, "60s")
    stage.behaviour = {"v2": {"mode": "slow", "delay": 0.8}}
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(24)
    stage.deploy("v2")
    await stage.run_for(25)  # for 5s, 3 probes, polls every 2s: well within
    assert stage.rollbacks_sent() == [good.id]
