"""Histogram quantiles from two scrapes of an app's exposition, as PromQL computes them.

The bucket counts a scrape returns are cumulative since the process started; the quantile of
what happened *between* two scrapes comes from their deltas, interpolated within the bucket
the rank falls in, exactly as Prometheus' ``histogram_quantile`` does (promql/quantile.go,
``bucketQuantile``). Whatever keeps the quantile from being known (garbage in a series, no
``+Inf`` bucket, a counter reset, no observations) is a reason, never a number.

Not a signal yet (issue 13): the latency signal will be built on :func:`quantile`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.samples import Sample as PromSample

from monitor.sources.exposition_checks import MAX_COUNTER, number_problem, series_text

Labels = frozenset[tuple[str, str]]
"""A histogram series' labels other than ``le``."""
Buckets = dict[Labels, dict[float, float]]
"""One scrape: per label set, the cumulative count by upper bound."""

# What Go's strconv.ParseFloat reads as an upper bound, without its hex and underscore forms
# (no client library writes them) and without NaN or a negative infinity (never a bound).
_BOUND = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|\+?[Ii]nf(?:inity)?")


@dataclass(frozen=True, slots=True)
class Quantile:
    """A quantile of the observations between two scrapes, or why there is none.

    ``observations`` is how many the quantile is computed from (0 when unknown), so a rule
    can ask for a minimum before it trusts the value.
    """

    value: float | None
    reason: str = ""
    observations: float = 0.0


def _bound(le: str) -> float | None:
    return float(le) if _BOUND.fullmatch(le) else None


def buckets(samples: Iterable[PromSample], wanted: Sequence[tuple[str, str]] = ()) -> Buckets | str:
    """The ``*_bucket`` samples matching ``wanted``, by label set and bound; or a reason.

    A count that is no counter (NaN, infinite, negative, huge), an ``le`` that is no number
    or is missing, and a bucket exposed twice each make the whole scrape unusable.
    """
    found: Buckets = {}
    for sample in samples:
        labels = sample.labels
        if any(labels.get(name) != value for name, value in wanted):
            continue
        series = series_text(sample.name, labels)
        le = labels.get("le")
        if le is None:
            return f"{series} has no le label"
        bound = _bound(le)
        if bound is None:
            return f"{series} has an le that is not a bound: {le[:40]!r}"
        problem = number_problem(sample, MAX_COUNTER, "bucket count")
        if problem:
            return problem
        rest = frozenset((k, v) for k, v in labels.items() if k != "le")
        counts = found.setdefault(rest, {})
        # "1" and "1.0" are the same bucket: which of the two is true is unknowable.
        if bound in counts:
            return f"duplicate bucket {series} in the exposition"
        counts[bound] = sample.value
    return found


def _inf_missing(name: str, scrape: Buckets) -> str:
    for labels, counts in scrape.items():
        if math.inf not in counts:
            shown = series_text(name, dict(sorted(labels)))
            return f"{shown} has no +Inf bucket"
    return ""


def increase(name: str, before: Buckets, after: Buckets) -> dict[float, float] | str:
    """Observations per bucket (cumulative) between two scrapes, summed over label sets.

    A bucket that went down is a restart (a counter reset) and one that disappeared leaves
    the rest meaningless: both are reasons. A label set new in ``after`` counts whole, as
    a new requests series does for the error rate.
    """
    problem = _inf_missing(name, before) or _inf_missing(name, after)
    if problem:
        return problem
    total: dict[float, float] = {}
    for labels, counts in after.items():
        earlier = before.get(labels, {})
        shown = dict(sorted(labels))
        lost = next((b for b in earlier if b not in counts), None)
        if lost is not None:
            bucket = series_text(name, shown | {"le": _show_bound(lost)})
            return f"a missing bucket beside present ones: {bucket} is gone"
        for bound, count in counts.items():
            delta = count - earlier.get(bound, 0.0)
            if delta < 0:
                down = series_text(name, shown | {"le": _show_bound(bound)})
                return f"counter reset: {down} went down"
            total[bound] = total.get(bound, 0.0) + delta
    vanished = next((labels for labels in before if labels not in after), None)
    if vanished is not None:
        shown = dict(sorted(vanished))
        return f"a missing series beside present ones: {series_text(name, shown)} is gone"
    if not total:
        return f"no {name} series in the exposition"
    return total


def _show_bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else f"{bound:g}"


def bucket_quantile(q: float, cumulative: Mapping[float, float]) -> Quantile:
    """The ``q``-quantile (0 < q < 1) of cumulative bucket counts, as PromQL computes it."""
    if not 0 < q < 1:
        raise ValueError(f"a quantile is between 0 and 1 (exclusive), not {q!r}")
    bounds = sorted(cumulative)
    if not bounds or bounds[-1] != math.inf:
        return Quantile(None, "no +Inf bucket")
    # Prometheus forces the counts to be non-decreasing (ensureMonotonic): buckets read at
    # slightly different moments can disagree by the observations that came in between.
    # Newer versions first also flatten steps under 1e-12 relative (float noise from sums
    # of rates): between whole counts that takes over 10**12 observations in one step.
    counts: list[float] = []
    highest = -math.inf
    for bound in bounds:
        highest = max(highest, cumulative[bound])
        counts.append(highest)
    observations = counts[-1]
    if len(bounds) < 2:
        return Quantile(None, "only a +Inf bucket: nothing to interpolate in", observations)
    if observations == 0:
        return Quantile(None, "no observations between the scrapes", 0.0)
    rank = q * observations
    # sort.Search over all but the +Inf bucket: the first whose count reaches the rank.
    b = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(counts) - 1)
    if b == len(counts) - 1:
        return Quantile(bounds[-2], observations=observations)
    if b == 0 and bounds[0] <= 0:
        return Quantile(bounds[0], observations=observations)
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    # The same operations in the same order as Go's, so the float result is the same.
    return Quantile(start + (end - start) * (rank / count), observations=observations)


def quantile(q: float, name: str, before: Buckets | str, after: Buckets | str) -> Quantile:
    """The ``q``-quantile of what histogram ``name`` observed between two scrapes."""
    if isinstance(before, str):
        return Quantile(None, before)
    if isinstance(after, str):
        return Quantile(None, after)
    cumulative = increase(name, before, after)
    if isinstance(cumulative, str):
        return Quantile(None, cumulative)
    return bucket_quantile(q, cumulative)
