"""Judging a sample against the previous known-good release's own recorded behaviour.

Pure: no I/O, no clock. A :class:`Summary` is what railguard keeps of one release's signal
while it serves (requests and errors for an error rate; a compact sketch of the window
quantiles for a latency); its :class:`Reference` is the baseline a later release is judged
against. :func:`judge` compares one sample with it:

- an error rate breaches above ``factor`` x the baseline's only when a one-sided
  two-proportion test (Agresti-Caffo adjusted, so zero errors on either side is no
  certainty) is sure at the rule's ``confidence`` that it rose that much;
- a latency quantile breaches above ``factor`` x the baseline's quantile;
- either side with fewer than ``min_requests`` observations, or no baseline at all, is
  UNKNOWN: sparse data never decides, and a missing baseline is never a breach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from monitor.model import Baseline, Rule, Sample, Signal

# Sketch buckets grow by 2%: a quantile read back from it is within 1% of what was added.
_GAMMA = 1.02
_LOG_GAMMA = math.log(_GAMMA)
MAX_BUCKETS = 4096
"""A sketch never holds more buckets than this (2% buckets from 1µs to a day take ~1,300)."""
_ZERO = -(10**6)  # the bucket of a value of exactly 0
# The buckets a sketch may hold besides _ZERO: from below the smallest float (~-37,600) to
# ~1e301 (1.02 ** 35,000), so that a bucket read back is always a finite number.
_LOWEST, _HIGHEST = -38_000, 35_000


@dataclass(frozen=True, slots=True)
class Reference:
    """The baseline one signal of a service is judged against: a release's recorded value."""

    release: str  # who it describes, for people: a release label or key
    value: float  # the rate (0..1) or the typical window quantile (seconds)
    requests: float  # observations behind it
    errors: float = 0.0  # an error rate's failed requests among them

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, kept in evidence."""
        return {
            "release": self.release,
            "value": self.value,
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass(frozen=True, slots=True)
class Judgment:
    """The comparison of one sample with its baseline."""

    breaching: bool | None  # None: nothing to compare (no baseline, too few requests)
    text: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # No baseline (none yet, or too thin): nothing to judge by design, as for a sleeping
    # service; the rule rests instead of going blind (and a release can bake meanwhile).
    baseless: bool = False


def observations(sample: Sample) -> float | None:
    """How many requests (or probes) a sample's value was computed from, if it says."""
    detail = sample.detail
    for key in ("requests", "observations"):
        value = detail.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number) and number >= 0:
                return number
    return None


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _name(signal: Signal) -> str:
    q = signal.quantile
    if q is None:
        return signal.value.replace("_", " ")
    return f"p{q * 100:g}"


def judge(baseline: Baseline, signal: Signal, sample: Sample, ref: Reference | None) -> Judgment:
    """Whether the known ``sample`` breaches ``factor`` x the baseline ``ref``."""
    assert sample.value is not None
    value, name = sample.value, _name(signal)
    least = baseline.min_requests
    if ref is None:
        said = f"no baseline yet for {name}: no earlier known-good release has a record of it"
        return Judgment(None, said, baseless=True)
    if signal.quantile is not None and not ref.value > 0:
        # 1.5x 0s is 0s: any answer at all would be "∞x the baseline". A latency recorded as
        # 0 says the measurement is coarser than the service (Railway's whole milliseconds).
        said = (
            f"baseline {name} of release {ref.release} is {signal.show(ref.value)}: "
            "no multiple of it is a limit"
        )
        return Judgment(None, said, baseless=True)
    if ref.requests < least:
        said = (
            f"baseline too thin: release {ref.release} recorded {_count(ref.requests)} requests"
            f" < min_requests {least}"
        )
        return Judgment(None, said, baseless=True)
    n = observations(sample)
    if n is None:
        return Judgment(None, f"{name} {signal.show(value)}: the sample says no request count")
    if n < least:
        return Judgment(
            None,
            f"too few requests to compare with the baseline: {_count(n)} < min_requests {least}",
        )
    limit = baseline.factor * ref.value
    ratio = value / ref.value if ref.value > 0 else math.inf
    shown_ratio = "∞" if math.isinf(ratio) else f"{ratio:.3g}"
    evidence: dict[str, Any] = {
        "baseline": ref.to_dict(),
        "factor": baseline.factor,
        "ratio": None if math.isinf(ratio) else ratio,
        "requests": n,
    }
    head = (
        f"{name} {signal.show(value)} vs baseline {signal.show(ref.value)} "
        f"({shown_ratio}x, {_count(n)} requests)"
    )
    if signal is Signal.ERROR_RATE:
        errors = sample.detail.get("errors")
        failed = float(errors) if isinstance(errors, int | float) else value * n
        failed = min(max(failed, 0.0), n)  # (garbage beyond the requests: a negative variance)
        z = _rise(failed, n, ref.errors, ref.requests, baseline.factor)
        needed = NormalDist().inv_cdf(baseline.confidence)
        evidence |= {"z": z, "z_needed": needed}
        breaching = value > limit and z >= needed
        if value > limit and not breaching:
            sure = f"{baseline.confidence:.0%}"
            said = f"{head}: above {baseline.factor:g}x the baseline of {ref.release}, but not "
            return Judgment(False, said + f"significant at {sure}", evidence)
    else:
        breaching = value > limit
    verb = "above" if breaching else "within"
    said = f"{head} {verb} {baseline.factor:g}x the baseline of {ref.release}"
    return Judgment(breaching, said, evidence)


