"""The promql source: error rate, memory and latency as instant PromQL queries on a Prometheus.

The query does the arithmetic (``sum(rate(...5xx...)) / sum(rate(...))``,
``histogram_quantile(0.95, ...)``), so there is no counter state here: each collect asks
Prometheus for the queries' values at the sample's time. A query must come back as one number
(:mod:`.promql_answer`). Whatever keeps it from that (an error from Prometheus, no series or
several, NaN when there was no traffic, a value outside the signal's range, a failed request)
makes the sample UNKNOWN with a reason, never a breach.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import Field, ValidationInfo, field_validator, model_validator
from yarl import URL

from monitor.clock import Clock
from monitor.configtypes import DAY, Duration, HttpUrl, Secret, Strict, Timeout, within
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.redact import redact_url
from monitor.sources.exposition_checks import MAX_MEMORY_RATIO, value_problem
from monitor.sources.exposition_config import MetricName
from monitor.sources.health import describe_error
from monitor.sources.promql_answer import Result, excerpt, interpret, read_at_most, show

MAX_BODY_BYTES = 1024 * 1024
"""A one-number answer is tiny; a body past this is a query returning far too many series."""
QUANTILE = "{quantile}"
"""Where a latency ``query`` takes the quantile (0.95 for latency_p95)."""


class _Endpoint(Strict):
    """Which Prometheus, and how patiently: what every promql signal shares."""

    source: Literal["promql"]
    url: HttpUrl
    """The Prometheus base URL; the source calls ``<url>/api/v1/query``."""
    timeout: Timeout = 5.0
    bearer_token: Secret | None = None
    """Sent as ``Authorization: Bearer ...``, for a hosted Prometheus."""

    @model_validator(mode="after")
    def _one_credential(self) -> _Endpoint:
        if self.bearer_token is not None and URL(self.url).user is not None:
            raise ValueError("use either credentials in url or bearer_token, not both")
        return self


class _Query(_Endpoint):
    """A signal written as one query."""

    query: str

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_empty(value, "query")


class PromQLErrorRate(_Query):
    """``error_rate = { source = "promql", url = "...", query = "sum(...) / sum(...)" }``.

    With ``traffic_query`` (such as ``sum(increase(http_requests_total[1m]))``), a sample
    counts only when that query's value is at least ``min_traffic``.
    """

    traffic_query: str | None = None
    min_traffic: float = Field(default=0.0, ge=0)

    @field_validator("traffic_query")
    @classmethod
    def _traffic_query(cls, value: str | None) -> str | None:
        return None if value is None else _non_empty(value, "traffic_query")

    @model_validator(mode="after")
    def _traffic(self) -> PromQLErrorRate:
        if "min_traffic" in self.model_fields_set and self.traffic_query is None:
            raise ValueError("min_traffic needs traffic_query (the query that counts traffic)")
        return self


class PromQLMemory(_Query):
    """``memory = { source = "promql", url = "...", query = "usage / limit" }``."""


_BUILT = ("metric", "selector", "range")


class PromQLLatency(_Endpoint):
    """``latency = { source = "promql", url = "...", selector = 'job="web"' }``.

    Each quantile a rule asks for is ``histogram_quantile(Q, sum by (le)
    (rate(METRIC_bucket{SELECTOR}[RANGE])))``, and the requests it describes are
    ``sum(increase(METRIC_count{SELECTOR}[RANGE]))``. Or the queries are written out:
    ``query`` with ``{quantile}`` where Q goes, and ``requests_query``.
    """

    query: str | None = None
    metric: MetricName = "http_request_duration_seconds"
    """The histogram's name, without ``_bucket`` or ``_count``."""
    selector: str = ""
    """Label matchers, such as ``job="web", handler!="/healthz"`` (braces optional)."""
    range: Annotated[Duration, within(1.0, DAY)] = 120.0
    """How far back each quantile looks: rate()'s and increase()'s range."""
    requests_query: str | None = None
    min_requests: int = Field(default=10, ge=1)
    """Fewer requests than this in the range make the quantiles UNKNOWN."""

    @field_validator("query", "requests_query")
    @classmethod
    def _queries(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _non_empty(value, str(info.field_name))

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        # Braces inside may be a regex's (path=~"/v[0-9]{1,2}/.*"): Prometheus judges those.
        text = value.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1].strip()
        return text

    @model_validator(mode="after")
    def _written_or_built(self) -> PromQLLatency:
        if self.query is None:
            return self
        built = [key for key in _BUILT if key in self.model_fields_set]
        if built:
            raise ValueError(
                f"{' and '.join(built)} build the default query: with query, write them into it"
            )
        if self.requests_query is None:
            raise ValueError(
                "query needs requests_query too (the number of requests its quantile "
                "describes, such as sum(increase(http_request_duration_seconds_count[2m])))"
            )
        return self

    def quantile_query(self, q: float) -> str:
        """The query for quantile ``q`` (0.95)."""
        if self.query is not None:
            return self.query.replace(QUANTILE, f"{q:g}")
        series = self._series("_bucket")
        return f"histogram_quantile({q:g}, sum by (le) (rate({series})))"

    @property
    def count_query(self) -> str:
        """The query for the number of requests the quantiles describe."""
        if self.requests_query is not None:
            return self.requests_query
        return f"sum(increase({self._series('_count')}))"

    def _series(self, suffix: str) -> str:
        matchers = "{" + self.selector + "}" if self.selector else ""
        return f"{self.metric}{suffix}{matchers}[{promql_duration(self.range)}]"


