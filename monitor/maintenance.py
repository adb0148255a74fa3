"""Maintenance windows: scheduled freezes of automatic rollback, written in the config.

A window is one-off (``start`` and ``end``) or recurring (``days``, ``at`` and ``duration``),
in a time zone from the system's tz database (:mod:`zoneinfo`), for every service, one tier
or named services, with a reason. The controller asks :func:`in_force` at every evaluation,
so a window holds from the clock alone (level-triggered: nothing depends on having seen it
start), and /status shows the window in force and the next one (:func:`maintenance_json`).

Wall times are the zone's, read by :func:`monitor.wallclock.instant` where the clocks jump
(a time in a spring-forward gap is the gap's end, a repeated time the first). A duration is
elapsed time: a 2h window is two real hours, across a change too, so its end on the wall
clock moves by the change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.configtypes import (
    DAY,
    Duration,
    Strict,
    Text,
    expand_in,
    format_seconds,
    shown,
    within,
)
from monitor.errors import ConfigError
from monitor.model import format_duration
from monitor.wallclock import instant, local_time, zone_of

LOOKAHEAD = 7 * DAY
"""How far ahead /status looks for the next window."""
MAX_ONE_OFF = 31 * DAY
"""A one-off window longer than this is a typo (a year in ``end``), or a freeze for a person
to lift (``railguard freeze``)."""
MAX_RECURRING = 7 * DAY
"""A recurring window repeats at most weekly: a longer one would never end (nor would one as
long as the time from one of its days to the next: ``MaintenanceWindow._ends``)."""
EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2199, 12, 31, 23, 59, 59)
"""The dates a one-off window may name: others are typos (or garbage)."""
MEMO_SPAN = 3600.0
"""The longest a window's worked-out state is kept when nothing about it changes sooner."""

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAYS = {name: i for i, name in enumerate(DAY_NAMES)} | {
    full: i
    for i, full in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}


def _when(value: Any, info: ValidationInfo) -> Any:
    """A one-off window's ``start`` or ``end``: a TOML date-time or a string, read in the
    window's zone (unless it carries an offset); epoch seconds."""
    if isinstance(value, str):
        text = expand_in(value, info).strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f'not a date and time: {shown(text)} (write "2026-12-05T22:00", in the '
                "window's zone)"
            ) from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if not isinstance(value, datetime):
        raise ValueError(f'a date and time such as "2026-12-05T22:00" (got {shown(value)})')
    if not EARLIEST <= value.replace(tzinfo=None) <= LATEST:
        raise ValueError(f"not a plausible time: {shown(str(value))} (years {EARLIEST.year}-2199)")
    if value.tzinfo is not None:
        return value.timestamp()
    zone = info.data.get("zone")  # absent when it was wrong: that is the error reported
    return instant(value, zone_of(zone if isinstance(zone, str) else "UTC"))


def _clock(value: Any) -> Any:
    if isinstance(value, time):  # TOML's local time: 02:00:00
        return value.replace(tzinfo=None, microsecond=0)
    hours, sep, minutes = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not (sep and hours.isascii() and minutes.isascii() and hours.isdigit()):
        raise ValueError(f'not a time of day: {shown(value)} (write "HH:MM", in the zone)')
    if not (minutes.isdigit() and len(hours) <= 2 and len(minutes) == 2):
        raise ValueError(f'not a time of day: {shown(value)} (write "HH:MM", in the zone)')
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise ValueError(f"not a time of day: {shown(value)}")
    return time(int(hours), int(minutes))


def _days(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f'a list of days such as ["sat", "sun"] (got {shown(value)})')
    out: set[int] = set()
    for day in value:
        key = day.strip().lower() if isinstance(day, str) else None
        if key == "daily":
            out.update(range(7))
        elif key in _DAYS:
            out.add(_DAYS[key])
        else:
            raise ValueError(
                f"not a day: {shown(day)} (one of: {', '.join(DAY_NAMES)}, or the full "
                'names, or "daily")'
            )
    return tuple(sorted(out))


Instant = Annotated[float | None, BeforeValidator(_when)]


