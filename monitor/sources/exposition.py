"""The exposition source: error rate and memory read from the app's own Prometheus /metrics.

Error rate is the growth of the 5xx requests counter over the growth of all requests between
two scrapes; memory is a resident-memory gauge over a limit (fixed, or another gauge). What
keeps a value from being measured (a failed scrape, a missing series, a counter reset, too
little traffic) makes the sample UNKNOWN with a reason, never a breach.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample as PromSample
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)
from yarl import URL

from monitor.clock import Clock
from monitor.configtypes import HttpUrl, Strict, Timeout, expand_in
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.redact import redact_url
from monitor.sources.exposition_checks import (
    MAX_SERIES,
    Key,
    counters,
    gauge_sum,
    name_problem,
    series_text,
    value_problem,
)
from monitor.sources.health import describe_error

MIB = 1024 * 1024
# Above this the parse (pure Python) runs in a thread, so one big exposition cannot stall the
# loop that is probing every other service.
THREAD_PARSE_BYTES = 256 * 1024
# Ask for the classic text format: a client library that negotiates could otherwise answer
# OpenMetrics or protobuf.
_HEADERS = {"Accept": "text/plain;version=0.0.4;q=1.0, */*;q=0.1"}
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
# Lowercase unit -> bytes: "", b; kb, mb, gb, tb (powers of 1000); kib/ki, mib/mi, ... (1024).
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1} | {
    prefix + suffix: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for base, suffixes in ((1000, ("b",)), (1024, ("ib", "i")))
    for suffix in suffixes
}

Found = dict[str, list[PromSample]]
"""The parsed samples a scrape needs, by sample name."""


def parse_size(value: Any) -> int:
    """``"512MiB"``, ``"1GiB"``, ``"500MB"``, ``"4096"`` or ``4096`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    unit = None if match is None else _SIZE_UNITS.get(match.group(2).lower())
    if match is None or unit is None:
        raise ValueError(
            f"not a size: {value!r} (use a whole number of bytes, or a number and a unit: "
            'B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, as in "512MiB")'
        )
    return round(float(match.group(1)) * unit)


def _size(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        value = expand_in(value, info)
    return parse_size(value)


def _metric_name(value: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a Prometheus metric name")
    return value


Size = Annotated[int, BeforeValidator(_size)]
"""A size in bytes; ``"512MiB"`` in the file."""

MetricName = Annotated[str, AfterValidator(_metric_name)]


class _Scrape(Strict):
    """What both exposition signals share: where to scrape and how patiently."""

    source: Literal["exposition"]
    url: HttpUrl
    timeout: Timeout = 5.0
    max_body_bytes: int = Field(default=4 * MIB, gt=0)
    labels: dict[str, str] = {}
    """Only series carrying these label values count (``{ handler = "/api" }``)."""


class ExpositionErrorRate(_Scrape):
    """``error_rate = { source = "exposition", url = "...", min_requests = 20 }``."""

    metric: MetricName = "http_requests_total"
    """A requests counter; ``http_requests`` and ``http_requests_total`` mean the same."""
    status_label: str = "code"
    """5xx = a value of this label starting with "5" ("500", "503", "5xx")."""
    min_requests: int = Field(default=10, ge=1)


class ExpositionMemory(_Scrape):
    """``memory = { source = "exposition", url = "...", limit = "512MiB" }``.

    The limit is fixed (``limit``) or read from a gauge (``limit_metric``), which ``labels``
    do not filter: they select the usage series only.
    """

    metric: MetricName = "process_resident_memory_bytes"
    """A gauge; the matching series are summed."""
    limit: Size | None = None
    limit_metric: MetricName | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ExpositionMemory:
        if (self.limit is None) == (self.limit_metric is None):
            raise ValueError(
                'set exactly one of limit (such as "512MiB") and limit_metric '
                '(such as "app_memory_limit_bytes")'
            )
        if self.limit == 0:
            raise ValueError("limit must be more than 0 bytes")
        return self


def _selector(metric: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return metric
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class _Reader:
    """Turns what a scrape found into one signal's sample."""

    __slots__ = ("_filter", "_selector", "names", "scrape", "url")
    signal: Signal

    def __init__(self, config: _Scrape, metric: str, names: frozenset[str]) -> None:
        self.scrape = config
        self.url = config.url
        self.names = names
        self._filter = tuple(config.labels.items())
        self._selector = _selector(metric, config.labels)

    def _unknown(self, at: float, reason: str, detail: dict[str, Any]) -> Sample:
        return Sample(self.signal, at, None, reason=reason, detail=detail)


class _Target:
    """One URL to scrape, with the union of what its signals need from it."""

    __slots__ = ("limit", "names", "text", "timeout", "timeout_reason", "too_large", "url")

    def __init__(self, readers: Sequence[_Reader]) -> None:
        self.url = URL(readers[0].url)
        self.text = redact_url(readers[0].url)
        # Signals sharing a URL share one scrape, so it gets the more generous settings.
        seconds = max(r.scrape.timeout for r in readers)
        self.timeout = aiohttp.ClientTimeout(total=seconds)
        self.timeout_reason = f"timeout after {format_duration(seconds)}"
        self.limit = max(r.scrape.max_body_bytes for r in readers)
        self.too_large = f"exposition larger than {self.limit} bytes"
        self.names = frozenset[str]().union(*(r.names for r in readers))


class _ErrorRateReader(_Reader):
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


class _MemoryReader(_Reader):
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


def _parse(text: str, names: frozenset[str]) -> Found | str:
    """The samples named in ``names``, from the whole exposition (so any syntax error shows);
    or why the exposition cannot be read."""
    found: Found = {}
    count = 0
    try:
        for family in text_string_to_metric_families(text):
            count += len(family.samples)
            if count > MAX_SERIES:
                return f"exposition has more than {MAX_SERIES} series"
            for sample in family.samples:
                problem = name_problem(sample.name)
                if problem:
                    return f"cannot parse the exposition: {problem}"
                if sample.name in names:
                    found.setdefault(sample.name, []).append(sample)
    # The parser is third-party code reading hostile text: whatever it raises (ValueError
    # mostly) is a fact about the exposition, never a reason to stop the loop.
    except Exception as exc:
        return f"cannot parse the exposition: {_first_line(exc) or type(exc).__name__}"
    return found


class ExpositionSource:
    """Scrapes an app's Prometheus /metrics for ERROR_RATE and/or MEMORY.

    Each distinct URL is fetched once per :meth:`collect`, however many signals read it.
    """

    __slots__ = ("_clock", "_readers", "_session", "_targets", "signals")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        error_rate: ExpositionErrorRate | None = None,
        memory: ExpositionMemory | None = None,
    ) -> None:
        if error_rate is None and memory is None:
            raise ProbeError("an exposition source needs error_rate, memory or both")
        self._session = session
        self._clock = clock
        readers: list[_ErrorRateReader | _MemoryReader] = []
        if error_rate is not None:
            readers.append(_ErrorRateReader(error_rate))
        if memory is not None:
            readers.append(_MemoryReader(memory))
        self._readers = tuple(readers)
        self._targets = {r.url: _Target([s for s in readers if s.url == r.url]) for r in readers}
        self.signals = frozenset(r.signal for r in readers)

    async def collect(self, at: float) -> list[Sample]:
        """Scrape each URL once and return one sample per configured signal."""
        targets = self._targets
        if len(targets) == 1:
            outcomes = [await self._scrape(*targets.values())]
        else:  # two URLs: scrape them together, so the step waits for one timeout at most
            outcomes = await asyncio.gather(*map(self._scrape, targets.values()))
        found = dict(zip(targets, outcomes, strict=True))
        now = self._clock.monotonic()
        return [r.read(at, targets[r.url].text, found[r.url], now) for r in self._readers]

    async def _scrape(self, target: _Target) -> Found | str:
        """The samples ``target``'s signals need, or the reason there are none."""
        try:
            async with self._session.get(
                target.url, headers=_HEADERS, timeout=target.timeout
            ) as response:
                if not 200 <= response.status < 300:
                    return f"status {response.status} (expected 2xx)"
                length = response.content_length
                if length is not None and length > target.limit:
                    return target.too_large
                body = await _read_at_most(response.content, target.limit + 1)
        except TimeoutError:
            return target.timeout_reason
        except (aiohttp.ClientError, OSError) as exc:
            return describe_error(exc)
        except RuntimeError as exc:
            if self._session.closed:
                raise ProbeError(
                    f"cannot scrape {target.text}: the HTTP session is closed"
                ) from exc
            raise
        if len(body) > target.limit:
            return target.too_large
        try:
            text = body.decode()
        except UnicodeDecodeError as exc:
            return f"cannot parse the exposition: {_first_line(exc)}"
        if len(body) > THREAD_PARSE_BYTES:
            return await asyncio.to_thread(_parse, text, target.names)
        return _parse(text, target.names)


async def _read_at_most(content: aiohttp.StreamReader, size: int) -> bytes:
    """Up to ``size`` bytes of the body: a huge or endless body costs no more than that."""
    try:
        return await content.readexactly(size)
    except asyncio.IncompleteReadError as short:
        return short.partial


def _first_line(exc: BaseException) -> str:
    return str(exc).partition("\n")[0][:200]
