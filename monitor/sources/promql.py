"""The promql source: error rate and memory as instant PromQL queries against a Prometheus.

The query does the arithmetic (``sum(rate(...5xx...)) / sum(rate(...))``), so there is no
counter state here: each collect asks Prometheus for the query's value at the sample's time.
A query must come back as one number. Whatever keeps it from that (an error from Prometheus,
no series or several, NaN when there was no traffic, a value outside the signal's range, a
failed request) makes the sample UNKNOWN with a reason, never a breach.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any, Literal, NamedTuple

import aiohttp
from pydantic import Field, field_validator, model_validator
from yarl import URL

from monitor.clock import Clock
from monitor.configtypes import HttpUrl, Secret, Strict, Timeout
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.sources.health import describe_error

MAX_BODY_BYTES = 1024 * 1024
"""A one-number answer is tiny; a body past this is a query returning far too many series."""
_EXCERPT = 80


class _Query(Strict):
    """What both promql signals share: which Prometheus, which query, how patiently."""

    source: Literal["promql"]
    url: HttpUrl
    """The Prometheus base URL; the source calls ``<url>/api/v1/query``."""
    query: str
    timeout: Timeout = 5.0
    bearer_token: Secret | None = None
    """Sent as ``Authorization: Bearer ...``, for a hosted Prometheus."""

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_empty(value, "query")

    @model_validator(mode="after")
    def _one_credential(self) -> _Query:
        if self.bearer_token is not None and URL(self.url).user is not None:
            raise ValueError("use either credentials in url or bearer_token, not both")
        return self


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


def _non_empty(value: str, name: str) -> str:
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    return value


class _Result(NamedTuple):
    """One query's outcome: a number (possibly NaN), or a string saying why there is none."""

    outcome: float | str
    series: int | None = None


class _Instant:
    """One query against one Prometheus, with everything that does not change built once."""

    __slots__ = ("excerpt", "headers", "query", "timeout", "timeout_reason", "url", "url_text")

    def __init__(self, config: _Query, query: str) -> None:
        base = URL(config.url)
        self.url = base.with_path(base.path.rstrip("/") + "/api/v1/query")
        self.url_text = str(base.with_password(None)) if base.password else config.url
        self.query = query
        self.excerpt = _excerpt(query)
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

    def read(self, at: float, main: _Result, traffic: _Result | None) -> Sample:
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

    def _traffic_reason(self, traffic: _Result | None) -> str:
        if traffic is None:
            return ""
        volume = traffic.outcome
        if isinstance(volume, str):
            return f"traffic_query: {volume}"
        if not volume >= self.min_traffic:  # written so that NaN is too little too
            return f"too little traffic: {_show(volume)} < min_traffic {self.min_traffic:g}"
        return ""

    def _value_reason(self, value: float) -> str:
        if not math.isfinite(value):
            # 0/0 is what a ratio of rates gives when nothing happened in the window.
            return f"no traffic (the query is {_show(value)})"
        low, high = self.signal.bounds
        if low <= value <= high:
            return ""
        reason = f"the query returned {value:g}, outside the {self.signal} range {low:g}..{high:g}"
        if self.signal is Signal.ERROR_RATE:
            reason += ": it must divide the errors by the total"
        return reason


class PromQLSource:
    """Asks a Prometheus for ERROR_RATE and/or MEMORY, one instant query per signal."""

    __slots__ = ("_clock", "_readers", "_session", "signals")

    def __init__(
        self,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        error_rate: PromQLErrorRate | None = None,
        memory: PromQLMemory | None = None,
    ) -> None:
        if error_rate is None and memory is None:
            raise ProbeError("a promql source needs error_rate, memory or both")
        self._session = session
        # Unused today: the query's time comes from ``at``; kept for the common constructor.
        self._clock = clock
        readers: list[_Reader] = []
        if error_rate is not None:
            readers.append(_Reader(Signal.ERROR_RATE, error_rate))
        if memory is not None:
            readers.append(_Reader(Signal.MEMORY, memory))
        self._readers = tuple(readers)
        self.signals = frozenset(r.signal for r in readers)

    async def collect(self, at: float) -> list[Sample]:
        """Run every query at time ``at``, together, and return one sample per signal."""
        if self._session.closed:
            # Not a fact about Prometheus: aiohttp would raise a bare RuntimeError.
            raise ProbeError("cannot query Prometheus: the HTTP session is closed")
        instants = [i for reader in self._readers for i in reader.instants]
        # Together, so a step waits for one timeout at most.
        results = iter(await asyncio.gather(*(self._query(i, at) for i in instants)))
        samples = []
        for reader in self._readers:
            main = next(results)
            traffic = None if reader.traffic is None else next(results)
            samples.append(reader.read(at, main, traffic))
        return samples

    async def _query(self, instant: _Instant, at: float) -> _Result:
        # ``time`` pins the evaluation to the sample's time: the value does not depend on
        # when the request happened to run, and data written in the past can be queried.
        params = {"query": instant.query, "time": f"{at:.3f}"}
        try:
            async with self._session.get(
                instant.url, params=params, headers=instant.headers, timeout=instant.timeout
            ) as response:
                status = response.status
                body = await _read_at_most(response.content, MAX_BODY_BYTES + 1)
        except TimeoutError:
            return _Result(instant.timeout_reason)
        except (aiohttp.ClientError, OSError) as exc:
            return _Result(describe_error(exc))
        if len(body) > MAX_BODY_BYTES:
            return _Result(f"response larger than {MAX_BODY_BYTES} bytes")
        return _interpret(status, body, instant.excerpt)


def _interpret(status: int, body: bytes, excerpt: str) -> _Result:
    """The number in a ``/api/v1/query`` answer, or the reason there is none."""
    try:
        document = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError too
        if not 200 <= status < 300:
            return _Result(f"status {status} (expected 2xx)")
        return _Result(f"response is not JSON ({_first_line(exc)})")
    if not isinstance(document, dict):
        return _Result(f"unexpected response: {_clip(body)}")
    if document.get("status") != "success" or not 200 <= status < 300:
        if "error" in document:
            return _Result(f"{document.get('errorType', 'error')}: {document['error']}")
        return _Result(f"status {status} (expected 2xx)")
    try:
        kind = document["data"]["resultType"]
        result = document["data"]["result"]
        if kind == "scalar":
            return _Result(float(result[1]))
        if kind != "vector":
            reason = f"query returned a {kind}; it must return an instant vector or a scalar"
            return _Result(reason)
        if len(result) == 1:
            return _Result(float(result[0]["value"][1]), series=1)
    except (KeyError, TypeError, IndexError, ValueError):
        return _Result(f"unexpected response: {_clip(body)}")
    if not result:
        return _Result(f"query returned no series: {excerpt}", series=0)
    reason = f"query returned {len(result)} series; it must return one: wrap it in sum() or max()"
    return _Result(reason, series=len(result))


async def _read_at_most(content: aiohttp.StreamReader, size: int) -> bytes:
    """Up to ``size`` bytes of the body: a huge or endless body costs no more than that."""
    try:
        return await content.readexactly(size)
    except asyncio.IncompleteReadError as short:
        return short.partial


def _show(value: float) -> str:
    """``NaN``, ``+Inf``, ``-Inf`` as Prometheus writes them; other numbers as ``%g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def _excerpt(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _clip(body: bytes) -> str:
    text = body.decode(errors="replace")
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _first_line(exc: BaseException) -> str:
    return str(exc).partition("\n")[0][:200]
