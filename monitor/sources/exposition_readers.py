"""The exposition source's readers: each turns what one scrape found into one signal's sample.

Error rate is the growth of the 5xx requests counter over the growth of all requests between
two scrapes; memory is a resident-memory gauge over a limit (fixed, or another gauge); a
latency quantile is interpolated in the growth of a request-duration histogram's buckets
between two scrapes, as Prometheus' ``histogram_quantile`` does (:mod:`.quantile`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.samples import Sample as PromSample

from monitor.model import Sample, Signal
from monitor.sources.exposition_checks import (
    Key,
    counters,
    gauge_sum,
    series_text,
    value_problem,
)
from monitor.sources.exposition_config import (
    ExpositionErrorRate,
    ExpositionLatency,
    ExpositionMemory,
    Scrape,
)
from monitor.sources.quantile import Buckets, bucket_quantile, buckets, increase

Found = dict[str, list[PromSample]]
"""The parsed samples a scrape needs, by sample name."""


def selector(metric: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return metric
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class Reader:
    """Turns what a scrape found into one signal's sample."""

    __slots__ = ("_filter", "_selector", "names", "scrape", "url")
    signal: Signal

    def __init__(self, config: Scrape, metric: str, names: frozenset[str]) -> None:
        self.scrape = config
        self.url = config.url
        self.names = names
        self._filter = tuple(config.labels.items())
        self._selector = selector(metric, config.labels)

    def _unknown(self, at: float, reason: str, detail: dict[str, Any]) -> Sample:
        return Sample(self.signal, at, None, reason=reason, detail=detail)

    def read(self, at: float, url: str, found: Found | str, now: float) -> Sample:
        """The signal's sample from one scrape (``found``: its samples, or why none)."""
        raise NotImplementedError

    def samples(self, at: float, url: str, found: Found | str, now: float) -> list[Sample]:
        """Every sample the reader makes of one scrape."""
        return [self.read(at, url, found, now)]


class ErrorRateReader(Reader):
    """Turns successive scrapes into 5xx / total over each step."""

    __slots__ = ("_baseline", "_config", "_names", "_since")
    signal = Signal.ERROR_RATE

    def __init__(self, config: ExpositionErrorRate) -> None:
        base = config.metric.removesuffix("_total")
        # The parser names the family without ``_total`` but keeps it on the samples; an
        # untyped counter keeps whatever name it was exposed under.
        self._names = (base, base + "_total")
        super().__init__(config, config.metric, frozenset(self._names))
        self._config = config
        self._baseline: dict[Key, float] | None = None
        self._since = 0.0

    def read(self, at: float, url: str, found: Found | str, now: float) -> Sample:
        # Whatever makes a scrape unusable (a failure, garbage in a series, a series missing
        # beside present ones) keeps the baseline: the next good scrape then measures the
        # delta over the longer span, which is still a true rate, and garbage never becomes
        # part of what later steps are measured from.
        if isinstance(found, str):
            return self._unknown(at, found, {"url": url})
        samples = [s for name in self._names for s in found.get(name, ())]
        current = counters(samples, self._filter, self._config.status_label)
        if isinstance(current, str):
            return self._unknown(at, current, {"url": url})
        if not current:
            return self._unknown(at, f"no {self._selector} series in the exposition", {"url": url})
        previous, since = self._baseline, self._since
        if previous is None:
            self._baseline, self._since = current, now
            return self._unknown(at, "first scrape: no rate yet", {"url": url})
        span = round(now - since, 3)
        down = next((k for k, v in current.items() if v < previous.get(k, 0.0)), None)
        if down is not None:
            # A restart: the counters start again from what exists now.
            self._baseline, self._since = current, now
            reason = f"counter reset: {self._show(down)} went down"
            return self._unknown(at, reason, {"url": url, "span_s": span})
        lost = next((k for k in previous if k not in current), None)
        if lost is not None:
            # Without it the rate is computed from what remains: 5xx / 5xx when the one that
            # went missing is the 2xx series. It stays UNKNOWN until the series is back or
            # the counters reset.
            reason = f"a missing series beside a present one: {self._show(lost)} is gone"
            return self._unknown(at, reason, {"url": url, "span_s": span})
        self._baseline, self._since = current, now
        total = errors = 0.0
        for key, value in current.items():
            delta = value - previous.get(key, 0.0)  # a new series: all of its count is new
            total += delta
            if key[0].startswith("5"):
                errors += delta
        detail = {"url": url, "requests": total, "errors": errors, "span_s": span}
        least = self._config.min_requests
        if total < least:
            reason = f"too little traffic: {total:g} requests < min_requests {least}"
            return self._unknown(at, reason, detail)
        rate = errors / total
        problem = value_problem(self.signal, rate)
        if problem:
            return self._unknown(at, problem, detail)
        return Sample(self.signal, at, rate, detail=detail)

    def _show(self, key: Key) -> str:
        return series_text(self._names[-1], dict(sorted(key[1])))


