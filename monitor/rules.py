"""Rule files: strict models, loading, and the dry run that fails a broken rule at start.

A rule file is TOML with an array of ``[[rules]]`` tables::

    [[rules]]
    name = "error-rate"
    signal = "error_rate"
    op = ">"
    threshold = "5%"
    for = "2m"

Every rule is dry-run for every service that uses it, at that service's interval: a rule that
can never fire, or always fires, or cannot be covered by its samples is refused at load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from monitor.baseline import Reference
from monitor.configfile import format_validation_error, read_toml
from monitor.configtypes import DAY, Duration, Strict, Threshold, parse_duration, shown, within
from monitor.engine import RuleState, evaluate
from monitor.errors import ConfigError
from monitor.model import (
    LATENCY_SIGNALS,
    Baseline,
    Op,
    Phase,
    Rule,
    Sample,
    Signal,
    format_duration,
)
from monitor.settings import WINDOW_WHY, RuleOverride

RULE_NAME = r"^[a-z0-9][a-z0-9-]*$"
DRY_RUN_SAMPLES = 100
"""The most samples the dry run feeds a rule per phase, however long its window."""


# Signals a baseline may compare: measured over requests, so each side has a count to test.
BASELINE_SIGNALS = frozenset({Signal.ERROR_RATE, *LATENCY_SIGNALS})


def threshold_value(signal: Signal, raw: float | str) -> float:
    """A threshold as written -> the signal's unit: ``"5%"`` -> 0.05 for a rate, ``"500ms"`` ->
    0.5 for a latency, a number as it is. Raises ValueError saying which forms fit."""
    value = _threshold_value(signal, raw)
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {shown(raw)})")
    return value


def _threshold_value(signal: Signal, raw: float | str) -> float:
    if isinstance(raw, float | int):
        return float(raw)
    if signal.quantile is not None:
        if raw.endswith("%"):
            raise ValueError(
                f'{signal.value} is a duration: write the threshold as "500ms" or "1.5s", '
                f"not {shown(raw)}"
            )
        return parse_duration(raw)
    if raw.endswith("%"):
        try:
            return float(raw[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"not a percentage: {shown(raw)}") from None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f'not a number or a percentage such as "5%": {shown(raw)}'
            + (" (durations are for latency signals)" if raw[-1:].isalpha() else "")
        ) from None


class BaselineSpec(Strict):
    """``baseline = { factor = 2 }``: breach above 2x the previous known-good release's value."""

    factor: float = Field(gt=1, le=1000)
    min_requests: int = Field(100, ge=10, le=10**9)
    """Observations each side needs (the sample's window, and the baseline release's)."""
    confidence: float = Field(0.95, ge=0.5, lt=1)
    """For an error rate: how sure the one-sided proportion test must be that it rose."""

    def resolve(self) -> Baseline:
        """The model the engine uses."""
        return Baseline(self.factor, self.min_requests, self.confidence)


class RuleSpec(Strict):
    """One rule as written in a rule file."""

    name: str = Field(pattern=RULE_NAME, max_length=64)
    description: str = ""
    signal: Signal
    op: Op
    threshold: Threshold | None = None
    baseline: BaselineSpec | None = None
    for_: Annotated[Duration, within(0.0, DAY, why_hi=WINDOW_WHY)] = Field(alias="for")
    max_gap: Annotated[Duration, within(0.0, DAY, above=True)] | None = None
    tolerance: float = Field(1.0, gt=0, le=1)

    @field_validator("threshold")
    @classmethod
    def _unit(cls, value: float | str | None, info: ValidationInfo) -> float | None:
        signal = info.data.get("signal")
        if value is None or signal is None:  # no signal: its own error says so
            return None if value is None else 0.0
        return threshold_value(signal, value)

    @model_validator(mode="after")
    def _comparison(self) -> RuleSpec:
        if self.baseline is None:
            if self.threshold is None:
                raise ValueError("threshold: a rule needs a threshold, a baseline, or both")
            return self
        if self.signal not in BASELINE_SIGNALS:
            names = ", ".join(sorted(s.value for s in BASELINE_SIGNALS))
            raise ValueError(
                f"baseline: {self.signal.value} is not measured over requests, so it has no "
                f"baseline to compare with (baseline rules watch {names})"
            )
        if self.op not in (Op.GT, Op.GE):
            raise ValueError(
                f"baseline: a baseline rule fires on a rise above the baseline: op must be > "
                f"or >=, not {self.op.value}"
            )
        return self

    def resolve(self, interval: float, override: RuleOverride | None = None) -> Rule:
        """The rule as evaluated for a service probed every ``interval`` seconds.

        Raises ValueError when the override's threshold does not fit the signal.
        """
        o = override or RuleOverride()
        max_gap = o.max_gap if o.max_gap is not None else self.max_gap
        threshold = self.threshold if o.threshold is None else o.threshold
        return Rule(
            name=self.name,
            signal=self.signal,
            op=self.op,
            threshold=None if threshold is None else threshold_value(self.signal, threshold),
            for_=self.for_ if o.for_ is None else o.for_,
            max_gap=2 * interval if max_gap is None else max_gap,
            tolerance=self.tolerance if o.tolerance is None else o.tolerance,
            description=self.description,
            baseline=None if self.baseline is None else self.baseline.resolve(),
        )


