"""The exposition source: error rate, memory and latency from the app's own Prometheus /metrics.

The readers (:mod:`.exposition_readers`) turn what a scrape found into samples. What keeps a
value from being measured (a failed scrape, a missing series, a counter reset, too little
traffic) makes the sample UNKNOWN with a reason, never a breach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from monitor.clock import Clock
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.redact import redact_url
from monitor.sources.exposition_checks import MAX_SERIES, name_problem
from monitor.sources.exposition_config import (
    ExpositionErrorRate,
    ExpositionLatency,
    ExpositionMemory,
)
from monitor.sources.exposition_readers import (
    ErrorRateReader,
    Found,
    LatencyReader,
    MemoryReader,
    Reader,
)
from monitor.sources.health import describe_error

# Above this the parse (pure Python) runs in a thread, so one big exposition cannot stall the
# loop that is probing every other service.
THREAD_PARSE_BYTES = 256 * 1024
# Ask for the classic text format: a client library that negotiates could otherwise answer
# OpenMetrics or protobuf.
_HEADERS = {"Accept": "text/plain;version=0.0.4;q=1.0, */*;q=0.1"}


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
