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
import re
from typing import Any, Literal, NamedTuple

import aiohttp
from pydantic import Field, field_validator, model_validator
from yarl import URL

from monitor.clock import Clock
from monitor.configtypes import HttpUrl, Secret, Strict, Timeout
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.redact import redact_url
from monitor.sources.exposition_checks import MAX_MEMORY_RATIO
from monitor.sources.health import describe_error

# How Prometheus (Go's strconv) writes a sample value: decimal or exponent, NaN, +Inf, -Inf.
_FLOAT = re.compile(
    r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity)|nan",
    re.IGNORECASE | re.ASCII,
)
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
        self.url_text = redact_url(config.url)
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
        if math.isinf(volume) or volume < 0:
            return f"traffic_query returned {_show(volume)}: not a count of requests"
        if not volume >= self.min_traffic:  # written so that NaN is too little too
            return f"too little traffic: {_show(volume)} < min_traffic {self.min_traffic:g}"
        return ""

    def _value_reason(self, value: float) -> str:
        if not math.isfinite(value):
            # 0/0 is what a ratio of rates gives when nothing happened in the window.
            return f"no traffic (the query is {_show(value)})"
        low, high = self.signal.bounds
        if self.signal is Signal.MEMORY:  # usage may pass the limit briefly, not a thousandfold
            high = min(high, MAX_MEMORY_RATIO)
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
        return _read_answer(status, body, excerpt)
    except RecursionError:  # JSON nested past what the parser (or a repr of it) can follow
        return _Result("response is nested too deeply to be an answer")


def _read_answer(status: int, body: bytes, excerpt: str) -> _Result:
    try:
        # NaN and Infinity are not JSON: Prometheus writes such values as strings.
        document = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # UnicodeDecodeError too
        if not 200 <= status < 300:
            return _Result(f"status {status} (expected 2xx)")
        return _Result(f"response is not JSON ({_first_line(exc)})")
    if not isinstance(document, dict):
        return _Result(f"unexpected response: {_clip(body)}")
    if document.get("status") != "success" or not 200 <= status < 300:
        if "error" in document:
            error_type = _text(document.get("errorType", "error"))
            return _Result(f"{error_type}: {_text(document['error'])}")
        return _Result(f"status {status} (expected 2xx)")
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar":
        return _Result(_point(result, body))
    if kind in ("matrix", "string"):
        return _Result(f"query returned a {kind}; it must return an instant vector or a scalar")
    if kind != "vector" or not isinstance(result, list):
        return _Result(f"unexpected response: {_clip(body)}")
    if not result:
        return _Result(f"query returned no series: {excerpt}", series=0)
    if len(result) > 1:
        reason = (
            f"query returned {len(result)} series; it must return one: wrap it in sum() or max()"
        )
        return _Result(reason, series=len(result))
    entry = result[0]
    point = entry.get("value") if isinstance(entry, dict) else None
    return _Result(_point(point, body), series=1)


def _point(point: Any, body: bytes) -> float | str:
    """The value of a ``[<time>, "<value>"]`` pair (NaN and infinities included), or why not."""
    if not (isinstance(point, list) and len(point) == 2 and _is_real(point[0])):
        return f"unexpected response: {_clip(body)}"
    raw = point[1]
    if isinstance(raw, str) and _FLOAT.fullmatch(raw):
        return float(raw)
    return f"the query's value {_text(repr(raw), 40)} is not a number"


def _is_real(value: Any) -> bool:
    """A JSON number that is a finite real (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range
        return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(value: Any, limit: int = 200) -> str:
    """A value from the answer, clipped, for a reason."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
