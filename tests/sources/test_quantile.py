"""Histogram quantiles between two scrapes: a table, properties, and the real Prometheus."""

from __future__ import annotations

import itertools
import json
import math
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from monitor.sources.quantile import Buckets, Quantile, bucket_quantile, buckets, quantile
from tests.prometheus_fixture import START, backfilled

NAME = "latency_seconds"
INF = math.inf

Series = Mapping[str, float]
"""One label set's buckets as the exposition writes them: ``le`` -> cumulative count."""


def exposition(*series: tuple[str, Series]) -> str:
    """A text exposition of histogram ``NAME``: one (labels, buckets) pair per series."""
    lines = [f"# TYPE {NAME} histogram"]
    for labels, counts in series:
        sep = "," if labels else ""
        lines += [f'{NAME}_bucket{{{labels}{sep}le="{le}"}} {n}' for le, n in counts.items()]
    return "\n".join(lines) + "\n"


def scrape(text: str, wanted: tuple[tuple[str, str], ...] = ()) -> Buckets | str:
    """What the exposition source would hand :func:`quantile`: the parsed ``_bucket`` samples."""
    samples = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == NAME + "_bucket"
    ]
    return buckets(samples, wanted)


def between(q: float, before: Series, after: Series) -> Quantile:
    return quantile(q, NAME, scrape(exposition(("", before))), scrape(exposition(("", after))))


# -- the table --------------------------------------------------------------------------------

ZERO = {"0.1": 0, "0.5": 0, "1": 0, "+Inf": 0}
# 100 observations between the scrapes: 50 up to 0.1 s, 40 in 0.1..0.5, 8 in 0.5..1, 2 above.
GROWN = {"0.1": 50, "0.5": 90, "1": 98, "+Inf": 100}


