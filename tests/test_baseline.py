"""The comparison with a release's own baseline: judgments, the proportion test, summaries."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.baseline import (
    MAX_BUCKETS,
    Reference,
    Summary,
    breaches_now,
    judge,
    observations,
)
from monitor.model import Baseline, Op, Rule, Sample, Signal

ERRORS = Baseline(factor=2.0, min_requests=200, confidence=0.95)
P95 = Baseline(factor=1.5, min_requests=100)


def rate(value: float, requests: float, errors: float | None = None) -> Sample:
    failed = value * requests if errors is None else errors
    return Sample(Signal.ERROR_RATE, 1000.0, value, detail={"requests": requests, "errors": failed})


def p95(value: float, requests: float = 1000.0) -> Sample:
    return Sample(Signal.LATENCY_P95, 1000.0, value, detail={"requests": requests})


def ref(value: float, requests: float = 100_000.0) -> Reference:
    return Reference("v1", value, requests, value * requests)


@pytest.mark.parametrize(
    ("baseline", "sample", "reference", "breaching", "said"),
    [
        # The cases: 2% against 0.1% breaches; 3% against 3% does not.
        (ERRORS, rate(0.02, 2000), ref(0.001), True, "above 2x the baseline of v1"),
        (ERRORS, rate(0.03, 2000), ref(0.03), False, "within 2x the baseline of v1"),
        # Above the factor but too few errors to be sure: no breach.
        (ERRORS, rate(0.02, 250), ref(0.005), False, "not significant at 95%"),
        # Latency: p95 tripled breaches; up 10% does not.
        (P95, p95(0.72), ref(0.24), True, "p95 720ms vs baseline 240ms (3x, 1,000 requests)"),
        (P95, p95(0.264), ref(0.24), False, "within 1.5x the baseline of v1"),
        # Nothing to compare with, or too little on a side: UNKNOWN, never a breach.
        (P95, p95(9.0), None, None, "no baseline yet for p95"),
        (P95, p95(9.0), ref(0.2, requests=50), None, "baseline too thin"),
        (P95, p95(9.0, requests=20), ref(0.2), None, "too few requests to compare"),
        (ERRORS, rate(1.0, 20), ref(0.001), None, "20 < min_requests 200"),
    ],
)
def test_judgments(
    baseline: Baseline,
    sample: Sample,
    reference: Reference | None,
    breaching: bool | None,
    said: str,
) -> None:
    judged = judge(baseline, sample.signal, sample, reference)
    assert judged.breaching is breaching
    assert said in judged.text


def test_the_evidence_explains_the_comparison() -> None:
    judged = judge(P95, Signal.LATENCY_P95, p95(0.812, 1940), ref(0.24))
    assert judged.text.startswith("p95 812ms vs baseline 240ms (3.38x, 1,940 requests)")
    assert judged.evidence["baseline"]["release"] == "v1"
    assert judged.evidence["ratio"] == pytest.approx(0.812 / 0.24)


def test_a_zero_baseline_is_no_certainty() -> None:
    # No errors in 10,000 requests is not "zero": one error in 1,000 is no regression.
    judged = judge(ERRORS, Signal.ERROR_RATE, rate(0.001, 1000), ref(0.0, 10_000))
    assert judged.breaching is False
    assert math.isinf(judged.evidence["ratio"] or math.inf)
    # ...but 5% of 1,000 against 0 of 10,000 is.
    assert judge(ERRORS, Signal.ERROR_RATE, rate(0.05, 1000), ref(0.0, 10_000)).breaching


def test_a_sample_without_a_count_cannot_be_compared() -> None:
    bare = Sample(Signal.LATENCY_P95, 1.0, 3.0)
    assert judge(P95, Signal.LATENCY_P95, bare, ref(0.1)).breaching is None
    assert observations(Sample(Signal.LATENCY_P95, 1.0, 3.0, detail={"requests": True})) is None
    assert observations(Sample(Signal.LATENCY_P95, 1.0, 3.0, detail={"requests": -1})) is None
    assert observations(Sample(Signal.LATENCY_P95, 1.0, 3.0, detail={"observations": 7})) == 7


def test_breaches_now_as_the_engine_would() -> None:
    fixed = Rule("r", Signal.ERROR_RATE, Op.GT, 0.01, 60.0, 30.0, baseline=ERRORS)
    assert not breaches_now(fixed, rate(0.005, 5000), ref(0.0001))  # under the floor
    assert breaches_now(fixed, rate(0.05, 5000), ref(0.001))
    assert not breaches_now(fixed, rate(0.05, 5000), None)  # no baseline: proves nothing
    plain = Rule("p", Signal.ERROR_RATE, Op.GT, 0.01, 60.0, 30.0)
    assert breaches_now(plain, rate(0.05, 5000), None)
    assert not breaches_now(plain, Sample(Signal.ERROR_RATE, 1.0, None), None)


@settings(max_examples=200, deadline=None)
@given(
    n1=st.integers(200, 100_000),
    n0=st.integers(200, 100_000),
    p=st.floats(0.0, 0.3),
    factor=st.floats(1.1, 10.0),
)
def test_the_same_rate_never_breaches(n1: int, n0: int, p: float, factor: float) -> None:
    """A release exactly as bad as its baseline is never a regression, whatever the counts."""
    baseline = Baseline(factor, 200, 0.95)
    judged = judge(baseline, Signal.ERROR_RATE, rate(p, n1), Reference("v", p, n0, p * n0))
    assert judged.breaching is False


@settings(max_examples=200, deadline=None)
@given(
    n1=st.integers(200, 100_000),
    n0=st.integers(200, 100_000),
    x1=st.integers(0, 100_000),
    x0=st.integers(0, 100_000),
)
def test_more_errors_never_helps(n1: int, n0: int, x1: int, x0: int) -> None:
    """Monotone: one more error in the new release never turns a breach into no breach."""
    x1, x0 = min(x1, n1 - 1), min(x0, n0)
    reference = Reference("v", x0 / n0, n0, x0)
    before = judge(ERRORS, Signal.ERROR_RATE, rate(x1 / n1, n1, x1), reference).breaching
    after = judge(ERRORS, Signal.ERROR_RATE, rate((x1 + 1) / n1, n1, x1 + 1), reference)
    assert not (before and not after.breaching)


def test_an_error_rate_summary_is_its_requests_and_errors() -> None:
    summary = Summary(Signal.ERROR_RATE)
    assert summary.value() is None
    assert summary.reference("v") is None
    assert summary.add(rate(0.01, 1000))
    assert summary.add(rate(0.03, 1000))
    assert not summary.add(Sample(Signal.ERROR_RATE, 1.0, None))  # unknown: not counted
    assert not summary.add(Sample(Signal.ERROR_RATE, 1.0, 0.5))  # no count: not counted
    assert not summary.add(rate(0.5, 10, errors=20))  # more errors than requests
    assert summary.value() == pytest.approx(0.02)
    reference = summary.reference("abc1234")
    assert reference == Reference("abc1234", pytest.approx(0.02), 2000.0, pytest.approx(40.0))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-6, 1e4), st.integers(1, 10_000)), min_size=1))
def test_a_latency_summary_is_its_weighted_median_within_two_percent(
    points: list[tuple[float, int]],
) -> None:
    summary = Summary(Signal.LATENCY_P95)
    for value, weight in points:
        assert summary.add(p95(value, weight))
    ordered = sorted(points)
    half, seen = sum(w for _, w in points) / 2, 0
    median = ordered[-1][0]
    for value, weight in ordered:
        seen += weight
        if seen >= half:
            median = value
            break
    got = summary.value()
    assert got is not None
    assert got == pytest.approx(median, rel=0.02)


def test_summaries_round_trip_and_refuse_garbage() -> None:
    summary = Summary(Signal.LATENCY_P99)
    summary.add(p95(0.0, 5).__class__(Signal.LATENCY_P99, 5.0, 0.0, detail={"requests": 5}))
    summary.add(Sample(Signal.LATENCY_P99, 9.0, 0.25, detail={"requests": 50}))
    again = Summary.from_dict(summary.to_dict())
    assert again == summary
    assert again.value() == pytest.approx(0.25, rel=0.01)
    assert (again.first_at, again.last_at, again.samples) == (5.0, 9.0, 2)
    bad: list[dict[str, Any]] = [
        {},
        {"signal": "nope", "requests": 1},
        {"signal": "latency_p99", "requests": "x"},
        {"signal": "latency_p99", "requests": -1},
        {"signal": "latency_p99", "requests": 1, "sketch": {"1": math.nan}},
        {"signal": "latency_p99", "requests": 1, "sketch": {"a": 1}},
        {"signal": "latency_p99", "requests": 1, "sketch": {str(i): 1 for i in range(5000)}},
    ]
    for data in bad:
        with pytest.raises((KeyError, TypeError, ValueError)):
            Summary.from_dict(data)


def test_a_sketch_stops_growing() -> None:
    summary = Summary(Signal.LATENCY_P50)
    for i in range(MAX_BUCKETS + 10):
        summary.add(Sample(Signal.LATENCY_P50, 1.0, 1e-6 * 1.03**i, detail={"requests": 1}))
    assert len(summary.sketch) == MAX_BUCKETS
    assert not summary.add(Sample(Signal.LATENCY_P50, 1.0, -1.0, detail={"requests": 1}))
