"""The rule evaluator: a pure function from (rule, state, sample) to (state, verdict).

Prometheus ``for`` semantics, made safe for automatic action: a rule fires only when the
signal has breached for ``for_`` seconds of *covered* time (no gap between known samples
longer than ``max_gap``), UNKNOWN samples never advance an episode, and a long run of them
turns the rule blind instead of leaving stale evidence in place. No I/O, no clock: ``sample.at``
is "now", so the whole state machine is tested with tables of floats.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from monitor.baseline import Reference, judge
from monitor.model import Op, Phase, Rule, Sample, Signal, for_slack, format_duration


class Transition(enum.StrEnum):
    """A change a single evaluation can report; several may happen at once."""

    PENDING = "pending"  # INACTIVE -> PENDING
    FIRING = "firing"  # PENDING -> FIRING
    RESOLVED = "resolved"  # FIRING -> INACTIVE: the signal became healthy
    RESET = "reset"  # PENDING/FIRING -> INACTIVE: healthy, tolerance lost, gap or blind
    BLIND = "blind"  # no known sample for longer than max_gap, once per blind run
    SIGHT_RESTORED = "sight_restored"  # the first known sample after being blind


@dataclass(frozen=True, slots=True)
class RuleState:
    """What one rule remembers about one service between samples."""

    phase: Phase = Phase.INACTIVE
    since: float | None = None  # when the breach of the current episode began (see _onset)
    last_known_at: float | None = None
    unknown_since: float | None = None  # first UNKNOWN of the current run; None after a known
    blind: bool = False
    window: tuple[Sample, ...] = ()  # the episode's known samples in [now - for_, now]
    # A rate's excess measured so far, as (value x seconds, seconds): the last healthy sample's
    # while INACTIVE, through the first breaching one's while PENDING (until it dates `since`).
    lead: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, so a pending episode survives a restart."""
        return {
            "phase": self.phase.value,
            "since": self.since,
            "last_known_at": self.last_known_at,
            "unknown_since": self.unknown_since,
            "blind": self.blind,
            "window": [sample.to_dict() for sample in self.window],
            "lead": None if self.lead is None else list(self.lead),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleState:
        """The inverse of :meth:`to_dict`; missing keys take their defaults."""
        return cls(
            phase=Phase(data.get("phase", Phase.INACTIVE.value)),
            since=_optional_float(data.get("since")),
            last_known_at=_optional_float(data.get("last_known_at")),
            unknown_since=_optional_float(data.get("unknown_since")),
            blind=bool(data.get("blind", False)),
            window=tuple(Sample.from_dict(item) for item in data.get("window", ())),
            lead=_optional_pair(data.get("lead")),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of evaluating one sample: what the rule is now and why."""

    rule: str
    at: float
    phase: Phase
    previous: Phase
    transitions: tuple[Transition, ...]
    breaching: bool | None  # None when the sample was UNKNOWN or ignored (out of order)
    blind: bool
    reason: str
    evidence: tuple[Sample, ...]

    @property
    def fired(self) -> bool:
        """True on the evaluation that moved the rule to FIRING."""
        return Transition.FIRING in self.transitions


def evaluate(
    rule: Rule, state: RuleState, sample: Sample, reference: Reference | None = None
) -> tuple[RuleState, Verdict]:
    """Feed one sample (``sample.at`` is now) to ``rule`` and return the new state and verdict.

    ``reference`` is the baseline a baseline rule compares with (:mod:`monitor.baseline`):
    without one, a sample its fixed threshold does not already clear is UNKNOWN.
    Raises ValueError if the sample measures another signal than the rule's.
    """
    if sample.signal is not rule.signal:
        raise ValueError(
            f"rule {rule.name!r} evaluates {rule.signal.value}, got a {sample.signal.value} sample"
        )
    known, unknown = state.last_known_at, state.unknown_since
    latest = max((t for t in (known, unknown) if t is not None), default=None)
    if latest is not None and sample.at < latest:
        # A late sample would rewrite history the window has already moved past.
        reason = f"ignored out-of-order sample at {sample.at}: older than {latest}"
        return state, _verdict(rule, sample, state, state, (), None, reason)
    if sample.idle:
        return _evaluate_idle(rule, state, sample)
    value = sample.value
    if value is None:
        return _evaluate_unknown(rule, state, sample)
    compared = compared_text(rule, value)
    if rule.baseline is not None and rule.breaches(value):
        judgment = judge(rule.baseline, rule.signal, sample, reference)
        if judgment.breaching is None:  # nothing to compare with: no evidence either way
            blank = replace(sample, value=None, reason=judgment.text, idle=judgment.baseless)
            if judgment.baseless:  # no baseline is no outage of sight: the rule rests
                return _evaluate_idle(rule, state, blank)
            return _evaluate_unknown(rule, state, blank)
        mark = {**judgment.evidence, "breaching": judgment.breaching, "text": judgment.text}
        sample = replace(sample, detail={**sample.detail, "vs_baseline": mark})
        compared = judgment.text if rule.threshold is None else f"{compared}; {judgment.text}"
    return _evaluate_known(rule, state, sample, value, compared)


def compared_text(rule: Rule, value: float) -> str:
    """``error_rate 7% > 5%``: the sample against the fixed threshold, if the rule has one."""
    shown = f"{rule.signal.value} {rule.shown(value)}"
    if rule.threshold is None:
        return shown
    negation = "" if rule.breaches(value) else "not "
    return f"{shown} {negation}{rule.op.value} {rule.shown(rule.threshold)}"


def _evaluate_known(
    rule: Rule, state: RuleState, sample: Sample, value: float, compared: str
) -> tuple[RuleState, Verdict]:
    now = sample.at
    transitions: list[Transition] = []
    notes: list[str] = []
    phase, since, window = state.phase, state.since, state.window
    # What the samples so far measured of a rate's excess: only from an unbroken run of known
    # samples (after an UNKNOWN or a gap, nothing says what the missing windows held).
    lead = state.lead if state.unknown_since is None else None

    if state.last_known_at is not None and now - state.last_known_at > rule.max_gap:
        # The window is no longer covered: nothing says the breach went on during the gap.
        if phase is not Phase.INACTIVE:
            transitions.append(Transition.RESET)
            gap = _dur(now - state.last_known_at)
            notes.append(f"{phase.value} reset by a gap of {gap} (> max_gap {_dur(rule.max_gap)})")
        phase, since, window, lead = Phase.INACTIVE, None, (), None
    if state.blind:
        transitions.append(Transition.SIGHT_RESTORED)
        notes.append(f"sight restored after {_dur(now - _last_seen(state, now))}")

    breaching = rule.breached(sample)
    outcome = ""
    measured = _measured(rule, sample, value)
    if phase is Phase.INACTIVE:
        if breaching:
            phase, since, window = Phase.PENDING, now, (sample,)
            transitions.append(Transition.PENDING)
            if measured is not None:  # dated at the next breaching sample (_onset)
                lead = _reach(rule, lead, measured)
    elif lead is not None and since is not None and phase is Phase.PENDING:
        if not breaching:
            lead = None
        elif sample.window_start >= since:  # a window wholly after the first: the level
            since, lead = _onset(since, lead, value), None
        # else: a window that overlaps the first (a Railway step read again): wait
    else:
        lead = None
        start = now - rule.for_
        window = tuple(s for s in (*window, sample) if s.at >= start)
        hits = _hits(rule, window)
        strict = rule.tolerance >= 1.0
        lost = not breaching if strict else hits / len(window) < rule.tolerance
        if lost:
            ended = Transition.RESET if phase is Phase.PENDING else Transition.RESOLVED
            transitions.append(ended)
            outcome = f"; {phase.value} {ended.value} after {_dur(now - _or(since, now))}"
            if not strict:
                outcome += f" ({hits}/{len(window)} breaching < tolerance {rule.tolerance:g})"
            phase, since, window = Phase.INACTIVE, None, ()
    if phase is Phase.INACTIVE:
        lead = None if breaching else measured  # the healthy window a breach may follow

    if phase is not Phase.INACTIVE:
        lasted = now - _or(since, now)
        if phase is Phase.PENDING and lasted >= rule.for_ - for_slack(rule.max_gap):
            phase = Phase.FIRING
            transitions.append(Transition.FIRING)
        of = "" if phase is Phase.FIRING else f" of {_dur(rule.for_)}"
        outcome = f" for {_dur(lasted)}{of} ({_hits(rule, window)}/{len(window)} samples breaching)"

    new = RuleState(phase=phase, since=since, last_known_at=now, window=window, lead=lead)
    reason = "; ".join([*notes, compared + outcome])
    return new, _verdict(rule, sample, state, new, tuple(transitions), breaching, reason)


def _measured(rule: Rule, sample: Sample, value: float) -> tuple[float, float] | None:
    """An error rate's (value x span, span) for a rule that fires above a threshold; None for
    an instant (a probe, a gauge), another kind of rule, or another signal: the estimate in
    :func:`_onset` holds for a share of requests failing (a fault dilutes it linearly in its
    window, from a baseline near zero), not for a level like memory or a quantile."""
    span = sample.at - sample.window_start
    if rule.signal is not Signal.ERROR_RATE or rule.op not in (Op.GT, Op.GE):
        return None
    if rule.baseline is not None or rule.threshold is None:
        return None  # the limit moves with the baseline: no fixed level to date from
    if span <= 0 or not 0 <= value <= 1:
        return None
    return value * span, span


def _reach(
    rule: Rule, healthy: tuple[float, float] | None, first: tuple[float, float]
) -> tuple[float, float]:
    """The excess measured through the first breaching window, and how far before that
    sample the fault can have begun: anywhere in its window, and in the healthy window before
    only as far as that window's excess allows (a fault at or above the threshold covering a
    share of it would show at least that share of the threshold)."""
    volume, span = first
    if healthy is None:
        return volume, span
    excess, length = healthy
    threshold = rule.threshold or 0.0  # _measured returns None without one
    share = length if threshold <= 0 else min(length, excess / threshold)
    return volume + excess, span + share


def _onset(first_at: float, lead: tuple[float, float], value: float) -> float:
    """When a breach began, from the excess measured up to its first breaching sample.

    A rate describes the window before its sample. A fault that begins inside a window shows
    there diluted: the window's value is the fault's level times the share of the window it
    covered. ``lead`` holds value x seconds of the last healthy window and of the first
    breaching one, and how far back the fault can reach (:func:`_reach`); ``value``, the next
    breaching window's (a whole window in the fault: its level). So the fault has run
    lead / value seconds by the first breaching sample. Dated so, `for` counts the fault's own
    time: neither the interval a fault just before a tick spends diluted below the threshold
    (it would fire an interval late) nor the part of the first window before the fault (it
    would fire early). Never further back than the reach, never after the first sample.
    """
    volume, span = lead
    if value <= 0:
        return first_at
    return min(first_at, max(first_at - span, first_at - volume / value))


def _evaluate_idle(rule: Rule, state: RuleState, sample: Sample) -> tuple[RuleState, Verdict]:
    """Nothing to measure by design (a sleeping service): nothing to judge. The rule rests
    INACTIVE and is not blind (a sleep is no outage of railguard's sight); whatever it held
    ends, and the first sample after the rest starts afresh."""
    transitions: list[Transition] = []
    notes = [f"idle ({sample.reason or 'nothing to measure'})"]
    if state.blind:
        transitions.append(Transition.SIGHT_RESTORED)
        notes.append("no longer blind: nothing to see")
    if state.phase is not Phase.INACTIVE:
        transitions.append(Transition.RESET)
        notes.append(f"{state.phase.value} reset")
    new = RuleState()
    return new, _verdict(rule, sample, state, new, tuple(transitions), None, "; ".join(notes))


def _evaluate_unknown(rule: Rule, state: RuleState, sample: Sample) -> tuple[RuleState, Verdict]:
    now = sample.at
    unknown_since = _or(state.unknown_since, now)
    silent = now - _or(state.last_known_at, unknown_since)
    why = sample.reason or "no reason given"

    if state.blind:
        reason = f"still blind, no known sample for {_dur(silent)}: {why}"
        new = replace(state, unknown_since=unknown_since)
        return new, _verdict(rule, sample, state, new, (), None, reason)
    if silent <= rule.max_gap:
        # Neither evidence for nor against: the episode holds, but its clock runs on.
        reason = (
            f"unknown ({why}); no known sample for {_dur(silent)}, max_gap {_dur(rule.max_gap)}"
        )
        new = replace(state, unknown_since=unknown_since)
        return new, _verdict(rule, sample, state, new, (), None, reason)

    transitions = [Transition.BLIND]
    reason = f"no known sample for {_dur(silent)} (> max_gap {_dur(rule.max_gap)}): {why}"
    if state.phase is not Phase.INACTIVE:
        transitions.append(Transition.RESET)
        reason += f"; {state.phase.value} reset"
    new = replace(
        state, phase=Phase.INACTIVE, since=None, unknown_since=unknown_since, blind=True, window=()
    )
    return new, _verdict(rule, sample, state, new, tuple(transitions), None, reason)


def _verdict(
    rule: Rule,
    sample: Sample,
    before: RuleState,
    after: RuleState,
    transitions: tuple[Transition, ...],
    breaching: bool | None,
    reason: str,
) -> Verdict:
    return Verdict(
        rule=rule.name,
        at=sample.at,
        phase=after.phase,
        previous=before.phase,
        transitions=transitions,
        breaching=breaching,
        blind=after.blind,
        reason=reason,
        evidence=after.window,
    )


def _hits(rule: Rule, window: tuple[Sample, ...]) -> int:
    return sum(1 for s in window if rule.breached(s))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _last_seen(state: RuleState, default: float) -> float:
    """When the rule last had sight: its last known sample, else the start of the UNKNOWN run."""
    return _or(state.last_known_at, _or(state.unknown_since, default))


def _dur(seconds: float) -> str:
    # format_duration renders zero as "0ms", which reads oddly for "pending for 0s".
    return "0s" if seconds == 0 else format_duration(seconds)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    return float(value[0]), float(value[1])
