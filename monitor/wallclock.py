"""Wall-clock time in a named time zone (the system's tz database, through :mod:`zoneinfo`).

Where a zone's clocks jump (daylight saving time) a wall time is not always one instant;
railguard reads it so:

- a time that does not exist that day (02:30 on a spring-forward day in Europe/Berlin, where
  02:00 becomes 03:00) is the end of the gap: 03:00;
- a time that happens twice (02:30 on a fall-back day) is the first of the two.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.configtypes import shown

MACHINE_ZONES = frozenset({"localtime", "posixrules"})
"""Files in the tz directory that stand for a machine's setting, not a zone: links to
/etc/localtime and to the system's default rules."""


def zone_of(name: str) -> ZoneInfo:
    """The tz database's zone ``name``; ValueError saying so when there is none."""
    if not name or len(name) > 64 or not name.isascii():
        raise ValueError(f'not a time zone: {shown(name)} (write one such as "Europe/Berlin")')
    if name in MACHINE_ZONES:
        raise ValueError(
            f"not a time zone: {shown(name)} is a machine's own setting, which differs "
            'between machines: write a tz database name, such as "Europe/Berlin"'
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f'unknown time zone: {shown(name)} (a tz database name such as "Europe/Berlin" '
            'or "UTC")'
        ) from None


def instant(wall: datetime, zone: ZoneInfo) -> float:
    """Epoch seconds of the wall time ``wall`` (naive) in ``zone``, by the module's DST rules:
    a time in a gap is the gap's end, a time that happens twice is the first."""
    first = wall.replace(tzinfo=zone, fold=0)
    at = first.timestamp()
    if datetime.fromtimestamp(at, zone).replace(tzinfo=None) == wall:
        return at
    # In a gap: fold=1 reads it with the offset after the jump (an instant before the jump),
    # fold=0 with the offset before (after it). The jump lies between: find it to the second.
    lo, hi = math.floor(wall.replace(tzinfo=zone, fold=1).timestamp()), math.ceil(at)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return float(lo)


def local_time(at: float, zone: object) -> str:
    """``at`` on the wall clock of the zone named ``zone`` (UTC if it names none), with the
    zone's abbreviation: ``2026-11-28 04:00 CET``."""
    tz = zone_of(zone) if isinstance(zone, str) else zone_of("UTC")
    return datetime.fromtimestamp(at, tz).strftime("%Y-%m-%d %H:%M %Z")
