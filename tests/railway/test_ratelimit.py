"""Railway's rate-limit headers: any unit read sanely, garbage clamped, never days of waiting."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.clock import FakeClock
from monitor.railway import ratelimit
from monitor.railway.budget import Priority, RequestBudget
from monitor.railway.ratelimit import MAX_WAIT

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds", "odd"),
    [
        (None, None, False),
        ("30", 30.0, False),  # seconds until the reset
        ("0", 0.0, False),
        (str(NOW + 30), 30.0, False),  # Unix seconds
        (str(int(NOW + 30) * 1000), 30.0, False),  # Unix milliseconds
        (str(NOW + MAX_WAIT), MAX_WAIT, False),
        (str(NOW - 20), 0.0, False),  # just past: clock skew, the window has reset
        ("3599.5", 3599.5, False),
        (str(NOW + 86400 * 3), MAX_WAIT, True),  # three days ahead: clamped
        (str((NOW + 86400 * 3) * 1000), MAX_WAIT, True),
        ("1e300", MAX_WAIT, True),
        ("-5", 0.0, False),  # a few seconds ago, as a delay
        ("-1e12", 0.0, True),  # in the past whatever the unit
        ("nan", None, True),
        ("inf", None, True),
        ("soon", None, True),
        ("", None, True),
    ],
)
def test_reset_is_read_in_whichever_unit_makes_sense(
    header: str | None, seconds: float | None, odd: bool
) -> None:
    wait = ratelimit.reset(header, NOW)
    assert wait.seconds == pytest.approx(seconds)
    assert (wait.problem is not None) == odd, wait.problem


@pytest.mark.parametrize(
    ("header", "seconds", "odd"),
    [
        ("120", 120.0, False),
        (str(90 * 86400), MAX_WAIT, True),  # 90 days: clamped
        ("Fri, 01 Jan 2100 00:00:00 GMT", MAX_WAIT, True),
        ("whenever", None, True),
    ],
)
def test_retry_after_is_clamped_too(header: str, seconds: float | None, odd: bool) -> None:
    wait = ratelimit.retry_after(header, NOW)
    assert wait.seconds == pytest.approx(seconds)
    assert (wait.problem is not None) == odd


@pytest.mark.parametrize(
    ("header", "count"),
    [(None, None), ("12", 12), ("12.9", 12), ("-3", 0), ("lots", None), ("inf", None)],
)
def test_remaining_is_a_count_or_nothing(header: str | None, count: int | None) -> None:
    assert ratelimit.remaining(header) == count


def numbers_near(now: float) -> st.SearchStrategy[str]:
    """Header values around the plausible readings of ``now``, and far from them."""
    return st.one_of(
        st.floats(min_value=-MAX_WAIT * 2, max_value=MAX_WAIT * 2),
        st.floats(min_value=now - 10 * MAX_WAIT, max_value=now + 10 * MAX_WAIT),
        st.floats(min_value=(now - 10 * MAX_WAIT) * 1000, max_value=(now + 10 * MAX_WAIT) * 1000),
    ).map(repr)


HEADERS = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.floats().map(repr),  # NaN, infinities, subnormals, 1e308
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    numbers_near(NOW),
)


@settings(max_examples=400, deadline=None)
@given(header=HEADERS, now=st.floats(min_value=0, max_value=4e9))
def test_no_header_value_implies_a_wait_outside_zero_to_the_maximum(
    header: str | None, now: float
) -> None:
    for wait in (ratelimit.reset(header, now), ratelimit.retry_after(header, now)):
        assert wait.seconds is None or 0.0 <= wait.seconds <= MAX_WAIT
    count = ratelimit.remaining(header)
    assert count is None or count >= 0


@settings(max_examples=150, deadline=None)
@given(remaining=HEADERS, reset=HEADERS, retry_after=HEADERS)
def test_whatever_the_headers_say_a_rollback_waits_at_most_the_maximum(
    remaining: str | None, reset: str | None, retry_after: str | None
) -> None:
    """The budget fed any headers (as the client feeds it) lets a CRITICAL request through."""

    async def scenario() -> None:
        clock = FakeClock(NOW)
        budget = RequestBudget(clock, per_hour=1000, per_second=10)
        budget.observe(ratelimit.remaining(remaining), ratelimit.reset(reset, NOW).seconds)
        pause = ratelimit.retry_after(retry_after, NOW).seconds
        if pause is not None:
            budget.pause(pause)
        request = asyncio.create_task(budget.acquire(Priority.CRITICAL))
        await clock.advance(MAX_WAIT + 1)
        assert request.done()
        assert request.result() <= MAX_WAIT + 1

    asyncio.run(scenario())
