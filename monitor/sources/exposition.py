"""The exposition source: error rate, memory and latency from the app's own Prometheus /metrics.

The readers (:mod:`.exposition_readers`) turn what a scrape found into samples. What keeps a
value from being measured (a failed scrape, a missing series, a counter reset, too little
traffic) makes the sample UNKNOWN with a reason, never a breach.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
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
from monitor.sources.exposition_checks import MAX_SERIES, name_problem
from monitor.sources.exposition_readers import (
    ErrorRateReader,
    Found,
    LatencyReader,
    MemoryReader,
    Reader,
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


class Scrape(Strict):
    """What both exposition signals share: where to scrape and how patiently."""

    source: Literal["exposition"]
    url: HttpUrl
    timeout: Timeout = 5.0
    max_body_bytes: int = Field(default=4 * MIB, gt=0)
    labels: dict[str, str] = {}
    """Only series carrying these label values count (``{ handler = "/api" }``)."""


class ExpositionErrorRate(Scrape):
    """``error_rate = { source = "exposition", url = "...", min_requests = 20 }``."""

    metric: MetricName = "http_requests_total"
    """A requests counter; ``http_requests`` and ``http_requests_total`` mean the same."""
    status_label: str = "code"
    """5xx = a value of this label starting with "5" ("500", "503", "5xx")."""
    min_requests: int = Field(default=10, ge=1)


class ExpositionLatency(Scrape):
    """``latency = { source = "exposition", url = "..." }``: a request-duration histogram.

    Its ``_bucket`` series (seconds); each quantile a rule asks for is interpolated in the
    buckets' growth between two scrapes.
    """

    metric: MetricName = "http_request_duration_seconds"
    """The histogram's name, without ``_bucket``."""
    min_requests: int = Field(default=10, ge=1)
    """Fewer observations than this between two scrapes make the quantile UNKNOWN."""


class ExpositionMemory(Scrape):
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


class _Target:
    """One URL to scrape, with the union of what its signals need from it."""

    __slots__ = ("limit", "names", "text", "timeout", "timeout_reason", "too_large", "url")

    def __init__(self, readers: Sequence[Reader]) -> None:
        self.url = URL(readers[0].url)
        self.text = redact_url(readers[0].url)
        # Signals sharing a URL share one scrape, so it gets the more generous settings.
        seconds = max(r.scrape.timeout for r in readers)
        self.timeout = aiohttp.ClientTimeout(total=seconds)
        self.timeout_reason = f"timeout after {format_duration(seconds)}"
        self.limit = max(r.scrape.max_body_bytes for r in readers)
        self.too_large = f"exposition larger than {self.limit} bytes"
        self.names = frozenset[str]().union(*(r.names for r in readers))


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
        latency: ExpositionLatency | None = None,
        quantiles: Iterable[Signal] = (Signal.LATENCY_P95,),
    ) -> None:
        if error_rate is None and memory is None and latency is None:
            raise ProbeError("an exposition source needs error_rate, memory or latency")
        self._session = session
        self._clock = clock
        readers: list[Reader] = []
        if error_rate is not None:
            readers.append(ErrorRateReader(error_rate))
        if memory is not None:
            readers.append(MemoryReader(memory))
        if latency is not None:
            readers.append(LatencyReader(latency, sorted(set(quantiles))))
        self._readers = tuple(readers)
        self._targets = {r.url: _Target([s for s in readers if s.url == r.url]) for r in readers}
        self.signals = frozenset(r.signal for r in readers if r.signal.quantile is None)
        if latency is not None:
            self.signals |= frozenset(quantiles)

    async def collect(self, at: float) -> list[Sample]:
        """Scrape each URL once and return one sample per configured signal."""
        targets = self._targets
        if len(targets) == 1:
            outcomes = [await self._scrape(*targets.values())]
        else:  # two URLs: scrape them together, so the step waits for one timeout at most
            outcomes = await asyncio.gather(*map(self._scrape, targets.values()))
        found = dict(zip(targets, outcomes, strict=True))
        now = self._clock.monotonic()
        return [
            sample
            for r in self._readers
            for sample in r.samples(at, targets[r.url].text, found[r.url], now)
        ]

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