class MaintenanceWindow(Strict):
    """One ``[[maintenance]]`` table: when automatic rollback holds, where, and why."""

    name: Text = Field(min_length=1, max_length=100)
    reason: Text = Field(min_length=1, max_length=500)
    zone: Text = "UTC"
    start: Instant = None
    end: Instant = None
    days: Annotated[tuple[int, ...] | None, BeforeValidator(_days)] = None
    at: Annotated[time | None, BeforeValidator(_clock)] = None
    duration: Annotated[Duration, within(0.0, MAX_RECURRING, above=True)] | None = None
    tier: Text | None = None
    services: tuple[Text, ...] | None = None
    _memo: _Cell = PrivateAttr(default_factory=lambda: _Cell())

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone_of(value)
        return value

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: float | None, info: ValidationInfo) -> float | None:
        start = info.data.get("start")
        if end is None or start is None:
            return end
        if end <= start:
            raise ValueError(f"must be after start ({local_time(start, info.data.get('zone'))})")
        if end - start > MAX_ONE_OFF:
            raise ValueError(
                f"must be at most {MAX_ONE_OFF / DAY:g} days after start: a longer stop is a "
                "freeze for a person to lift (railguard freeze)"
            )
        return end

    @field_validator("duration")
    @classmethod
    def _ends(cls, duration: float | None, info: ValidationInfo) -> float | None:
        days = info.data.get("days")
        if duration is None or not days:
            return duration
        # The shortest wait from one of its days to the next (around the week): a window as
        # long as that meets the next and never ends, a permanent freeze nobody asked for.
        gap = min((b - a) % 7 or 7 for a, b in zip(days, (*days[1:], days[0]), strict=True))
        if duration >= gap * DAY:
            raise ValueError(
                f"must be less than {format_seconds(gap * DAY)}, the time from one of its days "
                "to the next: a window as long never ends (a stop for good is railguard freeze)"
            )
        return duration

    @field_validator("services")
    @classmethod
    def _some_services(cls, services: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if services is not None and not services:
            raise ValueError("an empty list: name services, or leave the key out for all")
        return services

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceWindow:
        one_off = {k for k in ("start", "end") if getattr(self, k) is not None}
        recurring = {k for k in ("days", "at", "duration") if getattr(self, k) is not None}
        if one_off and recurring:
            raise ValueError(
                f"a window is one-off (start, end) or recurring (days, at, duration), not "
                f"both: it has {', '.join(sorted(one_off | recurring))}"
            )
        wanted = ("start", "end") if one_off else ("days", "at", "duration")
        missing = [k for k in wanted if getattr(self, k) is None]
        if missing:
            if not one_off and not recurring:
                raise ValueError(
                    "say when: start and end (one-off), or days, at and duration (recurring)"
                )
            kind = "a one-off window" if one_off else "a recurring window"
            raise ValueError(f"{kind} needs {', '.join(missing)} too")
        if self.tier is not None and self.services is not None:
            raise ValueError("a window is for a tier or for named services, not both")
        return self

    @property
    def recurring(self) -> bool:
        """Whether it repeats (``days``, ``at``, ``duration``) rather than happens once."""
        return self.days is not None

    def applies_to(self, service: str, tier: str) -> bool:
        """Whether the window covers the service ``service`` of tier ``tier``."""
        if self.services is not None:
            return service in self.services
        return self.tier is None or self.tier == tier

    def _recurrence(self) -> tuple[tuple[int, ...], time, float]:
        days, at, duration = self.days, self.at, self.duration
        if days is None or at is None or duration is None:  # pragma: no cover  (validated)
            raise ValueError(f"maintenance window {self.name} is not recurring")
        return days, at, duration

    def state(self, now: float) -> tuple[Occurrence | None, Occurrence | None]:
        """Its occurrence in force at ``now`` and its next to start within :data:`LOOKAHEAD`.

        Worked out once for as long as neither answer can change (until the one in force
        ends, the next starts, or one comes within the look-ahead), since every service's
        evaluation and every /status request asks, and many services share a window.
        """
        memo = self._memo.memo
        if memo is None or not memo.since <= now < memo.until:
            memo = self._memo.memo = self._work_out(now)
        return memo.active, memo.next

    def _work_out(self, now: float) -> _Memo:
        active: Occurrence | None = None
        next_: Occurrence | None = None
        beyond: Occurrence | None = None
        for o in self.occurrences(now, now + LOOKAHEAD + MEMO_SPAN + 1.0):
            if o.starts_at <= now:  # and ends after it; of two, the later ends later
                active = o
            elif o.starts_at <= now + LOOKAHEAD:
                next_ = next_ or o
            else:
                beyond = beyond or o
        until = now + MEMO_SPAN
        if active is not None:
            until = min(until, active.ends_at)
        if next_ is not None:
            until = min(until, next_.starts_at)
        elif beyond is not None:
            until = min(until, beyond.starts_at - LOOKAHEAD)
        return _Memo(now, until, active, next_)

    def occurrences(self, since: float, until: float) -> Iterator[Occurrence]:
        """Its occurrences that overlap ``[since, until)``, in order of start."""
        if self.start is not None and self.end is not None:
            if self.start < until and self.end > since:
                yield Occurrence(self, self.start, self.end)
            return
        days, at, duration = self._recurrence()
        zone = zone_of(self.zone)
        # Local dates from the one whose occurrence could still run at `since` on.
        first = datetime.fromtimestamp(since, zone).date() - timedelta(
            days=math.ceil(duration / DAY) + 1
        )
        last = datetime.fromtimestamp(until, zone).date() + timedelta(days=1)
        day = first
        while day <= last:
            if day.weekday() in days:
                starts = instant(datetime.combine(day, at), zone)
                ends = starts + duration
                if starts < until and ends > since:
                    yield Occurrence(self, starts, ends)
            day += timedelta(days=1)

    def describe(self) -> str:
        """The window in words, as ``check`` lists it."""
        scope = "all services"
        if self.services is not None:
            scope = "services " + ", ".join(self.services)
        elif self.tier is not None:
            scope = f"tier {self.tier}"
        if self.start is not None and self.end is not None:
            when = f"from {local_time(self.start, self.zone)} to {local_time(self.end, self.zone)}"
        else:
            days, at, duration = self._recurrence()
            on = "every day" if len(days) == 7 else ", ".join(DAY_NAMES[d] for d in days)
            when = f"{on} at {at:%H:%M} {self.zone} for {format_duration(duration)}"
        return f"{self.name}: {when}, {scope}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Occurrence:
    """A window's one stretch of time, in epoch seconds."""

    window: MaintenanceWindow
    starts_at: float
    ends_at: float

    def to_json(self) -> dict[str, Any]:
        """As /status shows it."""
        return {
            "name": self.window.name,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "reason": self.window.reason,
            "zone": self.window.zone,
        }

    def hold_reason(self) -> str:
        """Why the controller holds: the window, until when (in its zone), and its reason."""
        until = local_time(self.ends_at, self.window.zone)
        return f"maintenance window {self.window.name} until {until}: {self.window.reason}"


class _Cell:
    """Where a window keeps its :class:`_Memo`: never part of what makes two windows equal."""

    __slots__ = ("memo",)

    def __init__(self) -> None:
        self.memo: _Memo | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Cell)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _Memo:
    """A window's state, true for every time in ``[since, until)``."""

    since: float
    until: float
    active: Occurrence | None
    next: Occurrence | None