def promql_duration(seconds: float) -> str:
    """``120.0`` -> ``2m``: a range as PromQL writes it (one unit, whole)."""
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _non_empty(value: str, name: str) -> str:
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


class _Instant:
    """One query against one Prometheus, with everything that does not change built once."""

    __slots__ = ("excerpt", "headers", "query", "timeout", "timeout_reason", "url", "url_text")

    def __init__(self, config: _Endpoint, query: str) -> None:
        base = URL(config.url)
        self.url = base.with_path(base.path.rstrip("/") + "/api/v1/query")
        self.url_text = redact_url(config.url)
        self.query = query
        self.excerpt = excerpt(query)
        token = config.bearer_token
        self.headers = (
            None if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}
        )
        self.timeout = aiohttp.ClientTimeout(total=config.timeout)
        self.timeout_reason = f"timeout after {format_duration(config.timeout)}"


class _Reader:
    """Turns one signal's query results into its sample."""

    __slots__ = ("main", "min_traffic", "signal", "traffic")

    def __init__(self, signal: Signal, config: _Query) -> None:
        self.signal = signal
        self.main = _Instant(config, config.query)
        self.traffic: _Instant | None = None
        self.min_traffic = 0.0
        if isinstance(config, PromQLErrorRate) and config.traffic_query is not None:
            self.traffic = _Instant(config, config.traffic_query)
            self.min_traffic = config.min_traffic

    @property
    def instants(self) -> list[_Instant]:
        return [self.main] if self.traffic is None else [self.main, self.traffic]

    def samples(self, at: float, results: Sequence[Result]) -> list[Sample]:
        """The sample from the results of :attr:`instants`, in their order."""
        return [self.read(at, results[0], results[1] if len(results) > 1 else None)]

    def read(self, at: float, main: Result, traffic: Result | None) -> Sample:
        detail: dict[str, Any] = {
            "url": self.main.url_text,
            "query": self.main.query,
            "series": main.series,
        }
        if traffic is not None:
            volume = traffic.outcome
            detail["traffic"] = None if isinstance(volume, str) else volume
        value = main.outcome
        if isinstance(value, str):
            reason = value
        else:
            reason = self._traffic_reason(traffic) or self._value_reason(value)
            if not reason:
                return Sample(self.signal, at, value, detail=detail)
        return Sample(self.signal, at, None, reason=reason, detail=detail)

    def _traffic_reason(self, traffic: Result | None) -> str:
        if traffic is None:
            return ""
        volume = traffic.outcome
        if isinstance(volume, str):
            return f"traffic_query: {volume}"
        if math.isinf(volume) or volume < 0:
            return f"traffic_query returned {show(volume)}: not a count of requests"
        if not volume >= self.min_traffic:  # written so that NaN is too little too
            return f"too little traffic: {show(volume)} < min_traffic {self.min_traffic:g}"
        return ""

    def _value_reason(self, value: float) -> str:
        if not math.isfinite(value):
            # 0/0 is what a ratio of rates gives when nothing happened in the window.
            return f"no traffic (the query is {show(value)})"
        low, high = self.signal.bounds
        if self.signal is Signal.MEMORY:  # usage may pass the limit briefly, not a thousandfold
            high = min(high, MAX_MEMORY_RATIO)
        if low <= value <= high:
            return ""
        reason = f"the query returned {value:g}, outside the {self.signal} range {low:g}..{high:g}"
        if self.signal is Signal.ERROR_RATE:
            reason += ": it must divide the errors by the total"
        return reason


