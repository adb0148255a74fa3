"""The small immutable values that flow through railguard: samples, rules, verdicts."""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class Signal(enum.StrEnum):
    """What a sample measures, and the range its values live in."""

    HEALTH = "health"  # 1.0 healthy, 0.0 failing
    ERROR_RATE = "error_rate"  # 5xx / total over the last step, 0.0 .. 1.0
    MEMORY = "memory"  # usage / limit, 0.0 .. (can exceed 1.0 briefly)
    DEPLOYMENT = "deployment"  # Railway's view: 1.0 the active deployment runs, 0.0 crashing
    # Request latency in seconds, as a quantile of the requests in a window (or of probes).
    LATENCY_P50 = "latency_p50"
    LATENCY_P90 = "latency_p90"
    LATENCY_P95 = "latency_p95"
    LATENCY_P99 = "latency_p99"

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest value this signal can take."""
        return _BOUNDS.get(self, (0.0, math.inf))

    @property
    def quantile(self) -> float | None:
        """0.95 for latency_p95; None for a signal that is no quantile."""
        return _QUANTILES.get(self)

    @property
    def table(self) -> str | None:
        """The service's config table that says where the signal comes from: ``latency`` for
        every latency quantile; None for health (its own keys) and deployment (automatic)."""
        if self in _QUANTILES:
            return "latency"
        return None if self in (Signal.HEALTH, Signal.DEPLOYMENT) else self.value

    @property
    def rate(self) -> bool:
        """A share of requests (0..1), shown as a percentage."""
        return self in (Signal.ERROR_RATE, Signal.MEMORY)

    def show(self, value: float) -> str:
        """A value as a person reads it: ``5%``, ``812ms``, ``1.2s``, ``healthy``."""
        if self is Signal.HEALTH:
            return {1.0: "healthy", 0.0: "failing"}.get(value, f"{value:g}")
        if self is Signal.DEPLOYMENT:
            return {1.0: "running", 0.0: "crashing"}.get(value, f"{value:g}")
        if self.rate:
            return f"{value * 100:.3g}%"
        if self in _QUANTILES:
            return show_seconds(value)
        return f"{value:g}"


LATENCY_SIGNALS = (Signal.LATENCY_P50, Signal.LATENCY_P90, Signal.LATENCY_P95, Signal.LATENCY_P99)
_QUANTILES = dict(zip(LATENCY_SIGNALS, (0.5, 0.9, 0.95, 0.99), strict=True))


def show_seconds(seconds: float) -> str:
    """A latency for people: ``0.8123`` -> ``812ms``, ``1.25`` -> ``1.25s``, 4e-05 -> ``40µs``."""
    if not math.isfinite(seconds):
        return f"{seconds}s"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.3g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g}ms"
    return f"{seconds * 1e6:.3g}µs"


_BOUNDS: dict[Signal, tuple[float, float]] = {
    Signal.HEALTH: (0.0, 1.0),
    Signal.ERROR_RATE: (0.0, 1.0),
    Signal.MEMORY: (0.0, math.inf),
    Signal.DEPLOYMENT: (0.0, 1.0),
}


class Op(enum.StrEnum):
    """How a rule compares a sample's value to its threshold (true = breaching)."""

    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="
    EQ = "=="
    NE = "!="

    def breaches(self, value: float, threshold: float) -> bool:
        """Whether ``value <op> threshold`` holds."""
        return _OPS[self](value, threshold)


