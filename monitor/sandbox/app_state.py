"""What the sample app does now: its release, its faults, and a deploy's overlap.

:class:`AppState` is changed with :meth:`AppState.update` (``POST /_control``); every field is
checked first, so a bad one changes nothing. A :class:`Persona` is a release as the app plays
it; during an overlap the replaced release's persona answers its share of the requests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, cast, get_args

from monitor.clock import Clock, SystemClock

Mode = Literal["ok", "error", "slow", "flap", "hang"]
MODES: tuple[str, ...] = get_args(Mode)
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Persona:
    """A release as the app plays it: who it says it is, and how it answers."""

    release: str
    deployment_id: str
    commit: str
    mode: Mode
    delay: float
    error_ratio: float
    latency: float = 0.0


class ControlError(ValueError):
    """A fault-control request named an unknown field or gave a bad value."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(f"{field}: {message} (got {value!r})")
        self.field = field
        self.value = value


@dataclass
class AppState:
    """What the sample app does now. Change it with :meth:`update` (or ``POST /_control``)."""

    release: str = "v1"
    mode: Mode = "ok"
    delay: float = 10.0
    error_ratio: float = 0.0
    latency: float = 0.0
    memory_bytes: int = 100 * MIB
    memory_limit_bytes: int = 512 * MIB
    asleep: bool = False
    cold_start: float = 0.0
    deployment_id: str = ""
    commit: str = ""
    overlap: float = 0.0
    overlap_ratio: float = 1.0
    clock: Clock = field(default_factory=SystemClock, repr=False)
    _traffic: int = field(default=0, init=False, repr=False)
    _health: int = field(default=0, init=False, repr=False)
    _waking_until: float | None = field(default=None, init=False, repr=False)
    _previous: Persona | None = field(default=None, init=False, repr=False)
    _overlap_until: float = field(default=0.0, init=False, repr=False)
    _overlap_answers: int = field(default=0, init=False, repr=False)

    def update(self, changes: Mapping[str, Any]) -> None:
        """Validate every change first, then apply them all (a bad field changes nothing)."""
        checked = {name: _check_field(name, value) for name, value in changes.items()}
        before = self.persona()
        for name, value in checked.items():
            setattr(self, name, value)
        if (before.release, before.deployment_id) != (self.release, self.deployment_id):
            # A new release went live: the one it replaces answers on through the overlap.
            self._previous = before if self.overlap > 0 else None
            self._overlap_until = self.clock.monotonic() + self.overlap
            self._overlap_answers = 0
        # A new mode or ratio starts its pattern afresh, so tests can count on it.
        if "mode" in checked:
            self._health = 0
        if "error_ratio" in checked:
            self._traffic = 0
        if "asleep" in checked:
            self._waking_until = None

    def to_dict(self) -> dict[str, Any]:
        """The public state, as ``GET /_control`` returns it."""
        return {name: getattr(self, name) for name in _FIELDS}

    def persona(self) -> Persona:
        """The release the app serves now."""
        return Persona(
            self.release,
            self.deployment_id,
            self.commit,
            self.mode,
            self.delay,
            self.error_ratio,
            self.latency,
        )

    def answering(self) -> Persona:
        """Who answers the next request: in an overlap, the replaced release's share of them."""
        previous = self._previous
        if previous is not None and self.clock.monotonic() >= self._overlap_until:
            self._previous = previous = None
        if previous is None:
            return self.persona()
        self._overlap_answers += 1
        return previous if _nth_hits(self._overlap_answers, self.overlap_ratio) else self.persona()

    def next_traffic_fails(self, ratio: float | None = None) -> bool:
        """Count one traffic request; whether the error ratio (default error_ratio) makes it
        a 500."""
        self._traffic += 1
        return _nth_hits(self._traffic, self.error_ratio if ratio is None else ratio)

    def wakes(self, now: float) -> bool:
        """Whether a request at ``now`` (monotonic) finds the app asleep: it starts waking."""
        if not self.asleep:
            return False
        self.asleep = False
        self._waking_until = now + self.cold_start
        return True

    def starting(self, now: float) -> bool:
        """Whether a request at ``now`` (monotonic) falls in the cold start of a wake."""
        if self._waking_until is not None and now >= self._waking_until:
            self._waking_until = None
        return self._waking_until is not None

    def next_flap_fails(self) -> bool:
        """Count one health request in ``flap`` mode; whether it fails."""
        self._health += 1
        return self._health % 2 == 1


def _nth_hits(n: int, ratio: float) -> bool:
    """Whether the n-th of a series is one of the ``ratio`` share: floor(n * ratio) goes up."""
    share = Fraction(ratio).limit_denominator(10_000)
    return (n * share.numerator) // share.denominator > ((n - 1) * share.numerator) // (
        share.denominator
    )


def _mode(value: Any) -> Mode:
    if value not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}")
    return cast(Mode, value)


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        if not (low <= value <= high and math.isfinite(value)):
            raise ValueError(f"must be between {low:g} and {high:g}")
        return float(value)

    return check


def _bytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number of bytes, 0 or more")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def label(value: Any) -> str:
    """A release label: a non-empty string (ValueError otherwise)."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def _echo(value: Any) -> str:
    # What Railway's variables hold (a UUID, a SHA), so it is safe in a header.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._:-]{0,128}", value):
        raise ValueError("must be a deployment id or a commit (letters, digits, . _ : -)")
    return value


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "mode": _mode,
    "delay": _number(0.0, 86_400.0),
    "error_ratio": _number(0.0, 1.0),
    "latency": _number(0.0, 60.0),
    "memory_bytes": _bytes,
    "memory_limit_bytes": _bytes,
    "release": label,
    "asleep": _flag,
    "cold_start": _number(0.0, 3_600.0),
    "deployment_id": _echo,
    "commit": _echo,
    "overlap": _number(0.0, 3_600.0),
    "overlap_ratio": _number(0.0, 1.0),
}


def _check_field(name: str, value: Any) -> Any:
    check = _FIELDS.get(name)
    if check is None:
        raise ControlError(name, value, f"unknown field (known: {', '.join(_FIELDS)})")
    try:
        return check(value)
    except ValueError as exc:
        raise ControlError(name, value, str(exc)) from None
