"""An event's data as the store keeps it: flat JSON, written by :func:`stored` and read back
by forgiving readers.

The store holds what every version of railguard wrote, so each reader takes whatever is
there: a missing key, None or a value of the wrong type gives the default (a number must be
finite), never an exception. :mod:`monitor.events` builds its typed events with these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any


def text(data: Mapping[str, Any], key: str, default: str = "") -> str:
    """The value at ``key`` as text (``default`` when missing or None)."""
    value = data.get(key)
    if value is None:
        return default
    return value if isinstance(value, str) else str(value)


def maybe_text(data: Mapping[str, Any], key: str) -> str | None:
    """The value at ``key`` as text; None when missing or empty."""
    value = text(data, key)
    return value or None


def number(data: Mapping[str, Any], key: str) -> float | None:
    """The value at ``key`` if it is a finite number (not a bool); else None."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def integer(data: Mapping[str, Any], key: str) -> int | None:
    """The value at ``key`` if it is a whole finite number; else None."""
    value = number(data, key)
    return int(value) if value is not None and value.is_integer() else None


def texts(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """The list at ``key`` as texts; empty when it is not a list."""
    value = data.get(key)
    if not isinstance(value, list | tuple):
        return ()
    return tuple(item if isinstance(item, str) else str(item) for item in value)


def mappings(data: Mapping[str, Any], key: str) -> tuple[Mapping[str, Any], ...]:
    """The tables in the list at ``key`` (anything else in it left out)."""
    value = data.get(key)
    if not isinstance(value, list | tuple):
        return ()
    return tuple(dict(item) for item in value if isinstance(item, Mapping))


_STORED_AS = {"from_": "from", "escalation": "kind"}


def stored(value: Any) -> dict[str, Any]:
    """An event's data as the store keeps it: flat JSON (nested evidence or a failed
    rollback spread under the event's own keys), ``kind`` left to its column, None, False and
    empty lists left out."""
    flat: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for f in fields(value):
        item = getattr(value, f.name)
        if f.name == "kind" or item is None or item is False or item == ():
            continue
        if is_dataclass(item):
            flat |= stored(item)
        else:
            own[_STORED_AS.get(f.name, f.name)] = list(item) if isinstance(item, tuple) else item
    return flat | own