class RuleFile(Strict):
    """A whole rule file."""

    rules: tuple[RuleSpec, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class LoadedRule:
    """A rule and the file it came from (so errors and `check` can say where)."""

    spec: RuleSpec
    path: Path


def builtin_rules_path() -> Path:
    """rules/default.toml: inside the package when installed, beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "rules" / "default.toml", here.parent / "rules" / "default.toml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"the built-in rules are missing: looked for {candidate}")


def load_rule_files(paths: Sequence[Path]) -> dict[str, LoadedRule]:
    """Load rule files in order; a name defined twice is an error naming both files."""
    loaded: dict[str, LoadedRule] = {}
    for path in paths:
        raw = read_toml(path)
        try:
            rule_file = RuleFile.model_validate(raw, context={"environ": {}})
        except ValidationError as e:
            raise ConfigError(format_validation_error(str(path), e, raw)) from e
        for index, spec in enumerate(rule_file.rules):
            if spec.name in loaded:
                first = loaded[spec.name].path
                raise ConfigError(
                    f"{path}: rules[{index}].name: rule {spec.name!r} is already defined in {first}"
                )
            problem = check_domain(spec.resolve(interval=spec.for_ or 1.0))
            if problem:
                raise ConfigError(f"{path}: rules[{index}] ({spec.name}): {problem}")
            loaded[spec.name] = LoadedRule(spec, path)
    return loaded


# Signals whose samples are only ever 0 or 1.
_BINARY = frozenset({Signal.HEALTH, Signal.DEPLOYMENT})


def _candidates(signal: Signal, threshold: float) -> Iterable[float]:
    lo, hi = signal.bounds
    step = max(abs(threshold) * 1e-6, 1e-9)
    values = [lo, threshold - step, threshold, threshold + step, threshold * 2 + 1]
    if math.isfinite(hi):
        values.append(hi)
    if signal in _BINARY:
        values = [0.0, 1.0]  # healthy or failing, running or crashing: nothing between
    return (v for v in values if lo <= v <= hi)


def check_domain(rule: Rule) -> str | None:
    """Whether the rule can both fire and stay quiet on the values its signal can take (a
    rule with no fixed threshold is left to its baseline, whose factor is checked at load)."""
    if rule.threshold is None:
        return None
    outcomes = {rule.breaches(v) for v in _candidates(rule.signal, rule.threshold)}
    lo, hi = rule.signal.bounds
    span = f"{lo:g}..{hi:g}" if math.isfinite(hi) else f"{lo:g} and up"
    if True not in outcomes:
        hint = ""
        if rule.signal is Signal.ERROR_RATE and rule.threshold > 1:
            hint = f' (rates are fractions: did you mean "{rule.threshold:g}%"?)'
        return (
            f"can never fire: {rule.signal.value} values lie in {span}, "
            f"none is {rule.op.value} {rule.threshold:g}{hint}"
        )
    if False not in outcomes:
        return (
            f"always fires: every {rule.signal.value} value ({span}) is "
            f"{rule.op.value} {rule.threshold:g}"
        )
    return None


@dataclass(frozen=True, slots=True)
class _Trial:
    """What the dry run feeds a rule: a breaching and a healthy sample, and a baseline."""

    bad: float
    good: float
    reference: Reference | None = None
    detail: Mapping[str, float] = field(default_factory=dict)

    def sample(self, rule: Rule, at: float, value: float) -> Sample:
        detail = dict(self.detail)
        if "requests" in detail:
            detail["errors"] = value * detail["requests"]
        return Sample(rule.signal, at, value, detail=detail)


def _trial(rule: Rule) -> _Trial:
    if rule.threshold is not None and rule.baseline is None:
        values = list(_candidates(rule.signal, rule.threshold))
        breaching = next(v for v in values if rule.breaches(v))
        healthy = next(v for v in values if not rule.breaches(v))
        return _Trial(breaching, healthy)
    assert rule.baseline is not None
    # A baseline well inside the signal's range, plenty of requests on both sides (enough
    # for the proportion test to be sure at any confidence: the trial is of the timing), and
    # a fault at twice the limit (and past the fixed threshold, if there is one).
    factor, requests = rule.baseline.factor, max(100.0 * rule.baseline.min_requests, 1e6)
    base = min(0.01, 0.25 / factor) if rule.signal is Signal.ERROR_RATE else 0.1
    bad = 2 * factor * base
    if rule.threshold is not None:
        bad = max(bad, *(v for v in _candidates(rule.signal, rule.threshold) if rule.breaches(v)))
    bad = min(bad, rule.signal.bounds[1])
    reference = Reference("dry run", base, requests, base * requests)
    return _Trial(bad, base, reference, {"requests": requests})


def dry_run(rule: Rule, interval: float) -> str | None:
    """Feed the rule a fault that starts at 0 and is sampled every ``interval`` seconds.

    It must fire within ``for`` + one interval (DESIGN's detection goal) and one healthy
    sample afterwards must clear it. Returns what is wrong, or None.

    The cost does not grow with ``for`` / ``interval``: a window longer than
    :data:`DRY_RUN_SAMPLES` intervals is sampled at a coarser step, with ``max_gap`` scaled
    alike. The outcome depends on how the window is covered (gaps, the breaching fraction),
    not on how many samples cover it.
    """
    problem = check_domain(rule)
    if problem:
        return problem
    if not (math.isfinite(interval) and interval > 0):
        return f"dry run: the interval must be a positive duration (got {interval!r})"
    if rule.max_gap < interval:
        return (
            f"can never fire: max_gap {format_duration(rule.max_gap)} is shorter than the "
            f"interval {format_duration(interval)}, so every sample breaks the window"
        )
    trial = _trial(rule)
    bad, good = trial.bad, trial.good
    deadline = rule.for_ + interval
    step, tested = interval, rule
    if deadline > DRY_RUN_SAMPLES * interval:
        step = deadline / DRY_RUN_SAMPLES
        tested = replace(rule, max_gap=rule.max_gap * step / interval)
    state = RuleState()
    fired_at: float | None = None
    for k in range(DRY_RUN_SAMPLES + 2):  # bounded by a count, never by adding up floats
        t = k * step
        if t > deadline:
            break
        state, verdict = evaluate(tested, state, trial.sample(rule, t, bad), trial.reference)
        if verdict.fired:
            fired_at = t
            break
    if fired_at is None:
        return (
            f"dry run: a fault sampled every {format_duration(interval)} did not fire "
            f"within for + one interval ({format_duration(deadline)})"
        )
    # Strict rules clear on one healthy sample; tolerant ones once the breaching fraction
    # of the window drops below the tolerance, which takes at most one window.
    for k in range(1, DRY_RUN_SAMPLES + 3):
        if state.phase is Phase.INACTIVE:
            return None
        t = fired_at + k * step
        if t > fired_at + rule.for_ + step:
            break
        state, _ = evaluate(tested, state, trial.sample(rule, t, good), trial.reference)
    if state.phase is Phase.INACTIVE:
        return None
    return f"dry run: healthy {rule.signal.value} values ({good:g}) did not clear the rule"
