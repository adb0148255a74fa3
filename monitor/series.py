"""Metric families kept as plain numbers, rendered to Prometheus' text format in slices.

prometheus_client keeps each series as a child object behind a lock, and at every scrape
builds each sample as a tuple with a fresh dict of labels, sorts and escapes the labels and
formats the line. At 5,000 services (20,000 series) that is 170 ms of CPU holding the GIL,
on a thread or not, and the probe ticks wait for it. Here a series is a small object
holding its numbers and its label text, formatted once (at the first scrape that shows it);
a scrape joins ``label text + value`` lines, about 11 ms at 5,000 services, and gives the
event loop a turn every 2 ms (:func:`render`).

The families are also prometheus_client collectors, so ``registry.collect()``,
``get_sample_value`` and ``generate_latest`` see the same series with the same names, types,
help and labels (tests and benches read them that way; :func:`render` writes the same text
as ``generate_latest``).

Series are updated and read on the event loop only, as everything in railguard that counts
does; they take no lock.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

SLICE = 0.002  # seconds of rendering before the loop gets a turn
CHECK_EVERY = 200  # series rendered between two looks at the time


def number(value: float) -> str:
    """A value as the text format writes it (prometheus_client's ``floatToGoString``)."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape(value: str) -> str:
    """A label value as the text format quotes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``{a="1",b="2"}`` with the labels sorted by name (as ``generate_latest`` writes
    them), or nothing for no labels."""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in sorted(pairs))
    return "{" + inner + "}" if inner else ""


class Series:
    """One series (or a histogram's group of lines): its numbers and its label text.

    The label text is formatted at the first scrape that shows the series, not when it is
    created: a request creating thousands of series at once (the first scrape's
    ``railguard_frozen``) then costs a few milliseconds, and the formatting happens in the
    scrape's slices."""

    __slots__ = ("_prefix", "labels", "name")

    def __init__(self, family: Family[Any], values: tuple[str, ...]) -> None:
        self.name = family.sample_name
        self.labels = dict(zip(family.labelnames, values, strict=True))
        self._prefix: str | None = None

    @property
    def prefix(self) -> str:
        """``name{labels} ``, the start of the series' line."""
        if self._prefix is None:
            self._prefix = self.name + label_text(self.labels.items()) + " "
        return self._prefix

    def lines(self, out: list[str]) -> None:
        """Append this series' exposition lines to ``out``."""
        raise NotImplementedError

    def add_samples(self, metric: Metric, name: str) -> None:
        """Add this series' samples to a prometheus_client family."""
        raise NotImplementedError


