"""Building blocks of railguard's config models: strict models, durations, ``${VAR}``.

Every config model derives from :class:`Strict` (unknown keys are errors). String values may
reference the environment as ``${VAR}`` (or ``${VAR:-default}``); the environment is passed
as validation context by :func:`monitor.settings.load_config`, so expansion errors carry the
key path like any other validation error. Secrets use :data:`Secret`: they must be a
``${VAR}`` reference, never a literal in the file.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError
from yarl import URL

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
MAX_DURATION = 366 * DAY
"""No duration in railguard's config means more than a year: a longer one is a typo."""
MAX_TIMEOUT = 10 * MINUTE
"""No request railguard makes is worth waiting longer for."""
MAX_NUMBER = 1e15
"""Thresholds and other numbers: anything larger cannot be meant (and loses precision)."""

_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxtuple = 2, 6, 6, 6


def shown(value: Any) -> str:
    """``repr(value)`` cut short: messages quote what they were given, never all of it."""
    try:
        return _SHOWN.repr(value)
    except Exception:  # an odd object's own __repr__: say what it is instead
        return f"<{type(value).__name__}>"


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context
    if isinstance(context, Mapping):
        environ = context.get("environ")
        if isinstance(environ, Mapping):
            return environ
    return {}


class Expansions:
    """What ``${VAR}`` expansion did while a config was read, so what railguard shows can
    say ``${VAR}`` instead of its value (:class:`monitor.redact.Redactor`)."""

    __slots__ = ("values", "written")

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        """Each variable a reference took its value from -> that value."""
        self.written: dict[str, str] = {}
        """Each string that expansion changed -> the string as the file wrote it."""


def expand(text: str, environ: Mapping[str, str], used: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from ``environ``; an unset VAR is an error.

    ``used`` collects each variable taken from ``environ`` with its value.
    """

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            if used is not None:
                used[name] = environ[name]
            return environ[name]
        if default is not None:
            return default
        raise ValueError(f"environment variable {name} is not set (referenced as {match[0]!r})")

    return _REFERENCE.sub(substitute, text)


def expand_in(text: str, info: ValidationInfo) -> str:
    """:func:`expand` with the validation context's environment, noting what it did in the
    context's :class:`Expansions` (if it has one)."""
    context = info.context
    seen = context.get("expansions") if isinstance(context, Mapping) else None
    if not isinstance(seen, Expansions):
        return expand(text, _environ(info))
    expanded = expand(text, _environ(info), seen.values)
    if expanded != text:
        seen.written[expanded] = text
    return expanded


def _expand_text(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return expand_in(value, info)
    return value


def _expand_secret(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, SecretStr):
        return value
    if not isinstance(value, str) or not _WHOLE_REFERENCE.match(value):
        # A custom error type, so error reports know not to echo the value back.
        raise PydanticCustomError(
            "secret_literal",
            "secrets come only from the environment: write a reference such as "
            '"${SLACK_WEBHOOK_URL}", not the secret itself',
        )
    return expand_in(value, info)


class DurationTooLong(ValueError):
    """A well-formed duration longer than :data:`MAX_DURATION`."""


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"3m"``, ``"1h30m"``, ``"250ms"`` -> seconds. Bare numbers are refused.

    The result is finite and at most :data:`MAX_DURATION` (else :class:`DurationTooLong`).
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f'durations are strings with a unit, such as "90s" or "3m" (got {shown(value)})'
        )
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f'not a duration: {shown(value)} (use a number and a unit: ms, s, m, h, d, as in "90s")'
        )
    if not math.isfinite(total) or total > MAX_DURATION:
        raise DurationTooLong(
            f"duration too long: {shown(value)} (at most {MAX_DURATION / DAY:g}d)"
        )
    return total


def _duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        expanded = expand_in(value, info)
        try:
            return parse_duration(expanded)
        except ValueError as e:
            if expanded == value:
                raise
            # Never echo what a ${VAR} held: it may be a secret put in the wrong place.
            raise ValueError(
                f"not a duration: {shown(value)} (its value from the environment is not a "
                'duration such as "90s")'
            ) from e
    if info.context is None and isinstance(value, int | float) and not isinstance(value, bool):
        # Built in code, not read from a file: plain seconds are fine.
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError("durations must be finite")
        return seconds
    return parse_duration(value)


def _percent(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        text = expand_in(value, info).strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100.0
            except ValueError:
                raise ValueError(f"not a percentage: {shown(value)}") from None
        return text
    return value


def _finite_number(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise ValueError(f"must be a finite number between -{MAX_NUMBER:g} and {MAX_NUMBER:g}")
    return value


def _http_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _timeout(value: float) -> float:
    if value <= 0:
        raise ValueError("timeout must be more than 0s")
    if value > MAX_TIMEOUT:
        raise ValueError(f"timeout must be at most {MAX_TIMEOUT / MINUTE:g}m")
    return value


def format_seconds(seconds: float) -> str:
    """``86400`` -> ``24h``, ``0.5`` -> ``500ms``: a limit as a config file writes it."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def within(
    lo: float, hi: float, *, above: bool = False, why_lo: str = "", why_hi: str = ""
) -> AfterValidator:
    """A duration's bounds (``above``: more than ``lo``, not equal), said as durations."""

    def check(seconds: float) -> float:
        if seconds < lo or (above and seconds == lo):
            least = "more than" if above else "at least"
            raise ValueError(f"must be {least} {format_seconds(lo)}{why_lo and ': ' + why_lo}")
        if seconds > hi:
            raise ValueError(f"must be at most {format_seconds(hi)}{why_hi and ': ' + why_hi}")
        return seconds

    return AfterValidator(check)


Text = Annotated[str, BeforeValidator(_expand_text)]
"""A string that may reference the environment as ``${VAR}``."""

Secret = Annotated[SecretStr, BeforeValidator(_expand_secret)]
"""A secret: must be exactly one ``${VAR}`` reference in the file."""

Duration = Annotated[float, BeforeValidator(_duration)]
"""A duration string in the file (``"3m"``), seconds once validated."""

Number = Annotated[float, BeforeValidator(_percent), AfterValidator(_finite_number)]
"""A number, or a percentage string such as ``"5%"``."""


def _threshold(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return expand_in(value, info).strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f'a threshold is a number, "5%" or "500ms" (got {shown(value)})')
    return _finite_number(float(value))


Threshold = Annotated[float | str, BeforeValidator(_threshold)]
"""A rule threshold as written: a number, a percentage or a duration; which forms a signal
takes is decided with the signal (:func:`monitor.rules.threshold_value`)."""
"""A finite number; ``"5%"`` is accepted and means 0.05."""

HttpUrl = Annotated[str, BeforeValidator(_expand_text), AfterValidator(_http_url)]
"""An http:// or https:// URL with a host; may reference the environment."""

Timeout = Annotated[float, BeforeValidator(_duration), AfterValidator(_timeout)]
"""A duration more than zero and at most :data:`MAX_TIMEOUT`."""
