"""Building blocks of railguard's config models: strict models, durations, ``${VAR}``.

Every config model derives from :class:`Strict` (unknown keys are errors). String values may
reference the environment as ``${VAR}`` (or ``${VAR:-default}``); the environment is passed
as validation context by :func:`monitor.settings.load_config`, so expansion errors carry the
key path like any other validation error. Secrets use :data:`Secret`: they must be a
``${VAR}`` reference, never a literal in the file.
"""

from __future__ import annotations

import re
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
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    context = info.context
    if isinstance(context, Mapping):
        environ = context.get("environ")
        if isinstance(environ, Mapping):
            return environ
    return {}


def expand(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from ``environ``; an unset VAR is an error."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise ValueError(f"environment variable {name} is not set (referenced as {match[0]!r})")

    return _REFERENCE.sub(substitute, text)


def _expand_text(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return expand(value, _environ(info))
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
    return expand(value, _environ(info))


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"3m"``, ``"1h30m"``, ``"250ms"`` -> seconds. Bare numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f'durations are strings with a unit, such as "90s" or "3m" (got {value!r})'
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
            f'not a duration: {value!r} (use a number and a unit: ms, s, m, h, d, as in "90s")'
        )
    return total


def _duration(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        return parse_duration(expand(value, _environ(info)))
    if info.context is None and isinstance(value, int | float) and not isinstance(value, bool):
        # Built in code, not read from a file: plain seconds are fine.
        return float(value)
    return parse_duration(value)


def _percent(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        text = expand(value, _environ(info)).strip()
        if text.endswith("%"):
            try:
                return float(text[:-1]) / 100.0
            except ValueError:
                raise ValueError(f"not a percentage: {value!r}") from None
        return text
    return value


def _http_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("timeout must be more than 0s")
    return value


Text = Annotated[str, BeforeValidator(_expand_text)]
"""A string that may reference the environment as ``${VAR}``."""

Secret = Annotated[SecretStr, BeforeValidator(_expand_secret)]
"""A secret: must be exactly one ``${VAR}`` reference in the file."""

Duration = Annotated[float, BeforeValidator(_duration)]
"""A duration string in the file (``"3m"``), seconds once validated."""

Number = Annotated[float, BeforeValidator(_percent)]
"""A number; ``"5%"`` is accepted and means 0.05."""

HttpUrl = Annotated[str, BeforeValidator(_expand_text), AfterValidator(_http_url)]
"""An http:// or https:// URL with a host; may reference the environment."""

Timeout = Annotated[float, BeforeValidator(_duration), AfterValidator(_positive)]
"""A duration that must be more than zero."""