@pytest.mark.parametrize(
    ("q", "before", "after", "expected"),
    [
        # Linear interpolation within the bucket the rank falls in; the first bucket from 0.
        (0.5, ZERO, GROWN, Quantile(0.1, "", 100)),
        (0.25, ZERO, GROWN, Quantile(0.05, "", 100)),
        (0.7, ZERO, GROWN, Quantile(0.1 + 0.4 * (20 / 40), "", 100)),
        (0.95, ZERO, GROWN, Quantile(0.5 + 0.5 * (5 / 8), "", 100)),
        # In the +Inf bucket: the highest finite bound.
        (0.99, ZERO, GROWN, Quantile(1.0, "", 100)),
        # Only the deltas count: what came before the first scrape is not part of it.
        (0.5, GROWN, {"0.1": 55, "0.5": 100, "1": 110, "+Inf": 112}, Quantile(0.18, "", 12)),
        # Buckets in any order, and any spelling of a bound, are sorted by value.
        (0.5, ZERO, {"+Inf": 4, "1.0": 4, "5e-1": 2, "0.1": 0}, Quantile(0.5, "", 4)),
        # A first bound at or below 0 is the answer when the rank falls in it.
        (0.5, {"0": 0, "1": 0, "+Inf": 0}, {"0": 3, "1": 4, "+Inf": 4}, Quantile(0.0, "", 4)),
        # Non-monotonic counts are forced up, as Prometheus does (its ensureMonotonic).
        (0.5, ZERO, {"0.1": 6, "0.5": 2, "1": 10, "+Inf": 10}, Quantile(0.1 * 5 / 6, "", 10)),
        (0.5, ZERO, {"0.1": 0, "0.5": 10, "1": 10, "+Inf": 4}, Quantile(0.3, "", 10)),
        (0.5, ZERO, ZERO, Quantile(None, "no observations between the scrapes", 0)),
        (0.5, GROWN, GROWN, Quantile(None, "no observations between the scrapes", 0)),
        (
            0.5,
            {"+Inf": 0},
            {"+Inf": 5},
            Quantile(None, "only a +Inf bucket: nothing to interpolate in", 5),
        ),
        (
            0.5,
            {"0.1": 0, "1": 0},
            {"0.1": 1, "1": 2},
            Quantile(None, f"{NAME} has no +Inf bucket"),
        ),
        (
            0.5,
            GROWN,
            {"0.1": 40, "0.5": 95, "1": 99, "+Inf": 101},
            Quantile(None, f'counter reset: {NAME}{{le="0.1"}} went down'),
        ),
        (
            0.5,
            GROWN,
            {"0.1": 50, "1": 99, "+Inf": 101},
            Quantile(None, f'a missing bucket beside present ones: {NAME}{{le="0.5"}} is gone'),
        ),
        (
            0.5,
            {},
            {},
            Quantile(None, f"no {NAME} series in the exposition"),
        ),
    ],
)
def test_quantile_between_two_scrapes(
    q: float, before: Series, after: Series, expected: Quantile
) -> None:
    got = between(q, before, after)
    assert got.reason == expected.reason
    assert got.observations == expected.observations
    if expected.value is None:
        assert got.value is None
    else:
        assert got.value == pytest.approx(expected.value, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f'{NAME}_bucket{{le="0.1"}} NaN', f'{NAME}_bucket{{le="0.1"}} is NaN'),
        (f'{NAME}_bucket{{le="0.1"}} +Inf', f'{NAME}_bucket{{le="0.1"}} is +Inf'),
        (
            f'{NAME}_bucket{{le="0.1"}} -3',
            f'{NAME}_bucket{{le="0.1"}} is negative (-3): not a bucket count',
        ),
        (
            f'{NAME}_bucket{{le="0.1"}} 1e300',
            f'{NAME}_bucket{{le="0.1"}} is 1e+300, past any plausible bucket count'
            " (at most 9.0072e+15)",
        ),
        (
            f'{NAME}_bucket{{le="0.1"}} 1\n{NAME}_bucket{{le="0.10"}} 2',
            f'duplicate bucket {NAME}_bucket{{le="0.10"}} in the exposition',
        ),
        (
            f'{NAME}_bucket{{le="+Inf"}} 1\n{NAME}_bucket{{le="Inf"}} 2',
            f'duplicate bucket {NAME}_bucket{{le="Inf"}} in the exposition',
        ),
        (
            f'{NAME}_bucket{{le="fast"}} 1',
            f"{NAME}_bucket{{le=\"fast\"}} has an le that is not a bound: 'fast'",
        ),
        (f'{NAME}_bucket{{le="NaN"}} 1', f'{NAME}_bucket{{le="NaN"}} has an le that is not'),
        (f'{NAME}_bucket{{le="-Inf"}} 1', f'{NAME}_bucket{{le="-Inf"}} has an le that is not'),
        (f'{NAME}_bucket{{le="1_0"}} 1', f'{NAME}_bucket{{le="1_0"}} has an le that is not'),
        (f'{NAME}_bucket{{le=" 1"}} 1', f'{NAME}_bucket{{le=" 1"}} has an le that is not'),
        (f'{NAME}_bucket{{code="200"}} 1', f'{NAME}_bucket{{code="200"}} has no le label'),
    ],
)
def test_garbage_is_unknown_naming_the_series(text: str, reason: str) -> None:
    garbage = scrape(f"# TYPE {NAME} histogram\n{text}\n")
    assert isinstance(garbage, str)
    assert garbage.startswith(reason)
    good = scrape(exposition(("", GROWN)))
    # Garbage in either scrape makes the quantile unknown, with the same reason.
    assert quantile(0.5, NAME, garbage, good) == Quantile(None, garbage)
    assert quantile(0.5, NAME, good, garbage) == Quantile(None, garbage)


