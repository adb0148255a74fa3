"""Checks on the numbers an app's exposition hands railguard, before any arithmetic on them.

Every value the exposition readers use passes through here: a NaN, an infinity, a negative
or absurdly large counter or gauge, a series exposed twice, a name the text format does not
allow. Each problem comes back as a reason naming the series and what is wrong with it, and
the reader makes the step UNKNOWN with it, never a number. :func:`value_problem` is the last
check on every ratio a source produces (the promql source and the Railway poller use it too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.samples import Sample as PromSample

from monitor.model import Signal

MAX_SERIES = 100_000
"""More samples than this in one exposition is not an app's /metrics (and costs seconds)."""
MAX_COUNTER = float(2**53)
"""Past this a float counter can no longer count by one: no real requests counter gets here."""
MAX_BYTES = float(2**60)
"""1 EiB: a memory usage or limit above it is garbage, not a measurement."""
MAX_MEMORY_RATIO = 1000.0
"""Usage may exceed the limit briefly, but not a thousandfold: such a ratio is garbage."""

MAX_LATENCY = 86400.0
"""A request quantile over a day is garbage, not a measurement (no client waits that long)."""

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

Key = tuple[str, frozenset[tuple[str, str]]]
"""One requests series: (its status label's value, all its labels)."""


def show(value: float) -> str:
    """``NaN``, ``+Inf``, ``-Inf`` as Prometheus writes them; other numbers as ``%g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def series_text(name: str, labels: Mapping[str, str]) -> str:
    """``http_requests_total{code="200"}``: a series as the exposition writes it."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def name_problem(name: str) -> str:
    """Why a sample's name is not a metric name (the parser lets some through), or ""."""
    if _METRIC_NAME.fullmatch(name):
        return ""
    return f"invalid metric name {name[:80]!r}"


def number_problem(sample: PromSample, ceiling: float, what: str) -> str:
    """Why ``sample``'s value cannot be a ``what`` (NaN, infinite, negative, huge), or ""."""
    value = sample.value
    if math.isfinite(value) and 0 <= value <= ceiling:
        return ""
    series = series_text(sample.name, sample.labels)
    if not math.isfinite(value):
        return f"{series} is {show(value)}"
    if value < 0:
        return f"{series} is negative ({value:g}): not a {what}"
    return f"{series} is {value:g}, past any plausible {what} (at most {ceiling:g})"


def _matches(sample: PromSample, wanted: Sequence[tuple[str, str]]) -> bool:
    labels = sample.labels
    return all(labels.get(name) == value for name, value in wanted)


def counters(
    samples: Iterable[PromSample], wanted: Sequence[tuple[str, str]], status_label: str
) -> dict[Key, float] | str:
    """The requests series that match ``wanted``, by key; or why the scrape cannot count.

    A series exposed twice (under the same or the other ``_total`` spelling) is refused
    rather than summed or overwritten: which of them is true is unknowable.
    """
    current: dict[Key, float] = {}
    for sample in samples:
        if wanted and not _matches(sample, wanted):
            continue
        problem = number_problem(sample, MAX_COUNTER, "requests counter")
        if problem:
            return problem
        labels = sample.labels
        key = (labels.get(status_label, ""), frozenset(labels.items()))
        if key in current:
            return f"duplicate series {series_text(sample.name, labels)} in the exposition"
        current[key] = sample.value
    return current


def gauge_sum(
    samples: Iterable[PromSample], wanted: Sequence[tuple[str, str]], what: str
) -> float | str | None:
    """The sum of the matching byte gauges; None when none matches; a reason on garbage."""
    seen: set[frozenset[tuple[str, str]]] = set()
    values: list[float] = []
    for sample in samples:
        if wanted and not _matches(sample, wanted):
            continue
        problem = number_problem(sample, MAX_BYTES, what)
        if problem:
            return problem
        labels = frozenset(sample.labels.items())
        if labels in seen:
            return f"duplicate series {series_text(sample.name, sample.labels)} in the exposition"
        seen.add(labels)
        values.append(sample.value)
    if not values:
        return None
    total = math.fsum(values)
    if total > MAX_BYTES:
        return f"{what} sums to {total:g} bytes, past any plausible size (at most {MAX_BYTES:g})"
    return total


def value_problem(signal: Signal, value: float) -> str:
    """Why ``value`` cannot be a sample of ``signal`` (outside its range, absurd), or ""."""
    if not math.isfinite(value):
        return f"{signal} would be {show(value)}"
    low, high = signal.bounds
    if signal is Signal.MEMORY:
        high = min(high, MAX_MEMORY_RATIO)
    elif signal.quantile is not None:
        high = min(high, MAX_LATENCY)
    if low <= value <= high:
        return ""
    return f"{signal} would be {value:g}, outside {low:g}..{high:g}"