class _LatencyReader:
    """Turns the requests count and one query per quantile into the quantiles' samples."""

    __slots__ = ("count", "least", "quantiles", "signals", "span")

    def __init__(self, config: PromQLLatency, signals: Sequence[Signal]) -> None:
        if len(signals) > 1 and config.query is not None and QUANTILE not in config.query:
            raise ProbeError(f"a latency query without {QUANTILE} can serve only one quantile")
        self.signals = tuple(signals)
        self.count = _Instant(config, config.count_query)
        self.quantiles = tuple(_Instant(config, config.quantile_query(_q(s))) for s in signals)
        self.least = config.min_requests
        self.span = config.range

    @property
    def instants(self) -> list[_Instant]:
        return [self.count, *self.quantiles]

    def samples(self, at: float, results: Sequence[Result]) -> list[Sample]:
        """One sample per quantile from the results of :attr:`instants`, in their order."""
        counted, *answers = results
        requests = counted.outcome
        base = {
            "url": self.count.url_text,
            "requests_query": self.count.query,
            "requests": None if isinstance(requests, str) else requests,
            "span_s": self.span,
        }
        # Too few requests say nothing about any quantile, however it came out.
        gate = self._requests_reason(requests)
        out = []
        for signal, instant, answer in zip(self.signals, self.quantiles, answers, strict=True):
            detail = {**base, "query": instant.query, "series": answer.series}
            value = answer.outcome
            reason = gate or (value if isinstance(value, str) else _latency_reason(signal, value))
            if reason or isinstance(value, str):
                out.append(Sample(signal, at, None, reason=reason, detail=detail))
            else:
                out.append(Sample(signal, at, value, detail=detail))
        return out

    def _requests_reason(self, requests: float | str) -> str:
        if isinstance(requests, str):
            return f"requests_query: {requests}"
        if math.isinf(requests) or requests < 0:
            return f"requests_query returned {show(requests)}: not a count of requests"
        if not requests >= self.least:  # written so that NaN is too little too
            return f"too little traffic: {show(requests)} requests < min_requests {self.least}"
        return ""


def _q(signal: Signal) -> float:
    assert signal.quantile is not None, f"{signal} is not a quantile"
    return signal.quantile


def _latency_reason(signal: Signal, value: float) -> str:
    if math.isnan(value):
        # histogram_quantile's answer when the buckets grew by nothing (or lack +Inf).
        return "no observations in the histogram's buckets (the query is NaN)"
    if math.isinf(value):
        return f"the query returned {show(value)}: not a latency in seconds"
    return value_problem(signal, value)


class PromQLSource:
    """Asks a Prometheus for ERROR_RATE, MEMORY and/or latency quantiles, together."""

    __slots__ = ("_clock", "_readers", "_session", "signals")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        error_rate: PromQLErrorRate | None = None,
        memory: PromQLMemory | None = None,
        latency: PromQLLatency | None = None,
        quantiles: Iterable[Signal] = (Signal.LATENCY_P95,),
    ) -> None:
        if error_rate is None and memory is None and latency is None:
            raise ProbeError("a promql source needs error_rate, memory or latency")
        self._session = session
        # Unused today: the query's time comes from ``at``; kept for the common constructor.
        self._clock = clock
        readers: list[_Reader | _LatencyReader] = []
        signals: set[Signal] = set()
        for signal, config in ((Signal.ERROR_RATE, error_rate), (Signal.MEMORY, memory)):
            if config is not None:
                readers.append(_Reader(signal, config))
                signals.add(signal)
        if latency is not None:
            wanted = sorted(set(quantiles))
            readers.append(_LatencyReader(latency, wanted))
            signals.update(wanted)
        self._readers = tuple(readers)
        self.signals = frozenset(signals)

    async def collect(self, at: float) -> list[Sample]:
        """Run every query at time ``at``, together, and return one sample per signal."""
        if self._session.closed:
            # Not a fact about Prometheus: aiohttp would raise a bare RuntimeError.
            raise ProbeError("cannot query Prometheus: the HTTP session is closed")
        instants = [i for reader in self._readers for i in reader.instants]
        # Together, so a step waits for one timeout at most.
        results = await asyncio.gather(*(self._query(i, at) for i in instants))
        samples: list[Sample] = []
        start = 0
        for reader in self._readers:
            end = start + len(reader.instants)
            samples += reader.samples(at, results[start:end])
            start = end
        return samples

    async def _query(self, instant: _Instant, at: float) -> Result:
        # ``time`` pins the evaluation to the sample's time: the value does not depend on
        # when the request happened to run, and data written in the past can be queried.
        params = {"query": instant.query, "time": f"{at:.3f}"}
        try:
            async with self._session.get(
                instant.url, params=params, headers=instant.headers, timeout=instant.timeout
            ) as response:
                status = response.status
                body = await read_at_most(response.content, MAX_BODY_BYTES + 1)
        except TimeoutError:
            return Result(instant.timeout_reason)
        except (aiohttp.ClientError, OSError) as exc:
            return Result(describe_error(exc))
        if len(body) > MAX_BODY_BYTES:
            return Result(f"response larger than {MAX_BODY_BYTES} bytes")
        return interpret(status, body, instant.excerpt)
