"""Reading a Prometheus ``/api/v1/query`` answer: one number, or the reason there is none.

Everything in the answer is checked before it is used: the JSON (NaN and infinities are not
JSON; Prometheus writes such values as strings), its shape (one series of an instant vector,
or a scalar), and the value's spelling. Whatever is off becomes a reason, never an exception.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any, NamedTuple

import aiohttp

# How Prometheus (Go's strconv) writes a sample value: decimal or exponent, NaN, +Inf, -Inf.
_FLOAT = re.compile(
    r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|infinity)|nan",
    re.IGNORECASE | re.ASCII,
)
_EXCERPT = 80


class Result(NamedTuple):
    """One query's outcome: a number (possibly NaN), or a string saying why there is none."""

    outcome: float | str
    series: int | None = None


def interpret(status: int, body: bytes, excerpt: str) -> Result:
    """The number in a ``/api/v1/query`` answer, or the reason there is none."""
    try:
        return _read_answer(status, body, excerpt)
    except RecursionError:  # JSON nested past what the parser (or a repr of it) can follow
        return Result("response is nested too deeply to be an answer")


def _read_answer(status: int, body: bytes, excerpt: str) -> Result:
    try:
        # NaN and Infinity are not JSON: Prometheus writes such values as strings.
        document = json.loads(body, parse_constant=_refuse_constant)
    except ValueError as exc:  # UnicodeDecodeError too
        if not 200 <= status < 300:
            return Result(f"status {status} (expected 2xx)")
        return Result(f"response is not JSON ({first_line(exc)})")
    if not isinstance(document, dict):
        return Result(f"unexpected response: {_clip(body)}")
    if document.get("status") != "success" or not 200 <= status < 300:
        if "error" in document:
            error_type = _text(document.get("errorType", "error"))
            return Result(f"{error_type}: {_text(document['error'])}")
        return Result(f"status {status} (expected 2xx)")
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar":
        return Result(_point(result, body))
    if kind in ("matrix", "string"):
        return Result(f"query returned a {kind}; it must return an instant vector or a scalar")
    if kind != "vector" or not isinstance(result, list):
        return Result(f"unexpected response: {_clip(body)}")
    if not result:
        return Result(f"query returned no series: {excerpt}", series=0)
    if len(result) > 1:
        reason = (
            f"query returned {len(result)} series; it must return one: wrap it in sum() or max()"
        )
        return Result(reason, series=len(result))
    entry = result[0]
    point = entry.get("value") if isinstance(entry, dict) else None
    return Result(_point(point, body), series=1)


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


async def read_at_most(content: aiohttp.StreamReader, size: int) -> bytes:
    """Up to ``size`` bytes of the body: a huge or endless body costs no more than that."""
    try:
        return await content.readexactly(size)
    except asyncio.IncompleteReadError as short:
        return short.partial


def show(value: float) -> str:
    """``NaN``, ``+Inf``, ``-Inf`` as Prometheus writes them; other numbers as ``%g``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:g}"


def excerpt(query: str) -> str:
    """A query on one line, clipped, to name it in a reason."""
    text = " ".join(query.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _clip(body: bytes) -> str:
    text = body.decode(errors="replace")
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line, clipped."""
    return str(exc).partition("\n")[0][:200]
