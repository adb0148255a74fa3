"""Railway's answers as JSON, a large one decoded a piece at a time.

``json.loads`` is C that holds the GIL throughout: the batched poll's answer for 1,000
services (1.7 MB) held the event loop, and the store's thread, for 60-130 ms, and a rollback
decision overlapping it waited that long. :func:`decode` gives the same value, or raises the
same error, but decodes the top-level object's members, and the members of the objects in
it (the poll's ``data``: one per alias), one at a time with the same C scanner, and yields to
the loop after every ``chunk`` characters.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

CHUNK = 64 * 1024  # characters decoded between two yields to the loop: a few ms
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as json.decoder skips it


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for json: NaN, Infinity and -Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(parse_constant=refuse_constant)


def loads(raw: bytes) -> Any:
    """``raw`` decoded in one go (NaN and infinities refused)."""
    return json.loads(raw, parse_constant=refuse_constant)


async def decode(raw: bytes, chunk: int = CHUNK) -> Any:
    """What :func:`loads` gives for ``raw`` (or raises: ValueError, RecursionError), with a
    yield to the event loop after every ``chunk`` characters; one that small is decoded in
    one go. The two levels of objects it takes apart keep JSON's rules as ``json`` has them:
    a duplicate key's last value wins, in the place of its first."""
    if len(raw) <= chunk:
        return loads(raw)
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
    pace = _Pace(chunk)
    value, end = await _value(text, _space(text, 0), 2, pace)
    end = _space(text, end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return value


class _Pace:
    """Counts the characters decoded since the last yield."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self.since = 0

    async def decoded(self, characters: int) -> None:
        self.since += characters
        if self.since >= self.chunk:
            self.since = 0
            await asyncio.sleep(0)


def _space(text: str, idx: int) -> int:
    end: int = _SPACE.match(text, idx).end()  # type: ignore[union-attr]  # it matches empty
    return end


async def _value(text: str, idx: int, levels: int, pace: _Pace) -> tuple[Any, int]:
    """The value at ``idx`` and where it ends; an object member by member if ``levels``."""
    if levels and text.startswith("{", idx):
        return await _object(text, idx, levels, pace)
    value, end = _DECODER.raw_decode(text, idx)
    await pace.decoded(end - idx)
    return value, end


async def _object(text: str, idx: int, levels: int, pace: _Pace) -> tuple[dict[str, Any], int]:
    """The object whose ``{`` is at ``idx``, parsed as json's scanner parses one."""
    members: dict[str, Any] = {}
    idx = _space(text, idx + 1)
    if text.startswith("}", idx):
        return members, idx + 1
    while True:
        if not text.startswith('"', idx):
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, idx
            )
        key, idx = _DECODER.raw_decode(text, idx)  # a string: what starts with "
        idx = _space(text, idx)
        if not text.startswith(":", idx):
            raise json.JSONDecodeError("Expecting ':' delimiter", text, idx)
        members[key], idx = await _value(text, _space(text, idx + 1), levels - 1, pace)
        idx = _space(text, idx)
        if text.startswith("}", idx):
            return members, idx + 1
        if not text.startswith(",", idx):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
        idx = _space(text, idx + 1)
