"""The request budget on a FakeClock: the reserve, the per-second limit, Railway's corrections."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.clock import FakeClock
from monitor.railway.budget import Priority, RequestBudget
from monitor.telemetry import Metrics

ROUTINE, CRITICAL = Priority.ROUTINE, Priority.CRITICAL


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(f"railguard_railway_{name}", labels)
    return 0.0 if value is None else value


async def take(budget: RequestBudget, priority: Priority, n: int) -> None:
    """Take ``n`` tokens that must be there without waiting."""
    for _ in range(n):
        assert await budget.acquire(priority) == 0.0


async def waits(
    clock: FakeClock, budget: RequestBudget, priority: Priority, seconds: float
) -> None:
    """The next ``priority`` request waits exactly ``seconds`` on the clock."""
    task = asyncio.create_task(budget.acquire(priority))
    await clock.advance(seconds - 0.01)
    assert not task.done(), f"{priority} went through before {seconds}s"
    await clock.advance(0.01)
    assert task.done(), f"{priority} still waits after {seconds}s"
    assert task.result() == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("per_hour", "reserve", "routine", "wait"),
    [
        # All sent at once: room comes back when the first send leaves the sliding hour.
        (100, 0.2, 80, 3600.0),
        (20, 0.2, 16, 3600.0),
        (1000, 0.0, 1000, 3600.0),
        (10, 0.5, 5, 3600.0),
    ],
)
async def test_routine_stops_at_the_reserve_and_resumes_when_the_hour_slides(
    clock: FakeClock, per_hour: int, reserve: float, routine: int, wait: float
) -> None:
    budget = RequestBudget(clock, per_hour=per_hour, per_second=10_000, reserve=reserve)
    await take(budget, ROUTINE, routine)
    assert budget.routine_available == pytest.approx(0.0)
    await waits(clock, budget, ROUTINE, wait)


async def test_critical_spends_the_reserve_then_waits_only_for_an_empty_bucket(
    clock: FakeClock,
) -> None:
    budget = RequestBudget(clock, per_hour=100, per_second=10_000, reserve=0.2)
    await take(budget, ROUTINE, 80)
    await take(budget, CRITICAL, 20)
    assert budget.level == pytest.approx(0.0)
    await waits(clock, budget, CRITICAL, 3600.0)


@pytest.mark.parametrize(
    ("per_second", "burst", "wait"),
    [(2, 2, 0.5), (10, 10, 0.1), (0.5, 1, 2.0)],  # below one a second: a burst of one
)
async def test_the_per_second_limit_holds_both_priorities(
    clock: FakeClock, per_second: float, burst: int, wait: float
) -> None:
    budget = RequestBudget(clock, per_hour=1000, per_second=per_second)
    await take(budget, CRITICAL, burst)
    await waits(clock, budget, CRITICAL, wait)
    await waits(clock, budget, ROUTINE, 1 / per_second)


@pytest.mark.parametrize(
    ("spent", "remaining", "level"),
    [
        (0, 500, 500.0),  # Railway counts fewer: believe it
        (0, 2000, 1000.0),  # more than we think: never trust it
        (600, 500, 400.0),
        (600, None, 400.0),  # no header, no change
        (0, -3, 0.0),
    ],
)
async def test_observe_lowers_the_level_but_never_raises_it(
    clock: FakeClock, spent: int, remaining: int | None, level: float
) -> None:
    metrics = Metrics(CollectorRegistry())
    budget = RequestBudget(clock, per_hour=1000, per_second=10_000, metrics=metrics)
    await take(budget, CRITICAL, spent)
    budget.observe(remaining, None)
    assert budget.level == pytest.approx(level)
    assert sample(metrics, "budget_remaining") == pytest.approx(level)
    assert sample(metrics, "budget_reserve") == pytest.approx(200.0)


@pytest.mark.parametrize("priority", [ROUTINE, CRITICAL])
async def test_nothing_is_sent_before_the_reset_once_railway_says_none_remain(
    clock: FakeClock, priority: Priority
) -> None:
    # 3600 an hour refills one a second, so 40s of waiting is plenty of tokens for either.
    budget = RequestBudget(clock, per_hour=3600, per_second=10_000, reserve=0.01)
    budget.observe(0, 40.0)
    assert budget.level == 0.0
    await waits(clock, budget, priority, 40.0)


async def test_a_pause_holds_even_a_full_bucket(clock: FakeClock) -> None:
    budget = RequestBudget(clock, per_hour=1000, per_second=10)
    budget.pause(5)
    budget.pause(2)  # an earlier deadline does not shorten the pause
    await waits(clock, budget, CRITICAL, 5.0)
    await take(budget, ROUTINE, 1)


async def test_polling_slowed_is_set_and_cleared_once_and_waits_are_counted(
    clock: FakeClock,
) -> None:
    metrics = Metrics(CollectorRegistry())
    budget = RequestBudget(clock, per_hour=10, per_second=100, reserve=0.5, metrics=metrics)
    with capture_logs() as logs:
        await take(budget, ROUTINE, 5)
        assert sample(metrics, "polling_slowed") == 0
        first = asyncio.create_task(budget.acquire(ROUTINE))
        second = asyncio.create_task(budget.acquire(ROUTINE))
        await clock.advance(1)
        assert budget.slowed
        assert sample(metrics, "polling_slowed") == 1
        await clock.advance(3598)
        assert not first.done()  # the first five sends leave the hour at 3600s
        await clock.advance(2)
        assert first.done()
        assert second.done()
        assert sample(metrics, "polling_slowed") == 1  # they waited: still slowed
        await clock.advance(3600)
        await take(budget, ROUTINE, 1)
        assert not budget.slowed
        assert sample(metrics, "polling_slowed") == 0
    events = [(e["log_level"], e["event"]) for e in logs]
    assert events == [
        ("warning", "railway polling slowed to protect the rollback reserve"),
        ("info", "railway polling back on schedule"),
    ]
    assert logs[0]["reason"] == "reserve"
    assert sample(metrics, "budget_waits_total", priority="routine") == 2
    assert sample(metrics, "budget_waits_total", priority="critical") == 0


async def test_a_pause_slows_routine_polling_and_says_why(clock: FakeClock) -> None:
    budget = RequestBudget(clock, per_hour=1000, per_second=100)
    budget.pause(30)
    with capture_logs() as logs:
        task = asyncio.create_task(budget.acquire(ROUTINE))
        await clock.advance(30)
    assert task.done()
    assert [e["reason"] for e in logs] == ["paused by Railway"]


async def test_critical_waits_are_counted_and_do_not_slow_polling(clock: FakeClock) -> None:
    metrics = Metrics(CollectorRegistry())
    budget = RequestBudget(clock, per_hour=1000, per_second=1, metrics=metrics)
    await take(budget, CRITICAL, 1)
    await waits(clock, budget, CRITICAL, 1.0)
    assert sample(metrics, "budget_waits_total", priority="critical") == 1
    assert sample(metrics, "polling_slowed") == 0


async def test_a_cancelled_wait_takes_no_token(clock: FakeClock) -> None:
    budget = RequestBudget(clock, per_hour=10, per_second=100, reserve=0.5)
    await take(budget, ROUTINE, 5)
    task = asyncio.create_task(budget.acquire(ROUTINE))
    await clock.advance(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.level == 5


@pytest.mark.parametrize(
    ("per_hour", "per_second", "reserve"),
    [(0, 10, 0.2), (100, 0, 0.2), (100, 10, 1.0), (100, 10, -0.1)],
)
def test_nonsense_sizes_are_refused(
    clock: FakeClock, per_hour: int, per_second: float, reserve: float
) -> None:
    with pytest.raises(ValueError, match=r"per_hour|reserve"):
        RequestBudget(clock, per_hour=per_hour, per_second=per_second, reserve=reserve)