class CounterSeries(Series):
    """A number that only goes up."""

    __slots__ = ("value",)

    def __init__(self, family: Family[Any], values: tuple[str, ...]) -> None:
        super().__init__(family, values)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (not negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount

    def lines(self, out: list[str]) -> None:
        """Append this series' exposition line to ``out``."""
        out.append(self.prefix + number(self.value) + "\n")

    def add_samples(self, metric: Metric, name: str) -> None:
        """Add this series' sample to a prometheus_client family."""
        metric.add_sample(name, self.labels, self.value)


class GaugeSeries(CounterSeries):
    """A number that goes up and down."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.value -= amount

    def set(self, value: float) -> None:
        """Make it ``value`` (a bool is 0 or 1)."""
        self.value = float(value)


class HistogramSeries(Series):
    """Observations counted in buckets, with their sum."""

    __slots__ = ("_prefixes", "bounds", "counts", "sum")

    def __init__(self, family: Family[Any], values: tuple[str, ...]) -> None:
        super().__init__(family, values)
        assert isinstance(family, Histogram)
        self.bounds = family.bounds
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self._prefixes: list[str] = []  # each bucket's, then _count's and _sum's

    def prefixes(self) -> list[str]:
        """The starts of the bucket lines, then of ``_count`` and ``_sum`` (made once)."""
        if not self._prefixes:
            pairs = list(self.labels.items())
            text = label_text(pairs) + " "
            self._prefixes = [
                f"{self.name}_bucket" + label_text([*pairs, ("le", number(bound))]) + " "
                for bound in self.bounds
            ] + [f"{self.name}_count{text}", f"{self.name}_sum{text}"]
        return self._prefixes

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least it."""
        if not math.isnan(value):  # as prometheus_client: in no bucket, but in the sum
            self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def lines(self, out: list[str]) -> None:
        """Append the cumulative buckets, the count and the sum to ``out``."""
        *buckets, count_prefix, sum_prefix = self.prefixes()
        total = 0
        for prefix, count in zip(buckets, self.counts, strict=True):
            total += count
            out.append(prefix + number(total) + "\n")
        out.append(count_prefix + number(total) + "\n")
        out.append(sum_prefix + number(self.sum) + "\n")

    def add_samples(self, metric: Metric, name: str) -> None:
        """Add the buckets, the count and the sum to a prometheus_client family."""
        total = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            total += count
            metric.add_sample(f"{name}_bucket", {**self.labels, "le": number(bound)}, total)
        metric.add_sample(f"{name}_count", self.labels, total)
        metric.add_sample(f"{name}_sum", self.labels, self.sum)


class InfoSeries(Series):
    """Constant labels describing the process, with the value 1."""

    __slots__ = ("_line", "info_labels")

    def __init__(self, family: Family[Any], values: tuple[str, ...]) -> None:
        super().__init__(family, values)
        self.info_labels: dict[str, str] = {}
        self._line = ""

    def info(self, labels: dict[str, str]) -> None:
        """Set the labels."""
        self.info_labels = {**self.labels, **labels}
        self._line = f"{self.name}{label_text(self.info_labels.items())} 1.0\n"

    def lines(self, out: list[str]) -> None:
        """Append the line, once the labels are set."""
        if self._line:
            out.append(self._line)

    def add_samples(self, metric: Metric, name: str) -> None:
        """Add the sample, once the labels are set."""
        if self._line:
            metric.add_sample(name, self.info_labels, 1.0)


S = TypeVar("S", bound=Series)


class Family(Generic[S]):
    """A metric family: name, help, type, label names, and its series by label values."""

    kind: ClassVar[str]  # the type prometheus_client gives it
    suffix: ClassVar[str] = ""  # a plain series' name is the family's name plus this
    series_type: ClassVar[type[Series]]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        if self.suffix and name.endswith(self.suffix):
            name = name[: -len(self.suffix)]  # "x_total" names family "x", as prometheus_client
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.sample_name = name + self.suffix
        exposed = self.sample_name
        shown = "gauge" if self.kind == "info" else self.kind
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {exposed} {help_text}\n# TYPE {exposed} {shown}\n"
        self.series: dict[tuple[str, ...], S] = {}
        # Without labels the one series exists from the start, as prometheus_client's does.
        self._plain: S | None = None if self.labelnames else self._new(())
        if registry is not None:
            registry.register(self)

    def _new(self, values: tuple[str, ...]) -> S:
        series: S = self.series_type(self, values)  # type: ignore[assignment]
        self.series[values] = series
        return series

    def labels(self, *values: str, **named: str) -> S:
        """The series with these label values (created at its first use)."""
        found = None if named else self.series.get(values)
        if found is not None:
            return found
        if named:
            if values or set(named) != set(self.labelnames):
                raise ValueError(f"{self.name}: labels are {self.labelnames}, got {sorted(named)}")
            values = tuple(named[name] for name in self.labelnames)
        if not self.labelnames or len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels are {self.labelnames}, got {len(values)} values")
        key = tuple(str(value) for value in values)
        return self.series.get(key) or self._new(key)

    def remove(self, *values: str) -> None:
        """Forget the series with these label values (gone from the next scrape)."""
        self.series.pop(tuple(str(value) for value in values), None)

    def forget(self, label: str, value: str) -> int:
        """Forget every series whose ``label`` is ``value``; how many there were."""
        if label not in self.labelnames:
            return 0
        at = self.labelnames.index(label)
        gone = [key for key in self.series if key[at] == value]
        for key in gone:
            del self.series[key]
        return len(gone)

    @property
    def plain(self) -> S:
        """The one series of a family without labels."""
        if self._plain is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: call labels() first")
        return self._plain

    def describe(self) -> list[Metric]:
        """The family without samples (the registry checks names with it)."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> list[Metric]:
        """The family with every series, as prometheus_client families."""
        metric = Metric(self.name, self.documentation, self.kind)
        name = self.sample_name
        for series in list(self.series.values()):
            series.add_samples(metric, name)
        return [metric]


class Counter(Family[CounterSeries]):
    """Counters (``_total``)."""

    kind = "counter"
    suffix = "_total"
    series_type = CounterSeries

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the plain series."""
        self.plain.inc(amount)


class Gauge(Family[GaugeSeries]):
    """Gauges."""

    kind = "gauge"
    series_type = GaugeSeries

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` to the plain series."""
        self.plain.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount`` from the plain series."""
        self.plain.dec(amount)

    def set(self, value: float) -> None:
        """Set the plain series."""
        self.plain.set(value)


class Histogram(Family[HistogramSeries]):
    """Histograms with fixed bucket bounds (+Inf added)."""

    kind = "histogram"
    series_type = HistogramSeries

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = (),
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, value: float) -> None:
        """Observe ``value`` in the plain series."""
        self.plain.observe(value)


class Info(Family[InfoSeries]):
    """Constant labels describing the process (``<name>_info 1``)."""

    kind = "info"
    suffix = "_info"
    series_type = InfoSeries

    def info(self, labels: dict[str, str]) -> None:
        """Set the labels of the plain series."""
        self.plain.info(labels)


def lines(families: Iterable[Family[Any]]) -> Iterator[list[str]]:
    """The exposition in chunks of lines (a family's header, then its series a few hundred
    at a time); each chunk is cheap to make."""
    for family in families:
        yield [family.header]
        # A copy: series created while the loop has its turn join the next scrape.
        series = list(family.series.values())
        for start in range(0, len(series), CHECK_EVERY):
            out: list[str] = []
            for one in series[start : start + CHECK_EVERY]:
                one.lines(out)
            yield out


async def render(families: Iterable[Family[Any]], budget: float = SLICE) -> bytes:
    """The text exposition of ``families`` (as ``generate_latest`` writes it), made on the
    event loop in slices of about ``budget`` seconds, the loop getting a turn after each:
    a scrape of any size then holds a probe tick up by one slice at most."""
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []  # encoded chunk by chunk: one join of 2 MB is a slice itself
    until = loop.time() + budget
    for chunk in lines(families):
        parts.append("".join(chunk).encode())
        if loop.time() >= until:
            await asyncio.sleep(0)
            until = loop.time() + budget
    return b"".join(parts)