_OPS: dict[Op, Callable[[float, float], bool]] = {
    Op.GT: operator.gt,
    Op.GE: operator.ge,
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One observation of one signal at one time.

    ``value`` None means UNKNOWN (no traffic, a failed scrape, a missing series): ``reason``
    then says why. ``detail`` keeps what a person needs to explain the value later
    (status code, latency, counts). ``idle`` (with ``value`` None): there is nothing to
    measure by design, not for want of sight: the service sleeps (serverless) or is waking.
    """

    signal: Signal
    at: float
    value: float | None
    reason: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    idle: bool = False

    @property
    def known(self) -> bool:
        """False for an UNKNOWN sample."""
        return self.value is not None

    @property
    def window_start(self) -> float:
        """When what the sample describes began: a rate covers a step or a span, not an instant."""
        detail = self.detail
        try:
            if "step_start" in detail:
                return min(self.at, float(detail["step_start"]))
            return self.at - max(0.0, float(detail.get("span_s", 0.0)))
        except (TypeError, ValueError):
            return self.at

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, kept as evidence."""
        return {
            "signal": self.signal.value,
            "at": self.at,
            "value": self.value,
            "reason": self.reason,
            "detail": dict(self.detail),
            **({"idle": True} if self.idle else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sample:
        """The inverse of :meth:`to_dict`."""
        value = data["value"]
        return cls(
            signal=Signal(data["signal"]),
            at=float(data["at"]),
            value=None if value is None else float(value),
            reason=str(data.get("reason", "")),
            detail=dict(data.get("detail", {})),
            idle=data.get("idle") is True,
        )


@dataclass(frozen=True, slots=True)
class Baseline:
    """How a rule compares a signal with the previous known-good release's recorded value.

    A sample breaches when its value is above ``factor`` x the baseline, each side backed by
    at least ``min_requests`` observations; for an error rate the rise must also be
    significant at ``confidence`` (a one-sided two-proportion test), so a few errors in
    sparse traffic never decide.
    """

    factor: float
    min_requests: int = 100
    confidence: float = 0.95

    def describe(self) -> str:
        """``2x baseline``."""
        return f"{self.factor:g}x baseline"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rollback rule as evaluated for one service (windows already resolved).

    Fires when the signal breaches ``op threshold`` for ``for_`` seconds, with no gap longer
    than ``max_gap`` seconds between known samples. ``tolerance`` is the fraction of
    breaching samples within the last ``for_`` seconds that suffices (1.0 = every sample).
    A rule with a ``baseline`` also (or, without a ``threshold``, only) compares each sample
    with the previous known-good release's (:mod:`monitor.baseline`).
    """

    name: str
    signal: Signal
    op: Op
    threshold: float | None
    for_: float
    max_gap: float
    tolerance: float = 1.0
    description: str = ""
    baseline: Baseline | None = None

    def breaches(self, value: float) -> bool:
        """Whether a known value breaches the rule's fixed threshold (a baseline-only rule has
        none: every value passes it, and the baseline comparison decides)."""
        return self.threshold is None or self.op.breaches(value, self.threshold)

    def breached(self, sample: Sample) -> bool:
        """Whether a sample the engine judged breached the rule: its fixed threshold and, for
        a baseline rule, the comparison recorded with it (``detail["vs_baseline"]``)."""
        if sample.value is None or not self.breaches(sample.value):
            return False
        if self.baseline is None:
            return True
        mark = sample.detail.get("vs_baseline")
        return isinstance(mark, Mapping) and mark.get("breaching") is True

    def shown(self, value: float) -> str:
        """A value of the rule's signal as people read it: a rate or a share of the memory
        limit as a percentage (``5%``), a latency in its unit (``812ms``); health and the
        deployment signal as numbers (``health 0 < 1``)."""
        if self.signal.quantile is not None or self.signal.rate:
            return self.signal.show(value)
        return f"{value:g}"

    def describe(self) -> str:
        """``error_rate > 5% for 2m``: the rule in one line."""
        return f"{self.signal.value} {self.describe_limit()} for {format_duration(self.for_)}"

    def describe_limit(self) -> str:
        """``> 0.05``, ``> 500ms and > 1.5x baseline``: what a breaching value is."""
        parts = []
        if self.threshold is not None:
            parts.append(f"{self.op.value} {self.shown(self.threshold)}")
        if self.baseline is not None:
            parts.append(f"{self.op.value} {self.baseline.describe()}")
        return " and ".join(parts)


class Phase(enum.StrEnum):
    """A rule's state for one service."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"

    @property
    def level(self) -> int:
        """0, 1, 2: the value exported as a gauge."""
        return _LEVELS[self]


_LEVELS = {Phase.INACTIVE: 0, Phase.PENDING: 1, Phase.FIRING: 2}


def for_slack(max_gap: float) -> float:
    """How much sooner than its ``for`` a breach may count as having lasted ``for``.

    Samples are stamped when they are taken, a few milliseconds off their slot: the sample at
    since + for may measure for - 1ms, and a strict comparison would fire a whole interval
    late. Prometheus evaluates on its schedule's timestamps; this allows a twentieth of the
    gap a window tolerates (about a tenth of the interval), never more than half a second.
    The engine and the rollback decision use the same slack, so a rule that fires is judged.
    """
    return min(0.05 * max_gap, 0.5)


def format_duration(seconds: float) -> str:
    """``90`` -> ``1m30s``; the inverse of the config's duration strings."""
    if seconds < 1:
        return f"{round(seconds * 1000, 1):g}ms"
    seconds = round(seconds, 1)  # measured durations carry scheduling noise: 3.99913 -> 4
    whole = int(seconds)
    rest = seconds - whole
    parts = []
    for unit, size in (("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or rest or not parts:
        parts.append(f"{round(whole + rest, 1):g}s")
    return "".join(parts)


def release_label(meta: Mapping[str, Any]) -> str | None:
    """A deployment's short human name from its meta: a release, commit or image, if any."""
    for key in ("release", "commitHash", "image"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value[:7] if key == "commitHash" else value
    return None