def breaches_now(rule: Rule, sample: Sample, reference: Reference | None) -> bool:
    """Whether a known sample breaches ``rule`` as the engine would judge it; a baseline rule
    with nothing to compare with says no (it holds nothing up, it proves nothing either)."""
    if sample.value is None or not rule.breaches(sample.value):
        return False
    if rule.baseline is None:
        return True
    return judge(rule.baseline, rule.signal, sample, reference).breaching is True


def _rise(x1: float, n1: float, x0: float, n0: float, factor: float) -> float:
    """The z statistic that p1 > factor x p0, each proportion adjusted by one success and one
    failure (Agresti-Caffo): zero errors on a side is never taken as certainty."""
    p1 = (x1 + 1) / (n1 + 2)
    p0 = (x0 + 1) / (n0 + 2)
    spread = p1 * (1 - p1) / (n1 + 2) + factor**2 * p0 * (1 - p0) / (n0 + 2)
    if not spread > 0:  # counts past float's range (garbage): no certainty either way
        return 0.0
    return (p1 - factor * p0) / math.sqrt(spread)


@dataclass(slots=True)
class Summary:
    """What railguard keeps of one signal of one release while it serves: compact and
    mergeable, a few hundred bytes whatever the release's age."""

    signal: Signal
    requests: float = 0.0
    errors: float = 0.0
    samples: int = 0
    first_at: float | None = None
    last_at: float | None = None
    sketch: dict[int, float] = field(default_factory=dict)

    def add(self, sample: Sample) -> bool:
        """Count a known sample with a request count in; False (and nothing kept) otherwise."""
        value, n = sample.value, observations(sample)
        if value is None or n is None or n <= 0 or not math.isfinite(value) or value < 0:
            return False
        if not math.isfinite(self.requests + n):
            return False
        if self.signal is Signal.ERROR_RATE:
            errors = sample.detail.get("errors")
            failed = float(errors) if isinstance(errors, int | float) else value * n
            if not 0 <= failed <= n:
                return False
            self.errors += failed
        else:
            index = _bucket(value)
            if index > _HIGHEST:
                return False
            if index not in self.sketch and len(self.sketch) >= MAX_BUCKETS:
                return False
            self.sketch[index] = self.sketch.get(index, 0.0) + n
        self.requests += n
        self.samples += 1
        self.first_at = sample.at if self.first_at is None else min(self.first_at, sample.at)
        self.last_at = sample.at if self.last_at is None else max(self.last_at, sample.at)
        return True

    def value(self) -> float | None:
        """The release's rate, or the request-weighted median of its window quantiles."""
        if self.requests <= 0:
            return None
        if self.signal is Signal.ERROR_RATE:
            return self.errors / self.requests
        half = sum(self.sketch.values()) / 2
        seen = 0.0
        for index in sorted(self.sketch):
            seen += self.sketch[index]
            if seen >= half:
                return _middle(index)
        return None  # pragma: no cover - the weights add up to the total

    def reference(self, release: str) -> Reference | None:
        """This summary as the baseline for later releases."""
        value = self.value()
        if value is None:
            return None
        return Reference(release, value, self.requests, self.errors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for the store."""
        return {
            "signal": self.signal.value,
            "requests": self.requests,
            "errors": self.errors,
            "samples": self.samples,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "sketch": {str(k): v for k, v in self.sketch.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """The inverse of :meth:`to_dict`; raises ValueError (or KeyError, TypeError) on
        anything that is not one."""
        try:
            return cls._from_dict(data)
        except OverflowError as e:  # int(inf): JSON holds Infinity as well as numbers
            raise ValueError(f"not a summary: {e}") from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Summary:
        sketch = {int(k): float(v) for k, v in dict(data.get("sketch", {})).items()}
        summary = cls(
            signal=Signal(data["signal"]),
            requests=float(data["requests"]),
            errors=float(data.get("errors", 0.0)),
            samples=int(data.get("samples", 0)),
            first_at=_maybe(data.get("first_at")),
            last_at=_maybe(data.get("last_at")),
            sketch=sketch,
        )
        numbers = [summary.requests, summary.errors, *sketch.values()]
        if not all(math.isfinite(x) and x >= 0 for x in numbers) or len(sketch) > MAX_BUCKETS:
            raise ValueError("a summary holds finite, non-negative counts")
        if summary.samples < 0 or any(k != _ZERO and not _LOWEST <= k <= _HIGHEST for k in sketch):
            raise ValueError("a summary holds a sample count and buckets a value can have")
        if summary.errors > summary.requests:
            raise ValueError("a summary holds no more errors than requests")
        if sketch and not math.isclose(sum(sketch.values()), summary.requests, rel_tol=1e-6):
            raise ValueError("a summary's sketch weighs its requests")
        return summary


def _bucket(value: float) -> int:
    if value <= 0:
        return _ZERO
    return math.floor(math.log(value) / _LOG_GAMMA)


def _middle(index: int) -> float:
    if index == _ZERO:
        return 0.0
    # The bucket's geometric middle: within half a bucket (1%) of anything in it.
    return float(_GAMMA ** (index + 0.5))


def _maybe(value: Any) -> float | None:
    return None if value is None else float(value)
