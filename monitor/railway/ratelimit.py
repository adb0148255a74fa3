"""Railway's rate-limit headers, read as the untrusted input they are.

``Retry-After`` is documented (seconds, or an HTTP date). ``X-RateLimit-Reset`` is not: it may
be seconds until the reset, Unix seconds, or Unix milliseconds, so every reading is tried and
the first that puts the reset within the next :data:`MAX_WAIT` wins. Whatever a header says,
the wait it implies is within ``[0, MAX_WAIT]``: a value read in the wrong unit (milliseconds
taken for seconds, an epoch taken for a delay) must never stop polling, or a rollback, for
days. A value that fits no reading comes back clamped, with the problem for the caller to log.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass

# No rate-limit header makes railguard wait longer than this (Railway's limits are per hour).
MAX_WAIT = 3600.0
# A reset this far in the past is clock skew between railguard and Railway, not nonsense.
SKEW = 60.0


@dataclass(frozen=True, slots=True)
class Wait:
    """Seconds to wait from now (None: the header said nothing usable), and why it was odd."""

    seconds: float | None
    problem: str | None = None


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _shown(value: str) -> str:
    return f"{value!r:.60}"


def _clamped(seconds: float, value: str, unit: str) -> Wait:
    """``seconds`` within ``[0, MAX_WAIT]``; a problem if it had to be cut."""
    if seconds > MAX_WAIT:
        why = f"{_shown(value)} is {seconds:.3g}s away as {unit}; waiting {MAX_WAIT:g}s at most"
        return Wait(MAX_WAIT, why)
    return Wait(max(0.0, seconds))


def retry_after(value: str | None, now: float) -> Wait:
    """A ``Retry-After`` header (seconds or an HTTP date) as seconds from ``now``."""
    if value is None:
        return Wait(None)
    seconds = _number(value)
    if seconds is not None:
        return _clamped(seconds, value, "seconds")
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return Wait(None, f"{_shown(value)} is neither seconds nor an HTTP date")
    return _clamped(when.timestamp() - now, value, "an HTTP date")


def reset(value: str | None, now: float) -> Wait:
    """An ``X-RateLimit-Reset`` header as seconds from ``now``, whatever its unit.

    Tried in order: seconds until the reset, Unix seconds, Unix milliseconds; the first reading
    that puts the reset between ``SKEW`` ago and ``MAX_WAIT`` ahead is taken. None fits: the
    nearest future reading clamped to ``MAX_WAIT`` (or 0 when every reading is in the past),
    with the problem.
    """
    if value is None:
        return Wait(None)
    number = _number(value)
    if number is None:
        return Wait(None, f"{_shown(value)} is not a finite number")
    readings = {
        "seconds until the reset": number,
        "Unix seconds": number - now,
        "Unix milliseconds": number / 1000.0 - now,
    }
    for seconds in readings.values():
        if -SKEW <= seconds <= MAX_WAIT:
            return Wait(max(0.0, seconds))
    ahead = [s for s in readings.values() if s > 0]
    if not ahead:
        return Wait(0.0, f"{_shown(value)} is in the past in every unit; taken as now")
    return Wait(
        MAX_WAIT,
        f"{_shown(value)} is no time within {MAX_WAIT:g}s in seconds, Unix seconds or "
        f"milliseconds; waiting {MAX_WAIT:g}s at most",
    )


def remaining(value: str | None) -> int | None:
    """An ``X-RateLimit-Remaining`` header as a count (never negative); None if unreadable."""
    number = None if value is None else _number(value)
    return None if number is None else max(0, int(number))