def test_label_sets_are_summed_and_each_must_stay() -> None:
    a = {"0.1": 10, "1": 10, "+Inf": 10}
    b = {"0.1": 0, "1": 10, "+Inf": 10}
    zero = {"0.1": 0, "1": 0, "+Inf": 0}
    before = scrape(exposition(('handler="a"', zero), ('handler="b"', zero)))
    after = scrape(exposition(('handler="a"', a), ('handler="b"', b)))
    # sum by (le): 10 up to 0.1, 20 up to 1.
    summed = quantile(0.75, NAME, before, after)
    assert (summed.value, summed.observations) == (pytest.approx(0.55), 20)
    # ``labels`` of the source select one of them.
    only_b = (("handler", "b"),)
    picked = quantile(0.5, NAME, scrape(exposition(('handler="b"', zero)), only_b), after)
    assert picked.observations == 20  # unfiltered ``after``: both, a new series counts whole
    filtered = scrape(exposition(('handler="a"', a), ('handler="b"', b)), only_b)
    assert quantile(0.5, NAME, before, filtered).reason == (
        f'a missing series beside present ones: {NAME}{{handler="a"}} is gone'
    )
    # A counter reset in one label set is not hidden by growth in another.
    reset = scrape(exposition(('handler="a"', a), ('handler="b"', zero)))
    assert quantile(0.5, NAME, after, reset).reason == (
        f'counter reset: {NAME}{{handler="b",le="1"}} went down'
    )
    # Each label set needs its own +Inf bucket: without it, its observations are not counted.
    no_inf = scrape(exposition(('handler="a"', a), ('handler="b"', {"0.1": 1, "1": 2})))
    assert quantile(0.5, NAME, before, no_inf).reason == (
        f'{NAME}{{handler="b"}} has no +Inf bucket'
    )


