"""The baseline book: what it records of each release, when, and what it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from monitor.baseline import Summary
from monitor.baselines import FLUSH_EVERY, KEEP, MAX_PENDING, BaselineBook, watched
from monitor.clock import FakeClock
from monitor.model import Baseline, Op, Rule, Sample, Signal
from monitor.plan import ServicePlan
from monitor.railway.client import Deployment
from monitor.releases import ReleaseTracker
from monitor.settings import ServiceConfig, TierPolicy
from monitor.store import open_store
from monitor.store.sqlite import SQLiteStore

REGRESSION = Rule(
    "error-regression", Signal.ERROR_RATE, Op.GT, 0.01, 60.0, 30.0, baseline=Baseline(2.0, 100)
)
FIXED = Rule("error-rate", Signal.ERROR_RATE, Op.GT, 0.05, 60.0, 30.0)


def plan(*rules: Rule) -> ServicePlan:
    config = ServiceConfig(name="web", tier="production", service_id="s", environment_id="e")
    return ServicePlan(config=config, policy=TierPolicy(), rules=rules)


def deployment(
    release: str, status: str = "SUCCESS", instances: tuple[str, ...] = ()
) -> Deployment:
    return Deployment(
        id=f"d-{release}",
        status=status,
        created_at=0.0,
        updated_at=None,
        can_rollback=True,
        service_id="s",
        environment_id="e",
        meta={"commitHash": release},
        instances=instances,
    )


@dataclass
class Tracker:
    """What the book reads of the release tracker, set by the test."""

    serving: Deployment | None = None
    live: float = 0.0
    polled: float | None = None
    baseline: tuple[str, str] | None = None
    calls: list[str] = field(default_factory=list)

    def active(self, name: str) -> Deployment | None:
        return self.serving

    def live_since(self, name: str) -> float | None:
        return self.live

    def observed_at(self, name: str) -> float | None:
        return self.polled

    def baseline_release(self, name: str) -> tuple[str, str] | None:
        return self.baseline


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    async with await open_store(tmp_path / "state.db") as store:
        yield store


def book_of(store: SQLiteStore, tracker: Tracker, clock: FakeClock) -> BaselineBook:
    return BaselineBook(store, cast(ReleaseTracker, tracker), clock=clock)


def rate(at: float, value: float, requests: float = 1000.0) -> Sample:
    detail = {"requests": requests, "errors": value * requests, "span_s": 1.0}
    return Sample(Signal.ERROR_RATE, at, value, detail=detail)


async def poll(book: BaselineBook, tracker: Tracker, at: float, service: ServicePlan) -> None:
    tracker.polled = at
    await book.after_tick(service)


async def test_a_release_is_recorded_between_two_polls_that_saw_it(
    store: SQLiteStore, clock: FakeClock
) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, rate(11.0, 0.01), troubled=False)
    book.record(service, rate(12.0, 0.03), troubled=False)
    assert book.summaries("web") == {}  # not yet: the next poll may show a deploy went out
    await poll(book, tracker, 13.0, service)
    (summary,) = book.summaries("web")["commit:aaa"].values()
    assert (summary.requests, summary.errors, summary.samples) == (2000.0, 40.0, 2)


async def test_samples_around_a_deploy_belong_to_no_release(
    store: SQLiteStore, clock: FakeClock
) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, rate(11.0, 0.5), troubled=False)  # the new release, already
    tracker.serving = deployment("bbb")
    await poll(book, tracker, 13.0, service)
    book.record(service, rate(14.0, 0.5), troubled=False)
    await poll(book, tracker, 16.0, service)
    assert set(book.summaries("web")) == {"commit:bbb"}
    assert book.summaries("web")["commit:bbb"][Signal.ERROR_RATE].samples == 1


@pytest.mark.parametrize(
    ("serving", "troubled", "sample"),
    [
        pytest.param(deployment("aaa"), True, rate(11.0, 0.01), id="a rule not inactive"),
        pytest.param(None, False, rate(11.0, 0.01), id="nothing active"),
        pytest.param(deployment("aaa", "CRASHED"), False, rate(11.0, 0.01), id="crashed"),
        pytest.param(
            deployment("aaa", instances=("RESTARTING",)), False, rate(11.0, 0.01), id="restarting"
        ),
        pytest.param(deployment("aaa"), False, Sample(Signal.ERROR_RATE, 11.0, None), id="unknown"),
        pytest.param(
            deployment("aaa"),
            False,
            Sample(Signal.ERROR_RATE, 11.0, 0.01, detail={"requests": 9, "span_s": 8.0}),
            id="measured before the release went live",
        ),
        pytest.param(
            deployment("aaa"), False, Sample(Signal.MEMORY, 11.0, 0.5), id="no baseline rule"
        ),
    ],
)
async def test_what_is_not_a_quiet_release_is_not_recorded(
    store: SQLiteStore, clock: FakeClock, serving: Deployment | None, troubled: bool, sample: Sample
) -> None:
    service = plan(REGRESSION, FIXED)
    tracker = Tracker(serving=serving, live=5.0)
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, sample, troubled=troubled)
    await poll(book, tracker, 13.0, service)
    assert not any(book.summaries("web").values())


async def test_summaries_are_written_once_a_minute_and_read_back(
    store: SQLiteStore, clock: FakeClock
) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, rate(11.0, 0.01), troubled=False)
    await poll(book, tracker, 13.0, service)
    assert set(await store.summaries("web")) == {"commit:aaa"}  # the first write: at once
    book.record(service, rate(14.0, 0.01), troubled=False)
    await poll(book, tracker, 16.0, service)
    stored = (await store.summaries("web"))["commit:aaa"]["error_rate"]
    assert stored["samples"] == 1  # the second waits for the minute
    await clock.advance(FLUSH_EVERY)
    await poll(book, tracker, 17.0, service)
    stored = (await store.summaries("web"))["commit:aaa"]["error_rate"]
    assert stored["samples"] == 2
    # A restart: the next run's book reads what this one wrote, and judges by it.
    tracker.serving, tracker.baseline = deployment("bbb"), ("commit:aaa", "aaa")
    again = book_of(store, tracker, clock)
    await poll(again, tracker, 20.0, service)
    reference = again.reference("web", Signal.ERROR_RATE)
    assert reference is not None
    assert (reference.release, reference.requests, reference.value) == ("aaa", 2000.0, 0.01)


async def test_the_baseline_follows_the_tracker(store: SQLiteStore, clock: FakeClock) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    for t in (11.0, 12.0):
        book.record(service, rate(t, 0.002), troubled=False)
    await poll(book, tracker, 13.0, service)
    assert book.reference("web", Signal.ERROR_RATE) is None  # no earlier good release
    tracker.serving, tracker.baseline = deployment("bbb"), ("commit:aaa", "v1 (aaa)")
    await poll(book, tracker, 16.0, service)
    reference = book.reference("web", Signal.ERROR_RATE)
    assert reference is not None
    assert reference.release == "v1 (aaa)"
    assert book.reference("web", Signal.LATENCY_P95) is None
    assert book.reference("other", Signal.ERROR_RATE) is None
    tracker.baseline = None
    await poll(book, tracker, 19.0, service)
    assert book.reference("web", Signal.ERROR_RATE) is None


async def test_a_service_keeps_its_last_few_releases(store: SQLiteStore, clock: FakeClock) -> None:
    service, tracker = plan(REGRESSION), Tracker()
    book = book_of(store, tracker, clock)
    at = 10.0
    releases = [f"r{i}" for i in range(KEEP + 3)]
    tracker.baseline = ("commit:r0", "r0")  # the oldest is the baseline: it is kept too
    for release in releases:
        tracker.serving = deployment(release)
        for _ in range(2):
            await poll(book, tracker, at, service)
            book.record(service, rate(at + 1, 0.01), troubled=False)
            at += 3
        await poll(book, tracker, at, service)
        await clock.advance(FLUSH_EVERY)
        at += 3
    await book.flush_all()
    kept = set(await store.summaries("web"))
    assert kept == {"commit:r0", *(f"commit:{r}" for r in releases[-KEEP:])}
    assert set(book.summaries("web")) == kept


async def test_pending_samples_are_bounded(store: SQLiteStore, clock: FakeClock) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    for i in range(MAX_PENDING + 50):
        book.record(service, rate(11.0 + i * 1e-3, 0.01), troubled=False)
    await poll(book, tracker, 100.0, service)
    assert book.summaries("web")["commit:aaa"][Signal.ERROR_RATE].samples == MAX_PENDING


async def test_a_damaged_summary_is_left_out(store: SQLiteStore, clock: FakeClock) -> None:
    await store.save_summaries("web", "commit:aaa", {"error_rate": {"signal": "nope"}}, 1.0)
    good = Summary(Signal.ERROR_RATE, requests=500.0, errors=1.0, samples=5)
    await store.save_summaries("web", "commit:bbb", {"error_rate": good.to_dict()}, 1.0)
    await store._write(  # a row that is not even JSON
        lambda db: db.execute(
            "INSERT INTO release_summaries VALUES ('web', 'commit:ccc', 'error_rate', '{', 1)"
        )
    )
    service = plan(REGRESSION)
    tracker = Tracker(serving=deployment("zzz"), baseline=("commit:bbb", "bbb"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    assert book.reference("web", Signal.ERROR_RATE) is not None
    assert set(book.summaries("web")) == {"commit:aaa", "commit:bbb"}
    assert book.summaries("web")["commit:aaa"] == {}
    tracker.baseline = ("commit:aaa", "aaa")
    await poll(book, tracker, 13.0, service)
    assert book.reference("web", Signal.ERROR_RATE) is None


async def test_a_service_without_baseline_rules_costs_nothing(
    store: SQLiteStore, clock: FakeClock
) -> None:
    service, tracker = plan(FIXED), Tracker(serving=deployment("aaa"))
    assert watched(service) == frozenset()
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, rate(11.0, 0.01), troubled=False)
    await poll(book, tracker, 13.0, service)
    assert book.summaries("web") == {}
    assert await store.summaries("web") == {}


async def test_forgetting_keeps_only_what_is_named(store: SQLiteStore) -> None:
    data: dict[str, Any] = {"error_rate": Summary(Signal.ERROR_RATE).to_dict()}
    for key in ("a", "b", "c"):
        await store.save_summaries("web", key, data, 1.0)
    await store.save_summaries("api", "a", data, 1.0)
    await store.forget_summaries("web", ["b"])
    assert set(await store.summaries("web")) == {"b"}
    assert set(await store.summaries("api")) == {"a"}
    await store.forget_summaries("web", [])
    assert await store.summaries("web") == {}


async def test_a_service_gone_is_forgotten(store: SQLiteStore, clock: FakeClock) -> None:
    service, tracker = plan(REGRESSION), Tracker(serving=deployment("aaa"))
    book = book_of(store, tracker, clock)
    await poll(book, tracker, 10.0, service)
    book.record(service, rate(11.0, 0.01), troubled=False)
    assert book._books["web"].pending
    book.forget("web")
    assert book.summaries("web") == {}
    assert "web" not in book._books
    book.forget("never-seen")  # nothing to forget: nothing happens