class MemoryReader(Reader):
    """Turns one scrape into usage / limit."""

    __slots__ = ("_config",)
    signal = Signal.MEMORY

    def __init__(self, config: ExpositionMemory) -> None:
        names = frozenset(n for n in (config.metric, config.limit_metric) if n is not None)
        super().__init__(config, config.metric, names)
        self._config = config

    def read(self, at: float, url: str, found: Found | str, now: float) -> Sample:
        if isinstance(found, str):
            return self._unknown(at, found, {"url": url})
        config = self._config
        usage = gauge_sum(found.get(config.metric, ()), self._filter, config.metric)
        if isinstance(usage, str):
            return self._unknown(at, usage, {"url": url})
        if usage is None:
            return self._unknown(at, f"no {self._selector} series in the exposition", {"url": url})
        limit: float | str | None = config.limit
        if config.limit_metric is not None:
            limit = gauge_sum(found.get(config.limit_metric, ()), (), config.limit_metric)
        if isinstance(limit, str):
            return self._unknown(at, limit, {"url": url, "usage_bytes": usage})
        detail = {"url": url, "usage_bytes": usage, "limit_bytes": limit}
        if limit is None:
            reason = f"no {config.limit_metric} series in the exposition (limit_metric)"
        elif limit <= 0:
            reason = f"memory limit {config.limit_metric} is {limit:g}"
        else:
            ratio = usage / limit
            reason = value_problem(self.signal, ratio)
            if not reason:
                return Sample(self.signal, at, ratio, detail=detail)
        return self._unknown(at, reason, detail)


class LatencyReader(Reader):
    """Turns successive scrapes of a request-duration histogram into quantiles of each step."""

    __slots__ = ("_before", "_bucket", "_config", "_signals", "_since")
    signal = Signal.LATENCY_P95  # the first of :attr:`signals`, for the base class

    def __init__(self, config: ExpositionLatency, signals: Sequence[Signal]) -> None:
        self._bucket = config.metric + "_bucket"
        super().__init__(config, self._bucket, frozenset({self._bucket}))
        self._config = config
        self._signals = tuple(signals)
        self._before: Buckets | None = None
        self._since = 0.0

    def samples(self, at: float, url: str, found: Found | str, now: float) -> list[Sample]:
        # As for the error rate: a scrape that cannot be read keeps the earlier one, so the
        # next good scrape measures the longer step (still true), and garbage is never the
        # base later steps are measured from.
        if isinstance(found, str):
            return self._all(at, found, {"url": url})
        current = buckets(found.get(self._bucket, ()), self._filter)
        if isinstance(current, str):
            return self._all(at, current, {"url": url})
        if not current:
            return self._all(at, f"no {self._selector} series in the exposition", {"url": url})
        before, since = self._before, self._since
        self._before, self._since = current, now
        if before is None:
            return self._all(at, "first scrape: no quantile yet", {"url": url})
        span = round(now - since, 3)
        # A restart (a bucket went down) or a series gone: the next step measures from now.
        growth = increase(self._config.metric, before, current)
        if isinstance(growth, str):
            return self._all(at, growth, {"url": url, "span_s": span})
        requests = growth.get(math.inf, 0.0)
        detail = {"url": url, "requests": requests, "span_s": span}
        least = self._config.min_requests
        if requests < least:
            reason = f"too little traffic: {requests:g} requests < min_requests {least}"
            return self._all(at, reason, detail)
        out = []
        for signal in self._signals:
            assert signal.quantile is not None
            q = bucket_quantile(signal.quantile, growth)
            problem = q.reason if q.value is None else value_problem(signal, q.value)
            if problem or q.value is None:
                out.append(Sample(signal, at, None, reason=problem, detail=detail))
            else:
                out.append(Sample(signal, at, q.value, detail=detail))
        return out

    def _all(self, at: float, reason: str, detail: dict[str, Any]) -> list[Sample]:
        return [Sample(s, at, None, reason=reason, detail=detail) for s in self._signals]