@pytest.mark.parametrize("q", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_q_outside_the_open_unit_interval_is_a_programming_error(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        bucket_quantile(q, {1.0: 1, INF: 1})


# -- properties -------------------------------------------------------------------------------

bounds = st.lists(
    st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), min_size=1, max_size=12, unique=True
)
quantiles = st.floats(min_value=1e-6, max_value=1 - 1e-6)


@st.composite
def histograms(draw: st.DrawFn) -> dict[float, float]:
    """Cumulative counts (possibly non-monotonic, as a torn read makes them) by bound."""
    upper = draw(bounds)
    counts = draw(st.lists(st.integers(0, 10**6), min_size=len(upper) + 1, max_size=len(upper) + 1))
    return dict(zip([*upper, INF], map(float, counts), strict=True))


@given(histograms(), quantiles)
def test_quantile_lies_within_zero_and_the_highest_finite_bound(
    cumulative: dict[float, float], q: float
) -> None:
    result = bucket_quantile(q, cumulative)
    if result.value is None:
        assert result.observations == 0 or len(cumulative) < 2
        return
    assert 0 <= result.value <= max(b for b in cumulative if b != INF)
    assert result.observations == max(cumulative.values())


@given(histograms(), quantiles, quantiles)
def test_quantile_is_monotone_in_q(cumulative: dict[float, float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    a, b = bucket_quantile(low, cumulative), bucket_quantile(high, cumulative)
    assert (a.value is None) == (b.value is None)
    if a.value is not None and b.value is not None:
        # 1 ulp of slack: interpolation in adjacent buckets meets at the shared bound.
        assert a.value <= b.value * (1 + 1e-15)


@given(histograms(), quantiles, st.integers(2, 1000))
def test_quantile_ignores_a_common_scale(
    cumulative: dict[float, float], q: float, factor: int
) -> None:
    # Why comparing with Prometheus' extrapolated rate() is exact enough (below).
    a = bucket_quantile(q, cumulative)
    b = bucket_quantile(q, {k: v * factor for k, v in cumulative.items()})
    if a.value is None or b.value is None:
        assert a.value is b.value is None
    else:
        assert b.value == pytest.approx(a.value, rel=1e-9, abs=1e-12)


# -- against the real Prometheus --------------------------------------------------------------

STEP = 60
BOUNDS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf")
# Per case and label set: the observations per bucket (not cumulative) between the scrapes.
CASES: dict[str, dict[str, tuple[int, ...]]] = {
    "spread": {"": (3, 7, 20, 40, 80, 30, 9, 6, 3, 1, 1, 0)},
    "tail": {"": (0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10, 30)},
    "fast": {"": (50, 30, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
    "first": {"": (100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)},
    # Buckets read at different moments: the cumulative deltas go down (10, 6, 8, ...), and
    # both force them up to 10 (ensureMonotonic).
    "torn": {"": (10, -4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
    "summed": {
        'handler="a"': (0, 0, 0, 5, 5, 5, 5, 5, 0, 0, 0, 0),
        'handler="b"': (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 40),
    },
}
# The first scrape's history: a service that has run a while, every count well above what
# the step adds to it (see test_prometheus_agrees for why).
HISTORY = tuple(1000 * (i + 1) for i in range(len(BOUNDS)))


def case_scrapes(case: str) -> tuple[list[tuple[str, dict[str, float]]], ...]:
    """The two scrapes of ``case``: per label set, ``le`` -> cumulative count."""
    before, after = [], []
    for labels, delta in CASES[case].items():
        second = [f + d for f, d in zip(HISTORY, itertools.accumulate(delta), strict=True)]
        before.append((labels, dict(zip(BOUNDS, map(float, HISTORY), strict=True))))
        after.append((labels, dict(zip(BOUNDS, map(float, second), strict=True))))
    return before, after


def backfill() -> str:
    """Both scrapes of every case, ``STEP`` apart, as OpenMetrics for promtool."""
    lines = [f"# TYPE {NAME} histogram", f"# HELP {NAME} Request latency."]
    for case in CASES:
        for at, scrape_ in zip((START, START + STEP), case_scrapes(case), strict=True):
            for labels, counts in scrape_:
                extra = f'case="{case}"' + (f",{labels}" if labels else "")
                lines += [
                    f'{NAME}_bucket{{{extra},le="{le}"}} {n:g} {at}' for le, n in counts.items()
                ]
                lines.append(f"{NAME}_count{{{extra}}} {counts['+Inf']:g} {at}")
                lines.append(f"{NAME}_sum{{{extra}}} 0 {at}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with backfilled(tmp_path_factory.mktemp("prometheus-histograms"), backfill()) as url:
        yield url


def instant(url: str, query: str, at: float) -> float:
    """The one value ``query`` returns at ``at`` (Prometheus writes floats exactly)."""
    params = urllib.parse.urlencode({"query": query, "time": at})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{url}/api/v1/query?{params}", timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    (series,) = body["data"]["result"]
    return float(series["value"][1])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_prometheus_agrees(prometheus_url: str, case: str, q: float) -> None:
    before, after = case_scrapes(case)
    ours = quantile(q, NAME, scrape(exposition(*before)), scrape(exposition(*after)))
    assert ours.value is not None, ours.reason
    at = START + STEP
    selector = f'{NAME}_bucket{{case="{case}"}}'
    # The exact sample pair: each bucket's value at the second scrape minus its value at the
    # first, the deltas this module computes; the same float operations in the same order,
    # so the answers agree to the last bit (1e-12 leaves room for a fused multiply-add).
    exact = f"histogram_quantile({q}, sum by (le) ({selector} - {selector} offset {STEP}s))"
    assert instant(prometheus_url, exact, at) == pytest.approx(ours.value, rel=1e-12)
    # rate() as dashboards write it. Over 90 s it sees both samples, 30 s after the range
    # starts, and extrapolates that half interval: every delta is scaled by (60 + 30) / 60 /
    # 90 alike, because every bucket was sampled at the same instants and none is clamped at
    # its zero point (each first count is at least its delta). histogram_quantile is
    # invariant to a common scale (test_quantile_ignores_a_common_scale), so only rounding
    # separates the two answers: 1e-9 relative bounds it with a wide margin.
    rate = f"histogram_quantile({q}, sum by (le) (rate({selector}[90s])))"
    assert instant(prometheus_url, rate, at) == pytest.approx(ours.value, rel=1e-9)
