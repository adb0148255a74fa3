"""Reading a config or rule file, and a pydantic ValidationError as messages naming where.

Every mistake becomes a line naming the file (or the environment), the key path as written
and the value written there: the file, the rule files and the environment all say it so.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from monitor.alerts.channels import CHANNELS
from monitor.configtypes import shown
from monitor.errors import ConfigError
from monitor.redact import redact_url
from monitor.sources.tables import SIGNAL_TABLES, SOURCE_TYPES, TABLE_SOURCES

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A config or rule file larger than this is not one a person wrote."""
MAX_ERRORS_SHOWN = 20


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing file or a syntax error is a ConfigError naming it.

    Only a regular file of at most :data:`MAX_CONFIG_BYTES` of UTF-8 is read.
    """
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{path}: cannot read: not a regular file")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except ValueError as e:  # a NUL in the path
        raise ConfigError(f"{path}: cannot read: not a file name") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: not valid UTF-8 (line {line}, byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


def format_location(loc: Sequence[int | str]) -> str:
    """``("services", 0, "health", "timeout")`` -> ``services[0].health.timeout``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _user_location(loc: Sequence[int | str]) -> list[int | str]:
    """The key path as the user wrote it, without pydantic's union tags and wrappers."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if part in SOURCE_TYPES and out and out[-1] in SIGNAL_TABLES:
            continue
        if part in CHANNELS and len(out) >= 2 and out[-2] == "channels":
            continue
        out.append(part)
    return out


_MISSING = object()


def _raw_at(raw: Any, loc: Sequence[int | str]) -> Any:
    """The value at ``loc`` as written in the file (``_MISSING`` if the path is not there)."""
    for part in loc:
        in_table = isinstance(raw, Mapping) and isinstance(part, str) and part in raw
        in_array = isinstance(raw, list | tuple) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_table or in_array):
            return _MISSING
        raw = raw[part]
    return raw


def _quotable(value: Any) -> bool:
    """Whether a value from the file may be quoted: a scalar, or an array of scalars.

    Tables are not: they may hold a secret written literally (refused, and never echoed).
    """
    if isinstance(value, Mapping):
        return False
    if isinstance(value, list | tuple):
        return not any(isinstance(v, Mapping | list | tuple) for v in value)
    return True


def format_validation_error(
    source: str,
    error: ValidationError,
    raw: Mapping[str, Any] | None = None,
    relocate: Callable[[Sequence[int | str]], list[int | str]] | None = None,
) -> str:
    """One line per mistake: ``FILE: key.path: what is wrong (got VALUE)``.

    With ``raw`` (what was read, before ``${VAR}`` expansion) the value quoted is the one
    written there, never what the environment filled in: that may be a secret. ``relocate``
    turns a key path in what was validated into the one the file wrote (``[[apps]]``).
    """
    lines: list[str] = []
    items = error.errors(include_url=False)
    for item in items[:MAX_ERRORS_SHOWN]:
        loc = _user_location(item["loc"])
        if relocate is not None:
            loc = relocate(loc)
        key = format_location(loc)
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            ctx = item.get("ctx", {})
            tag_key = str(ctx.get("discriminator", "'source'")).strip("'")
            known = sorted(SOURCE_TYPES if tag_key == "source" else CHANNELS)
            if tag_key == "source" and loc and loc[-1] in TABLE_SOURCES:
                known = list(TABLE_SOURCES[str(loc[-1])])  # what this table takes
            tag = ctx.get("tag")
            message = (
                f"unknown {tag_key} {tag!r}" if tag is not None else f"missing key {tag_key!r}"
            )
            message += f" (one of: {', '.join(known)})"
        else:
            message = item["msg"].removeprefix("Value error, ")
        got = item.get("input") if raw is None else _raw_at(raw, loc)
        hidden = (
            item["type"] in ("missing", "secret_literal") or got is _MISSING or not _quotable(got)
        )
        # A URL written with a literal password or token is quoted without them.
        quoted = (
            "" if hidden else f" (got {shown(redact_url(got) if isinstance(got, str) else got)})"
        )
        line = f"{source}: {key}: {message}{quoted}"
        if line not in lines:  # an app's key is checked once per environment it reaches
            lines.append(line)
    if len(items) > MAX_ERRORS_SHOWN:
        lines.append(f"{source}: ... and {len(items) - MAX_ERRORS_SHOWN} more mistakes")
    return "\n".join(lines)
