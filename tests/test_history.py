"""Each signal's recent samples, for the status page's charts."""

from __future__ import annotations

import pytest

from monitor.history import MAX_SAMPLES, MIN_SAMPLES, SignalHistory, capacity
from monitor.model import Op, Rule, Sample, Signal


def rule(signal: Signal, for_: float) -> Rule:
    return Rule("r", signal, Op.GT, 0.5, for_, 2 * for_)


@pytest.mark.parametrize(
    ("rules", "signal", "interval", "expected"),
    [
        ([rule(Signal.HEALTH, 180)], Signal.HEALTH, 10, MIN_SAMPLES),  # 37 wanted: the floor
        ([rule(Signal.MEMORY, 300)], Signal.MEMORY, 5, 121),  # 2 x 5m at 5s, plus one
        ([rule(Signal.MEMORY, 300), rule(Signal.MEMORY, 900)], Signal.MEMORY, 10, 181),
        ([rule(Signal.HEALTH, 3600)], Signal.HEALTH, 1, MAX_SAMPLES),  # the ceiling
        ([rule(Signal.HEALTH, 60)], Signal.MEMORY, 10, MIN_SAMPLES),  # no rule on it
        ([], Signal.HEALTH, 0, MIN_SAMPLES),
    ],
)
def test_capacity_shows_twice_the_longest_window(
    rules: list[Rule], signal: Signal, interval: float, expected: int
) -> None:
    assert capacity(rules, signal, interval) == expected


def test_a_history_keeps_the_newest_samples_oldest_first_with_unknowns_as_none() -> None:
    history = SignalHistory(3)
    assert history.points() == []
    for at, value in [(1.0, 0.1), (2.0, None), (3.0, 0.3), (4.0, 0.4)]:
        history.add(Sample(Signal.ERROR_RATE, at, value))
    assert len(history) == 3
    assert history.points() == [(2.0, None), (3.0, 0.3), (4.0, 0.4)]
    assert history.points(since=3.0) == [(3.0, 0.3), (4.0, 0.4)]


def test_a_history_needs_room_for_a_sample() -> None:
    with pytest.raises(ValueError, match="at least one sample, not 0"):
        SignalHistory(0)


def test_a_chart_sends_at_most_its_points_and_always_the_newest() -> None:
    history = SignalHistory(MAX_SAMPLES)
    for i in range(MAX_SAMPLES):
        history.add(Sample(Signal.MEMORY, float(i), float(i)))
    chart = history.chart(points=100)
    assert len(chart) <= 100
    assert chart[-1] == [MAX_SAMPLES - 1.0, MAX_SAMPLES - 1.0]
    assert [at for at, _ in chart] == sorted(at for at, _ in chart)
    assert history.chart(points=1000) == [[float(i), float(i)] for i in range(MAX_SAMPLES)]
