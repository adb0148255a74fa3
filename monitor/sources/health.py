"""The health source: an HTTP probe whose answer is 1.0 (healthy) or 0.0 (failing).

Health is never UNKNOWN. Whatever keeps the probe from a good answer (timeout, refused or
reset connection, DNS failure, an unexpected status, a body condition not met) is a failing
sample whose ``reason`` says which, so the engine and the people reading an incident see the
same cause. With ``latency = { source = "health" }`` the probes' response times also give
latency quantiles (:mod:`.probe_latency`).
"""

from __future__ import annotations

import asyncio
import errno
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import field_validator, model_validator
from yarl import URL

from monitor.clock import Clock
from monitor.configtypes import MINUTE, Duration, HttpUrl, Strict, Text, Timeout, within
from monitor.errors import ProbeError
from monitor.model import Sample, Signal, format_duration
from monitor.redact import redact_url
from monitor.sources.probe_latency import HealthLatency, ProbeTimes
from monitor.sources.release import ReleaseCheck, echo_in_header, echo_in_json

MAX_REDIRECTS = 5
# Shared by every check that expects any 2xx: a set per service costs 8 KB each.
ANY_2XX = frozenset(range(200, 300))

JsonScalar = str | int | float | bool


class HealthCheck(Strict):
    """How to probe a service's health endpoint (``health = { url = "...", ... }``)."""

    url: HttpUrl
    method: Literal["GET", "HEAD"] = "GET"
    timeout: Timeout = 5.0
    expected_status: list[int] | None = None
    body_contains: str | None = None
    json_path: str | None = None
    json_equals: JsonScalar | None = None
    max_body_bytes: int = 65536
    headers: dict[str, Text] = {}
    # A serverless service woken from SLEEPING: failing probes this long after railguard saw
    # it awake (until the first healthy one) are UNKNOWN, never a breach (sources/sleep.py).
    cold_start: Annotated[Duration, within(0.0, 10 * MINUTE)] = 30.0
    # Where the app echoes which deployment answered (sources/release.py): during a deploy's
    # overlap, answers from the deployment being replaced say nothing about the new one.
    release: ReleaseCheck | None = None

    @field_validator("expected_status")
    @classmethod
    def _statuses(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("expected_status must list at least one status (or be left out)")
        for status in value:
            if not 100 <= status <= 599:
                raise ValueError(f"expected_status {status} is not an HTTP status (100..599)")
        return value

    @field_validator("json_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not all(value.split(".")):
            raise ValueError(f'json_path {value!r} has an empty segment (write "checks.db.ok")')
        return value

    @field_validator("max_body_bytes")
    @classmethod
    def _positive_size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"max_body_bytes must be more than 0 (got {value})")
        return value

    @model_validator(mode="after")
    def _body_conditions(self) -> HealthCheck:
        if self.json_equals is not None and self.json_path is None:
            raise ValueError("json_equals needs json_path (the value to compare)")
        if self.method == "HEAD" and (self.body_contains is not None or self.json_path is not None):
            raise ValueError("a HEAD response has no body: body_contains and json_path need GET")
        if self.method == "HEAD" and self.release is not None and self.release.json_path:
            raise ValueError("a HEAD response has no body: release.json_path needs GET")
        return self


class HealthSource:
    """Probes one health endpoint; each collect yields one HEALTH sample, and with ``latency``
    one sample per quantile of the recent probes' response times."""

    __slots__ = (
        "_body_limit",
        "_check",
        "_clock",
        "_echo_path",
        "_expected",
        "_expected_text",
        "_headers",
        "_needle",
        "_path",
        "_release",
        "_session",
        "_timeout",
        "_timeout_reason",
        "_times",
        "_url",
        "_url_text",
        "signals",
    )

    def __init__(
        self,
        check: HealthCheck,
        session: aiohttp.ClientSession,
        clock: Clock,
        *,
        latency: HealthLatency | None = None,
        quantiles: Iterable[Signal] = (Signal.LATENCY_P95,),
    ) -> None:
        self._check = check
        self._session = session
        self._clock = clock
        # Everything that does not change between probes is built once, here.
        self._url = URL(check.url)
        self._url_text = redact_url(check.url)
        self._headers = dict(check.headers) or None
        self._timeout = aiohttp.ClientTimeout(total=check.timeout)
        self._timeout_reason = f"timeout after {format_duration(check.timeout)}"
        self._expected = frozenset(check.expected_status) if check.expected_status else ANY_2XX
        self._expected_text = _describe_statuses(check.expected_status)
        self._needle = None if check.body_contains is None else check.body_contains.encode()
        self._path = None if check.json_path is None else tuple(check.json_path.split("."))
        self._release = check.release
        # The echo in the body is read whatever the status: an error page may say who sent it.
        self._echo_path = None if check.release is None else check.release.json_path
        needs_body = self._needle is not None or self._path is not None or bool(self._echo_path)
        self._body_limit = check.max_body_bytes if needs_body else None
        self._times = None if latency is None else ProbeTimes(latency, sorted(set(quantiles)))
        self.signals = frozenset({Signal.HEALTH, *(self._times.signals if self._times else ())})

    @property
    def times(self) -> ProbeTimes | None:
        """The probes' response times (``latency = { source = "health" }``), if it keeps them:
        the release check disowns another deployment's, a wake's cold start restarts them."""
        return self._times

    async def collect(self, at: float) -> list[Sample]:
        """Probe once and report 1.0 (healthy) or 0.0 (failing, with the reason), then the
        latency quantiles (if asked for) with this probe among them."""
        if self._session.closed:
            # Not a fact about the target: aiohttp would raise a bare RuntimeError.
            raise ProbeError(f"cannot probe {self._url_text}: the HTTP session is closed")
        start = self._clock.monotonic()
        status: int | None = None
        error: str | None = None
        echo: tuple[str | None, str] = (None, "no complete answer to say which deployment sent it")
        try:
            async with self._session.request(
                self._check.method,
                self._url,
                headers=self._headers,
                timeout=self._timeout,
                max_redirects=MAX_REDIRECTS,
            ) as response:
                status = response.status
                expected = status in self._expected
                body = _Body()
                if self._body_limit is not None and (expected or self._echo_path):
                    body = await _Body.read(response, self._body_limit)
                if not expected:
                    reason = f"status {status} (expected {self._expected_text})"
                else:
                    reason = self._check_body(body)
                echo = self._echo(response, body)
        except TimeoutError as exc:
            reason, error = self._timeout_reason, _error_text(exc)
        except (aiohttp.ClientError, OSError) as exc:
            reason, error = describe_error(exc), _error_text(exc)
        elapsed = self._clock.monotonic() - start
        latency_ms = round(elapsed * 1000.0, 3)
        detail: dict[str, Any] = {
            "status": status,
            "latency_ms": latency_ms,
            "url": self._url_text,
            "error": error,
        }
        if self._release is not None:
            detail["echoed"] = echo[0]
            if echo[0] is None:
                detail["unattributed"] = echo[1]
        health = Sample(Signal.HEALTH, at, 0.0 if reason else 1.0, reason=reason, detail=detail)
        if self._times is None:
            return [health]
        # Any answer took that long, whatever its status; no answer has no response time.
        self._times.record(start, None if error is not None else elapsed)
        return [health, *self._times.samples(at, self._clock.monotonic())]

    def _check_body(self, body: _Body) -> str:
        """The reason the body fails the configured conditions, or "" when it passes.

        Only the health conditions judge it: a body read just for the release check's echo
        makes no health verdict.
        """
        if self._needle is None and self._path is None:
            return ""
        if body.problem:
            return body.problem
        if self._needle is not None and self._needle not in body.data:
            return f"body does not contain {self._check.body_contains!r}"
        if self._path is None:
            return ""
        document, problem = body.document()
        if problem:
            return problem
        return _json_condition(document, self._path, self._check)

    def _echo(self, response: aiohttp.ClientResponse, body: _Body) -> tuple[str | None, str]:
        """Which deployment the answer says sent it (the release check), or why not known."""
        if self._release is None:
            return None, ""
        if self._release.header is not None:
            return echo_in_header(response.headers, self._release.header)
        assert self._echo_path is not None
        if body.problem:
            return None, body.problem
        document, problem = body.document()
        if problem:
            return None, problem
        return echo_in_json(document, self._echo_path)


class _Body:
    """A response body read up to a limit, parsed as JSON at most once."""

    __slots__ = ("_document", "data", "problem")

    def __init__(self, data: bytes = b"", problem: str = "") -> None:
        self.data = data
        self.problem = problem  # why the body could not be used: "" when it could
        self._document: tuple[Any, str] | None = None

    @classmethod
    async def read(cls, response: aiohttp.ClientResponse, limit: int) -> _Body:
        """At most ``limit`` bytes of the body: a huge or endless body costs no more."""
        length = response.content_length
        if length is not None and length > limit:
            return cls(problem=f"body is {length} bytes, over max_body_bytes {limit}")
        data = await _read_at_most(response.content, limit + 1)
        if len(data) > limit:
            return cls(problem=f"body is over max_body_bytes {limit}")
        return cls(data)

    def document(self) -> tuple[Any, str]:
        """The body as JSON, or why it is not."""
        if self._document is None:
            try:
                self._document = json.loads(self.data), ""
            except ValueError as exc:
                self._document = None, f"body is not valid JSON ({_first_line(exc)})"
            except RecursionError:  # nested past what the parser can follow
                self._document = None, "body is not valid JSON (nested too deeply)"
        return self._document


async def _read_at_most(content: aiohttp.StreamReader, size: int) -> bytes:
    """Up to ``size`` bytes of the body: a huge or endless body costs no more than that."""
    try:
        return await content.readexactly(size)
    except asyncio.IncompleteReadError as short:
        return short.partial


_MISSING: Any = object()


def _json_condition(document: Any, path: tuple[str, ...], check: HealthCheck) -> str:
    """The reason ``document`` fails the json_path condition, or "" when it holds."""
    value = document
    for segment in path:
        value = _step(value, segment)
        if value is _MISSING:
            return f"json path {check.json_path} not found (no {segment!r})"
    expected = check.json_equals
    if expected is None:
        return "" if value else f"json path {check.json_path} is {_show(value)}"
    if value == expected and isinstance(value, bool) == isinstance(expected, bool):
        return ""
    return f"json path {check.json_path} is {_show(value)} (expected {_show(expected)})"


def _step(value: Any, segment: str) -> Any:
    if isinstance(value, dict):
        return value.get(segment, _MISSING)
    if isinstance(value, list):
        try:
            return value[int(segment)]
        except (ValueError, IndexError):
            return _MISSING
    return _MISSING


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_statuses(statuses: list[int] | None) -> str:
    if statuses is None:
        return "2xx"
    if len(statuses) == 1:
        return str(statuses[0])
    return "one of " + ", ".join(str(status) for status in statuses)


def describe_error(exc: BaseException) -> str:
    """A failing sample's reason for a request that raised ``exc`` (timeouts aside)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"dns lookup failed: {exc.host}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"tls error: {_first_line(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"connection refused: {exc.host}:{exc.port}"
        return f"cannot connect: {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNRESET
    ):
        return f"connection reset: {_first_line(exc)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by the server before a complete response"
    if isinstance(exc, aiohttp.TooManyRedirects):
        return f"too many redirects (more than {MAX_REDIRECTS})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"body read failed: {_first_line(exc)}"
    return f"request failed: {_error_text(exc)}"


def _error_text(exc: BaseException) -> str:
    text = _first_line(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    return str(exc).partition("\n")[0][:200]
