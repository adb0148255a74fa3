"""The rule engine, driven by tables of (time, value) samples: no clock, no sleeping."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import pytest

from monitor.baseline import Reference
from monitor.engine import RuleState, Transition, Verdict, evaluate
from monitor.model import Baseline, Op, Phase, Rule, Sample, Signal, for_slack

BAD = 0.2  # breaches error_rate > 0.05
OK = 0.01
UNK = None  # an UNKNOWN sample

Point = tuple[float, float | None]


def make_rule(**overrides: object) -> Rule:
    """error_rate > 0.05 for 3m, max_gap 30s (a 15s interval): the rule most rows use."""
    fields: dict[str, object] = {
        "name": "error_rate_high",
        "signal": Signal.ERROR_RATE,
        "op": Op.GT,
        "threshold": 0.05,
        "for_": 180.0,
        "max_gap": 30.0,
    }
    fields.update(overrides)
    return Rule(**fields)  # type: ignore[arg-type]


def every(start: float, stop: float, value: float | None, step: float = 15.0) -> list[Point]:
    """Samples of one value from ``start`` to ``stop`` inclusive, ``step`` apart."""
    count = int((stop - start) // step) + 1
    return [(start + i * step, value) for i in range(count)]


def alternate(start: float, stop: float, step: float = 15.0) -> list[Point]:
    """BAD, OK, BAD, OK, ... from ``start`` to ``stop``: a flapping service."""
    return [(t, BAD if i % 2 == 0 else OK) for i, (t, _) in enumerate(every(start, stop, OK, step))]


def sample(t: float, value: float | None, signal: Signal = Signal.ERROR_RATE) -> Sample:
    reason = "connection refused" if value is None else ""
    return Sample(signal=signal, at=t, value=value, reason=reason, detail={"n": int(t)})


def run(
    rule: Rule, points: Iterable[Point], state: RuleState | None = None
) -> tuple[RuleState, list[Verdict]]:
    """Feed the points in order; the final state and every verdict."""
    current = RuleState() if state is None else state
    verdicts = []
    for t, value in points:
        current, verdict = evaluate(rule, current, sample(t, value, rule.signal))
        verdicts.append(verdict)
    return current, verdicts


def events(verdicts: Sequence[Verdict]) -> list[str]:
    """``["0:pending", "180:firing"]``: each evaluation that changed something."""
    return [f"{v.at:g}:{'+'.join(v.transitions)}" for v in verdicts if v.transitions]


TABLE = [
    pytest.param({}, every(0, 180, BAD), ["0:pending", "180:firing"], id="fires-at-boundary"),
    pytest.param({}, every(0, 165, BAD), ["0:pending"], id="not-one-sample-before"),
    pytest.param(
        {},
        [*every(0, 90, BAD), (105, OK), *every(120, 300, BAD)],
        ["0:pending", "105:reset", "120:pending", "300:firing"],
        id="one-healthy-sample-resets-pending",
    ),
    pytest.param(
        {},
        [*every(0, 210, BAD), (225, OK), (240, OK)],
        ["0:pending", "180:firing", "225:resolved"],
        id="healthy-sample-resolves-firing",
    ),
    pytest.param(
        {},
        [*every(0, 90, BAD), *every(121, 301, BAD)],
        ["0:pending", "121:reset+pending", "301:firing"],
        id="gap-over-max-gap-resets-pending",
    ),
    pytest.param(
        {},
        [*every(0, 90, BAD), *every(120, 180, BAD)],
        ["0:pending", "180:firing"],
        id="gap-equal-to-max-gap-is-covered",
    ),
    pytest.param(
        {},
        [*every(0, 195, BAD), *every(226, 240, BAD)],
        ["0:pending", "180:firing", "226:reset+pending"],
        id="gap-resets-firing",
    ),
    pytest.param(
        {},
        [(0, OK), (100, OK), (115, BAD)],
        ["115:pending"],
        id="gap-while-inactive-is-silent",
    ),
    pytest.param(
        {},
        [*every(0, 90, BAD), (105, UNK), *every(120, 180, BAD)],
        ["0:pending", "180:firing"],
        id="short-unknown-run-pending-survives",
    ),
    pytest.param(
        {},
        [*every(0, 150, BAD), (165, UNK), (180, UNK)],
        ["0:pending"],
        id="unknown-never-fires",
    ),
    pytest.param(
        {},
        [*every(0, 90, BAD), (105, UNK), (120, UNK), *every(135, 315, BAD)],
        ["0:pending", "135:reset+pending", "315:firing"],
        id="unknown-run-uncovered-resets-on-next-known",
    ),
    pytest.param(
        {},
        [*every(0, 90, BAD), *every(105, 180, UNK), *every(195, 375, BAD)],
        ["0:pending", "135:blind+reset", "195:sight_restored+pending", "375:firing"],
        id="long-unknown-run-blind-once",
    ),
    pytest.param(
        {},
        [*every(0, 195, BAD), *every(210, 240, UNK), (255, OK)],
        ["0:pending", "180:firing", "240:blind+reset", "255:sight_restored"],
        id="blind-resets-firing",
    ),
    pytest.param(
        {},
        [*every(0, 60, UNK), (75, BAD)],
        ["45:blind", "75:sight_restored+pending"],
        id="unknown-from-first-sample",
    ),
    pytest.param(
        {},
        [(0, OK), *every(15, 60, UNK), (75, OK)],
        ["45:blind", "75:sight_restored"],
        id="blind-while-inactive",
    ),
    pytest.param(
        {"for_": 60.0},
        alternate(0, 300),
        [f"{t}:{'pending' if t % 30 == 0 else 'reset'}" for t in range(0, 301, 15)],
        id="flapping-strict-never-fires",
    ),
    pytest.param(
        {"for_": 60.0, "tolerance": 0.5},
        alternate(0, 60),
        ["0:pending", "60:firing"],
        id="flapping-tolerance-0.5-fires",
    ),
    pytest.param(
        {"for_": 60.0, "tolerance": 0.4},
        alternate(0, 300),
        ["0:pending", "60:firing"],
        id="flapping-tolerance-0.4-stays-firing",
    ),
    pytest.param(
        {"for_": 60.0, "tolerance": 0.5},
        [(0, BAD), (15, OK), (30, OK), (45, BAD)],
        ["0:pending", "30:reset", "45:pending"],
        id="tolerance-lost-resets-pending",
    ),
    pytest.param(
        {"for_": 60.0, "tolerance": 0.5},
        [*every(0, 60, BAD), *every(75, 120, OK)],
        ["0:pending", "60:firing", "105:resolved"],
        id="tolerance-lost-resolves-firing",
    ),
    pytest.param(
        {"for_": 0.0},
        [(0, OK), (15, BAD), (30, BAD), (45, OK)],
        ["15:pending+firing", "45:resolved"],
        id="for-zero-fires-on-first-breach",
    ),
    pytest.param(
        {},
        [(0, BAD), (10, BAD), (10, BAD), (180, BAD)],
        ["0:pending", "180:reset+pending"],
        id="same-time-sample-accepted",
    ),
]


@pytest.mark.parametrize(("overrides", "points", "expected"), TABLE)
def test_transitions(
    overrides: dict[str, object], points: list[Point], expected: list[str]
) -> None:
    _, verdicts = run(make_rule(**overrides), points)
    assert events(verdicts) == expected


@pytest.mark.parametrize(
    ("op", "threshold", "value", "breaching"),
    [
        (Op.GT, 0.5, 0.51, True),
        (Op.GT, 0.5, 0.5, False),
        (Op.GE, 0.5, 0.5, True),
        (Op.GE, 0.5, 0.49, False),
        (Op.LT, 0.5, 0.49, True),
        (Op.LT, 0.5, 0.5, False),
        (Op.LE, 0.5, 0.5, True),
        (Op.LE, 0.5, 0.51, False),
        (Op.EQ, 0.0, 0.0, True),
        (Op.EQ, 0.0, 1.0, False),
        (Op.NE, 1.0, 0.0, True),
        (Op.NE, 1.0, 1.0, False),
    ],
)
def test_operators_at_threshold(op: Op, threshold: float, value: float, breaching: bool) -> None:
    rule = make_rule(signal=Signal.HEALTH, op=op, threshold=threshold, for_=0.0)
    state, (verdict,) = run(rule, [(0, value)])
    assert verdict.breaching is breaching
    assert verdict.fired is breaching
    assert state.phase is (Phase.FIRING if breaching else Phase.INACTIVE)
    assert op.value in verdict.reason
    assert ("not " in verdict.reason) is not breaching


def test_phases_and_evidence_while_firing() -> None:
    rule = make_rule()
    state, verdicts = run(rule, every(0, 195, BAD))
    firing = verdicts[12]
    assert (firing.at, firing.previous, firing.phase, firing.fired) == (
        180,
        "pending",
        "firing",
        True,
    )
    assert [s.at for s in firing.evidence] == list(range(0, 181, 15))
    assert all(s.value == BAD for s in firing.evidence)
    # Still firing a sample later: no new transition, and the window slides (keeps t - for_).
    assert verdicts[13].transitions == ()
    assert verdicts[13].phase is Phase.FIRING
    assert not verdicts[13].fired
    assert [s.at for s in state.window] == list(range(15, 196, 15))
    assert state.since == 0


def test_evidence_with_tolerance_keeps_the_healthy_samples() -> None:
    rule = make_rule(for_=60.0, tolerance=0.5)
    _, verdicts = run(rule, alternate(0, 60))
    assert verdicts[-1].fired
    assert [s.value for s in verdicts[-1].evidence] == [BAD, OK, BAD, OK, BAD]
    assert verdicts[-1].reason == "error_rate 20% > 5% for 1m (3/5 samples breaching)"


@pytest.mark.parametrize(
    ("overrides", "points", "expected"),
    [
        pytest.param({}, [(0, OK)], "error_rate 1% not > 5%", id="healthy"),
        pytest.param(
            {},
            every(0, 45, BAD),
            "error_rate 20% > 5% for 45s of 3m (4/4 samples breaching)",
            id="pending",
        ),
        pytest.param(
            {"for_": 120.0},
            every(0, 120, BAD),
            "error_rate 20% > 5% for 2m (9/9 samples breaching)",
            id="firing",
        ),
        pytest.param(
            {},
            [*every(0, 90, BAD), (105, OK)],
            "error_rate 1% not > 5%; pending reset after 1m45s",
            id="reset",
        ),
        pytest.param(
            {"for_": 60.0, "tolerance": 0.5},
            [(0, BAD), (15, OK), (30, OK)],
            "error_rate 1% not > 5%; pending reset after 30s (1/3 breaching < tolerance 0.5)",
            id="tolerance-reset",
        ),
        pytest.param(
            {},
            [(0, BAD), (45, BAD)],
            "pending reset by a gap of 45s (> max_gap 30s); "
            "error_rate 20% > 5% for 0s of 3m (1/1 samples breaching)",
            id="gap",
        ),
        pytest.param(
            {},
            [(0, OK), (15, UNK)],
            "unknown (connection refused); no known sample for 15s, max_gap 30s",
            id="unknown",
        ),
        pytest.param(
            {},
            [(0, BAD), (15, UNK), (30, UNK), (45, UNK)],
            "no known sample for 45s (> max_gap 30s): connection refused; pending reset",
            id="blind",
        ),
        pytest.param(
            {},
            [(0, OK), (15, UNK), (45, UNK), (60, UNK)],
            "still blind, no known sample for 1m: connection refused",
            id="still-blind",
        ),
        pytest.param(
            {},
            [(0, OK), (45, UNK), (60, OK)],
            "sight restored after 1m; error_rate 1% not > 5%",
            id="sight-restored",
        ),
    ],
)
def test_reason(overrides: dict[str, object], points: list[Point], expected: str) -> None:
    _, verdicts = run(make_rule(**overrides), points)
    assert verdicts[-1].reason == expected


def test_unknown_reason_defaults() -> None:
    rule = make_rule()
    _, verdict = evaluate(rule, RuleState(), Sample(Signal.ERROR_RATE, 0.0, None))
    assert verdict.reason.startswith("unknown (no reason given)")
    assert verdict.breaching is None


def test_blind_flag_follows_the_run() -> None:
    _, verdicts = run(make_rule(), [(0, OK), *every(15, 75, UNK), (90, OK)])
    assert [v.blind for v in verdicts] == [False, False, False, True, True, True, False]


@pytest.mark.parametrize(
    ("points", "late"),
    [
        pytest.param([(0, BAD), (15, BAD)], (10, OK), id="known-before-last-known"),
        pytest.param([(0, BAD), (15, UNK), (30, UNK)], (10, UNK), id="unknown-before-run"),
    ],
)
def test_out_of_order_sample_is_ignored(points: list[Point], late: Point) -> None:
    rule = make_rule()
    state, _ = run(rule, points)
    after, verdict = evaluate(rule, state, sample(*late))
    assert after is state
    assert verdict.transitions == ()
    assert verdict.breaching is None
    assert (verdict.phase, verdict.previous) == (Phase.PENDING, Phase.PENDING)
    assert "out-of-order" in verdict.reason


def test_wrong_signal_raises() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        evaluate(make_rule(), RuleState(), sample(0, 1.0, Signal.HEALTH))


SEQUENCE = [*every(0, 90, BAD), (105, UNK), *every(120, 300, BAD), (315, OK), *every(330, 400, UNK)]


@pytest.mark.parametrize("split", range(len(SEQUENCE) + 1))
def test_persisted_state_behaves_like_never_persisted(split: int) -> None:
    rule = make_rule(tolerance=0.75)
    straight, expected = run(rule, SEQUENCE)
    half, first = run(rule, SEQUENCE[:split])
    restored = RuleState.from_dict(json.loads(json.dumps(half.to_dict())))
    assert restored == half
    final, second = run(rule, SEQUENCE[split:], restored)
    assert final == straight
    assert first + second == expected


def test_round_trip_keeps_the_window() -> None:
    state, _ = run(make_rule(), every(0, 60, BAD))
    data = json.loads(json.dumps(state.to_dict()))
    assert [item["at"] for item in data["window"]] == [0, 15, 30, 45, 60]
    assert data["phase"] == "pending"
    assert RuleState.from_dict(data).window == state.window


def test_from_dict_defaults() -> None:
    assert RuleState.from_dict({}) == RuleState()


def test_restart_after_a_long_time_resets_through_the_gap() -> None:
    rule = make_rule()
    state, _ = run(rule, every(0, 90, BAD))
    restored = RuleState.from_dict(state.to_dict())
    _, (verdict,) = run(rule, [(3600, BAD)], restored)
    assert verdict.transitions == (Transition.RESET, Transition.PENDING)
    assert [s.at for s in verdict.evidence] == [3600]
    _, (verdict,) = run(rule, [(3600, UNK)], restored)
    assert verdict.transitions == (Transition.BLIND, Transition.RESET)
    assert verdict.evidence == ()


@pytest.mark.parametrize(
    ("late_by", "fires_at"),
    [(0.0, 20.0), (-0.001, 19.999), (-0.05, 19.95), (0.001, 20.001)],
)
def test_millisecond_jitter_never_makes_a_rule_fire_an_interval_late(
    late_by: float, fires_at: float
) -> None:
    # for = 20s at a 2s interval: the sample in the slot at since + 20s is stamped a few
    # milliseconds off; it must fire there, not at the next slot (22s).
    rule = make_rule(for_=20.0, max_gap=4.0)
    points = [(float(t), BAD) for t in range(0, 20, 2)] + [(20.0 + late_by, BAD), (22.0, BAD)]
    _, verdicts = run(rule, points)
    assert events(verdicts) == ["0:pending", f"{fires_at:g}:firing"]


def test_the_slack_is_small_next_to_the_interval() -> None:
    rule = make_rule(for_=20.0, max_gap=4.0)  # a 2s interval: 0.2s of slack
    points = [(float(t), BAD) for t in range(0, 20, 2)] + [(19.7, BAD)]
    _, verdicts = run(rule, points)
    assert events(verdicts) == ["0:pending"]  # 0.3s short of for: not yet


# -- when a breach began: a rate's window, never before the previous (healthy) sample ---------


def rate(t: float, value: float | None, span: float | None = None, **detail: float) -> Sample:
    """An error-rate sample; ``span`` seconds of requests before ``t`` (a scrape delta)."""
    extra: dict[str, float] = dict(detail)
    if span is not None:
        extra["span_s"] = span
    return Sample(signal=Signal.ERROR_RATE, at=t, value=value, detail=extra)


def feed(rule: Rule, samples: Iterable[Sample]) -> tuple[RuleState, list[Verdict]]:
    state, verdicts = RuleState(), []
    for s in samples:
        state, verdict = evaluate(rule, state, s)
        verdicts.append(verdict)
    return state, verdicts


@pytest.mark.parametrize(
    ("samples", "since"),
    [
        # The fault (half the requests failing) began 0.5s into the [2, 4] delta, diluted there
        # to 0.375; the next delta, wholly in it, gives its level: begun 1.5s before 4s.
        ([rate(0, 0, 2), rate(2, 0, 2), rate(4, 0.375, 2), rate(6, 0.5, 2)], 2.5),
        # A baseline of 1% errors before it moves the estimate by its share (0.02 x 2 / 0.5).
        ([rate(0, OK, 2), rate(2, OK, 2), rate(4, 0.375, 2), rate(6, 0.5, 2)], 2.46),
        # It began 0.1s before the tick at 2s (0.025 there, below the threshold) and the
        # first breaching delta is whole: dated 0.1s before 2s, not from 4s.
        ([rate(0, OK, 2), rate(2, 0.025, 2), rate(4, 0.5, 2), rate(6, 0.5, 2)], 1.9),
        # A decaying fault would date it far back: never further than the healthy window's
        # excess allows (1% of a 5% threshold: a fifth of its 2s).
        ([rate(0, OK, 2), rate(2, OK, 2), rate(4, 0.5, 2), rate(6, 0.1, 2)], 1.6),
        ([rate(0, 0, 2), rate(2, 0, 2), rate(4, 0.5, 2), rate(6, 0.1, 2)], 2.0),
        # A rising one dates it no later than the first breaching sample.
        ([rate(0, 0, 2), rate(2, 0, 2), rate(4, 0.1, 2), rate(6, 0.9, 2)], 4.0 - 0.2 / 0.9),
        # A Railway step read again (its window overlaps the first): wait for a new window.
        ([rate(0, OK), rate(10, OK, step_start=0), rate(11, 0.5, step_start=10.5)], 11.0),
        # An instant (a probe, a gauge): from itself.
        ([rate(0, OK), rate(2, OK), rate(4, BAD), rate(6, BAD)], 4.0),
        # After an UNKNOWN: the missing window is not known to have been healthy.
        ([rate(0, OK, 2), rate(2, UNK, 2), rate(4, 0.25, 2), rate(6, 0.5, 2)], 3.0),
    ],
)
def test_a_breach_is_dated_from_when_the_fault_began(samples: list[Sample], since: float) -> None:
    state, _ = feed(make_rule(for_=20.0, max_gap=4.0), samples)
    assert state.phase is Phase.PENDING
    assert state.since == pytest.approx(since)


@pytest.mark.parametrize("fault", [0.05, 0.3, 0.9, 1.5, 1.9, 1.95, 1.999])
def test_a_fault_fires_within_for_and_one_interval_and_never_before_for(fault: float) -> None:
    # for = 20s at a 2s interval; half the requests fail from `fault` on. Each delta holds the
    # share of its 2s the fault covered; the one just after the fault may be diluted below the
    # threshold (a fault just before a tick), and then the next delta is the first breach.
    rule = make_rule(for_=20.0, max_gap=4.0)

    def delta(t: float) -> float:
        return 0.5 * min(2.0, max(0.0, t - fault)) / 2.0

    _, verdicts = feed(rule, [rate(t, delta(t), 2) for t in range(0, 40, 2)])
    (fired,) = [v.at for v in verdicts if Transition.FIRING in v.transitions]
    assert 20.0 - for_slack(4.0) <= fired - fault <= 22.0


def test_twenty_seconds_of_breach_evidence_are_needed_not_less() -> None:
    # Ten 2s deltas cover [2, 22]: exactly `for`; nine (to 20s) do not fire.
    rule = make_rule(for_=20.0, max_gap=4.0)
    samples = [rate(0, OK, 2), rate(2, OK, 2)] + [rate(t, BAD, 2) for t in range(4, 22, 2)]
    state, _ = feed(rule, samples)
    assert state.phase is Phase.PENDING
    state, _ = evaluate(rule, state, rate(22, BAD, 2))
    assert state.phase is Phase.FIRING


# -- idle: nothing to measure by design (a sleeping service) ----------------------------------


def idle(t: float) -> Sample:
    return Sample(Signal.ERROR_RATE, t, None, "service is sleeping", idle=True)


def test_an_idle_run_never_goes_blind_and_the_next_sample_starts_afresh() -> None:
    rule = make_rule(for_=20.0, max_gap=4.0)
    state, verdicts = feed(rule, [rate(0, BAD), *(idle(t) for t in range(2, 60, 2))])
    assert all(not v.transitions for v in verdicts[2:])
    assert not state.blind
    assert state == RuleState()
    # Awake: an UNKNOWN does not count the sleep as silence; a breach starts from itself.
    state, verdict = evaluate(rule, state, rate(60, UNK))
    assert not verdict.transitions
    state, verdict = evaluate(rule, state, rate(62, BAD, 2))
    assert verdict.transitions == (Transition.PENDING,)
    assert state.since == 62.0


def test_falling_asleep_ends_what_the_rule_held() -> None:
    rule = make_rule(for_=4.0, max_gap=4.0)
    firing, _ = feed(rule, [rate(t, BAD) for t in range(0, 8, 2)])
    assert firing.phase is Phase.FIRING
    state, verdict = evaluate(rule, firing, idle(8))
    assert verdict.transitions == (Transition.RESET,)
    assert (state.phase, verdict.previous) == (Phase.INACTIVE, Phase.FIRING)
    blind, _ = feed(rule, [rate(0, OK), rate(2, UNK), rate(10, UNK)])
    assert blind.blind
    state, verdict = evaluate(rule, blind, idle(12))
    assert verdict.transitions == (Transition.SIGHT_RESTORED,)
    assert not state.blind
    assert "service is sleeping" in verdict.reason


def test_an_idle_sample_round_trips() -> None:
    sample = idle(3)
    assert Sample.from_dict(sample.to_dict()) == sample
    assert "idle" not in rate(3, OK).to_dict()


def test_only_an_error_rate_is_dated_from_its_onset() -> None:
    # A level (memory, a quantile) does not dilute from zero: a windowed memory sample after a
    # healthy one dates its breach from itself.
    rule = make_rule(signal=Signal.MEMORY, threshold=0.9, for_=20.0, max_gap=4.0)

    def memory(t: float, value: float) -> Sample:
        return Sample(Signal.MEMORY, t, value, detail={"span_s": 2.0})

    state, _ = feed(rule, [memory(0, 0.5), memory(2, 0.5), memory(4, 0.95), memory(6, 0.95)])
    assert (state.phase, state.since) == (Phase.PENDING, 4.0)


# -- baseline rules: each sample compared with the previous known-good release's record


def _counted(t: float, value: float | None, requests: float = 5000.0) -> Sample:
    detail = {"requests": requests, "errors": (value or 0.0) * requests, "span_s": 15.0}
    return Sample(Signal.ERROR_RATE, t, value, detail=detail)


def _regression(**overrides: object) -> Rule:
    fields: dict[str, object] = {"threshold": 0.01, "baseline": Baseline(2.0, 200, 0.95)}
    fields.update(overrides)
    return make_rule(for_=60.0, **fields)


BASE = Reference("v1 (abc1234)", 0.001, 100_000.0, 100.0)


def _feed(rule: Rule, points: Iterable[Point], reference: Reference | None) -> list[Verdict]:
    state, verdicts = RuleState(), []
    for t, value in points:
        state, verdict = evaluate(rule, state, _counted(t, value), reference)
        verdicts.append(verdict)
    return verdicts


def test_a_baseline_rule_fires_on_a_regression_and_explains_it() -> None:
    verdicts = _feed(_regression(), every(0, 60, 0.02), BASE)
    assert verdicts[-1].fired
    assert (
        "error rate 2% vs baseline 0.1% (20x, 5,000 requests) above 2x the baseline of v1 (abc1234)"
        in (verdicts[-1].reason)
    )
    mark = verdicts[-1].evidence[-1].detail["vs_baseline"]
    assert mark["breaching"] is True
    assert mark["baseline"]["release"] == "v1 (abc1234)"


def test_a_rate_like_its_baseline_is_healthy_even_above_the_floor() -> None:
    same = Reference("v1", 0.03, 100_000.0, 3000.0)
    verdicts = _feed(_regression(), every(0, 300, 0.03), same)
    assert all(v.phase is Phase.INACTIVE and v.breaching is False for v in verdicts)


def test_without_a_baseline_a_baseline_rule_rests_never_breaching() -> None:
    verdicts = _feed(_regression(), every(0, 300, 0.5), None)
    assert all(v.phase is Phase.INACTIVE and v.breaching is None for v in verdicts)
    assert "no baseline yet" in verdicts[0].reason
    # Nothing to compare with is no outage of sight: never blind (the release may bake).
    assert not any(v.blind for v in verdicts)
    thin = Reference("v1", 0.001, 150.0, 0.15)
    assert not any(v.blind or v.breaching for v in _feed(_regression(), every(0, 300, 0.5), thin))


def test_too_few_requests_for_the_comparison_is_unknown() -> None:
    rule, state = _regression(), RuleState()
    for t in (0.0, 15.0, 30.0, 45.0):
        state, verdict = evaluate(rule, state, _counted(t, 0.5, requests=50), BASE)
        assert verdict.breaching is None
    assert verdict.blind
    assert "too few requests to compare with the baseline: 50 < min_requests 200" in (
        verdict.reason
    )


def test_under_the_floor_needs_no_baseline() -> None:
    # 0.5% is under the rule's 1% whatever the baseline says: a known, healthy sample.
    verdicts = _feed(_regression(), every(0, 60, 0.005), None)
    assert all(v.breaching is False and not v.blind for v in verdicts)


def test_a_tolerant_baseline_rule_counts_the_comparisons() -> None:
    rule = _regression(tolerance=0.5)
    points = [(t, 0.02 if i % 2 == 0 else 0.0015) for i, (t, _) in enumerate(every(0, 90, 0.0))]
    verdicts = _feed(rule, points, BASE)
    assert any(v.fired for v in verdicts)  # half of them regress: enough at tolerance 0.5
    strict = _feed(_regression(), points, BASE)
    assert not any(v.fired for v in strict)


def test_a_baseline_rule_is_not_dated_from_an_onset_estimate() -> None:
    rule = _regression()
    state = RuleState()
    for t, value in ((0.0, 0.0015), (15.0, 0.008), (30.0, 0.03)):
        state, _ = evaluate(rule, state, _counted(t, value), BASE)
    assert state.phase is Phase.PENDING
    assert state.since == 30.0  # the first breaching sample, not a moment before it
    assert state.lead is None


def test_a_latency_rule_compares_durations() -> None:
    rule = make_rule(
        signal=Signal.LATENCY_P95, threshold=None, baseline=Baseline(1.5, 100), for_=30.0
    )
    reference = Reference("v1", 0.24, 50_000.0)
    state, verdicts = RuleState(), []
    for t, value in every(0, 30, 0.72):
        sample = Sample(Signal.LATENCY_P95, t, value, detail={"requests": 1940})
        state, verdict = evaluate(rule, state, sample, reference)
        verdicts.append(verdict)
    assert verdicts[-1].fired
    assert "p95 720ms vs baseline 240ms (3x, 1,940 requests)" in verdicts[-1].reason
    assert rule.describe() == "latency_p95 > 1.5x baseline for 30s"