def in_force(windows: Iterable[MaintenanceWindow], now: float) -> Occurrence | None:
    """The window in force at ``now`` (of several, the one that ends last), or None."""
    found = [o for w in windows if (o := w.state(now)[0]) is not None]
    return max(found, key=lambda o: (o.ends_at, o.window.name), default=None)


def upcoming(
    windows: Iterable[MaintenanceWindow], now: float, within: float = LOOKAHEAD
) -> Occurrence | None:
    """The next window to start after ``now`` and within ``within`` seconds, or None."""
    if within == LOOKAHEAD:
        found = [o for w in windows if (o := w.state(now)[1]) is not None]
    else:
        found = [
            o
            for w in windows
            for o in w.occurrences(now, now + within + 1.0)
            if now < o.starts_at <= now + within
        ]
    return min(found, key=lambda o: (o.starts_at, o.window.name), default=None)


def maintenance_json(windows: Sequence[MaintenanceWindow], now: float) -> dict[str, Any]:
    """A service's maintenance for /status: the window in force and the next, or None each."""
    active, next_ = in_force(windows, now), upcoming(windows, now)
    return {
        "active": None if active is None else active.to_json(),
        "next": None if next_ is None else next_.to_json(),
    }


def for_service(
    windows: Iterable[MaintenanceWindow], service: str, tier: str
) -> tuple[MaintenanceWindow, ...]:
    """The windows that cover one service."""
    return tuple(w for w in windows if w.applies_to(service, tier))


def describe_windows(windows: Sequence[MaintenanceWindow], now: float | None = None) -> list[str]:
    """A config's windows in words, a line each (for ``check``); with ``now``, each
    window's next or current stretch too."""
    if not windows:
        return ["maintenance windows: none"]
    lines = [f"maintenance windows ({len(windows)}):"]
    for window in windows:
        line = f"  {window.describe()}"
        if now is not None:
            current = in_force([window], now)
            later = upcoming([window], now, within=LOOKAHEAD)
            if current is not None:
                line += f" (in force until {local_time(current.ends_at, window.zone)})"
            elif later is not None and window.recurring:
                line += f" (next from {local_time(later.starts_at, window.zone)})"
            elif window.end is not None and window.end <= now:
                line += " (over)"
            else:  # a one-off (a recurring window comes again within the look-ahead)
                line += " (to come)"
        lines.append(line)
    return lines


def check_windows(
    path: Path, windows: Sequence[MaintenanceWindow], services: Iterable[str], tiers: Iterable[str]
) -> None:
    """What one window cannot check alone: unique names, services and tiers that exist."""
    names, tier_names = set(services), set(tiers)
    seen: set[str] = set()
    for i, window in enumerate(windows):
        here = f"{path}: maintenance[{i}]"
        if window.name in seen:
            raise ConfigError(f"{here}.name: two windows are named {window.name!r}")
        seen.add(window.name)
        if window.tier is not None and window.tier not in tier_names:
            raise ConfigError(
                f"{here}.tier: no tier named {window.tier!r} "
                f"(tiers: {', '.join(sorted(tier_names))})"
            )
        for j, service in enumerate(window.services or ()):
            if service not in names:
                known = ", ".join(sorted(names)[:20])
                raise ConfigError(
                    f"{here}.services[{j}]: no service named {service!r} (services: {known})"
                )
