"""Railway's metric answers read at the boundary: the error rate, latency and memory samples
of a poll.

``httpMetricsGroupedByStatus``, ``httpDurationMetrics`` and ``metrics`` answers become
:class:`~monitor.model.Sample` values; anything that is not a finite, plausible measurement at
a real time makes the sample UNKNOWN with the entry in its reason, never a breach and never an
exception.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from monitor.model import Sample, Signal
from monitor.railway.client import Deployment, shown
from monitor.sources.exposition_checks import MAX_LATENCY, value_problem
from monitor.sources.railway import RailwayErrorRate, RailwayLatency

# Requests in one step past this are garbage, not traffic (a billion a second for a minute).
MAX_REQUESTS_PER_STEP = 1e11
# Memory in GB past this (1 EiB) is garbage, not a measurement.
MAX_MEMORY_GB = 2.0**30

# A request quantile past a day (Railway answers in milliseconds) is garbage.
MAX_DURATION_MS = MAX_LATENCY * 1000.0
# httpDurationMetrics' fields, lowest quantile first: every one is asked, so their order is
# checked whichever the rules watch.
QUANTILE_FIELDS = {
    Signal.LATENCY_P50: "p50",
    Signal.LATENCY_P90: "p90",
    Signal.LATENCY_P95: "p95",
    Signal.LATENCY_P99: "p99",
}

Totals = dict[float, float]  # step start -> requests


def _real(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (a bool, a string, 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range
        return None
    return number if math.isfinite(number) else None


def _points(
    group: Any, key: str, path: str, ceiling: float, what: str
) -> list[tuple[float, float]] | str:
    """The ``(ts, value)`` pairs of a group's ``key`` list, or why they are not usable."""
    items = group.get(key) if isinstance(group, dict) else None
    if not isinstance(items, list):
        return f"{path}: unexpected entry {shown(group)}"
    points = []
    for item in items:
        ts = _real(item.get("ts")) if isinstance(item, dict) else None
        value = _real(item.get("value")) if isinstance(item, dict) else None
        if ts is None or ts < 0:
            return f"{path}: a timestamp that is not a time: {shown(item)}"
        if value is None or not 0 <= value <= ceiling:
            return f"{path}: {what} that is not a measurement: {shown(item)}"
        points.append((ts, value))
    return points


def _by_step(answer: Any, step: float, at: float, path: str) -> tuple[Totals, Totals] | str:
    """All requests and 5xx requests per complete step of ``httpMetricsGroupedByStatus``, or
    why the answer is not usable (any entry that is not a status code with finite,
    non-negative counts at real times)."""
    if not isinstance(answer, list):
        return f"{path}: expected a list, got {shown(answer)}"
    totals: Totals = {}
    errors: Totals = {}
    for group in answer:
        status = group.get("statusCode") if isinstance(group, dict) else None
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 999:
            return f"{path}: unexpected entry {shown(group)}"
        points = _points(group, "samples", path, MAX_REQUESTS_PER_STEP, "a request count")
        if isinstance(points, str):
            return points
        for ts, value in points:
            if ts + step <= at:  # the step still filling would understate the rate
                totals[ts] = totals.get(ts, 0.0) + value
                if 500 <= status <= 599:
                    errors[ts] = errors.get(ts, 0.0) + value
    return totals, errors


def error_rate_sample(answer: Any, config: RailwayErrorRate, at: float, path: str) -> Sample:
    """5xx / all requests in the newest complete step of ``httpMetricsGroupedByStatus``.

    Any entry that is not a status code with finite, non-negative counts at real times makes
    the sample UNKNOWN with the entry in the reason: garbage never becomes a rate.
    """
    counted = _by_step(answer, config.step, at, path)
    if isinstance(counted, str):
        return Sample(Signal.ERROR_RATE, at, None, counted)
    totals, errors = counted
    if not totals:
        return Sample(Signal.ERROR_RATE, at, None, "no requests recorded in the last steps")
    step = max(totals)
    total, failed = totals[step], errors.get(step, 0.0)
    detail = {"requests": total, "errors": failed, "step_start": step, "step_s": config.step}
    if total < config.min_requests:
        reason = f"too little traffic: {total:g} requests < min_requests {config.min_requests}"
        return Sample(Signal.ERROR_RATE, at, None, reason, detail)
    rate = failed / total
    problem = value_problem(Signal.ERROR_RATE, rate)
    if problem:
        return Sample(Signal.ERROR_RATE, at, None, problem, detail)
    return Sample(Signal.ERROR_RATE, at, rate, "", detail)


def _durations(answer: Any, path: str) -> dict[float, dict[str, float]] | str:
    """Railway's quantiles in milliseconds per step start, or why the answer is not usable."""
    items = answer.get("samples") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        return f"{path}: expected {{samples: [...]}}, got {shown(answer)}"
    steps: dict[float, dict[str, float]] = {}
    for item in items:
        if not isinstance(item, dict) or (ts := _real(item.get("ts"))) is None or ts < 0:
            return f"{path}: a timestamp that is not a time: {shown(item)}"
        quantiles: dict[str, float] = {}
        for key in QUANTILE_FIELDS.values():
            value = _real(item.get(key))
            if value is None or not 0 <= value <= MAX_DURATION_MS:
                return f"{path}: a duration that is not a measurement: {shown(item)}"
            quantiles[key] = value
        ordered = list(quantiles.values())
        if any(high < low for low, high in itertools.pairwise(ordered)):
            return f"{path}: quantiles out of order (p50 <= p90 <= p95 <= p99): {shown(item)}"
        if ts in steps:
            return f"{path}: a step answered twice: {shown(item)}"
        steps[ts] = quantiles
    return steps


def latency_samples(
    answer: Any,
    by_status_answer: Any,
    config: RailwayLatency,
    signals: Sequence[Signal],
    at: float,
    path: str,
    *,
    requests_path: str | None = None,
) -> list[Sample]:
    """One sample per quantile in ``signals``, in seconds, from the newest complete step.

    ``answer`` is ``httpDurationMetrics`` (milliseconds per step), ``by_status_answer`` the
    ``httpMetricsGroupedByStatus`` of the same steps: the step's request count, which the
    quantiles describe (``detail["requests"]``, and ``min_requests``). Garbage in either
    makes every quantile UNKNOWN with the entry in the reason; so does a step that had
    requests but no durations, rather than an older step's numbers passed off as news.
    """
    durations = _durations(answer, path)
    if isinstance(durations, str):
        return [Sample(signal, at, None, durations) for signal in signals]
    counted = _by_step(by_status_answer, config.step, at, requests_path or path)
    if isinstance(counted, str):
        return [Sample(signal, at, None, counted) for signal in signals]
    totals = counted[0]
    steps = [ts for ts in durations if ts + config.step <= at] + list(totals)
    if not steps:
        return [Sample(s, at, None, "no requests recorded in the last steps") for s in signals]
    step = max(steps)
    requests = totals.get(step, 0.0)
    detail = {"requests": requests, "step_start": step, "step_s": config.step}
    quantiles = durations.get(step)
    reason = ""
    if requests < config.min_requests:
        reason = f"too little traffic: {requests:g} requests < min_requests {config.min_requests}"
    elif quantiles is None:
        reason = f"{path}: no request durations for the step at {step:g} ({requests:g} requests)"
    samples = []
    for signal in signals:
        if reason or quantiles is None:
            samples.append(Sample(signal, at, None, reason, dict(detail)))
            continue
        seconds = quantiles[QUANTILE_FIELDS[signal]] / 1000.0  # Railway answers milliseconds
        problem = value_problem(signal, seconds)
        samples.append(Sample(signal, at, None if problem else seconds, problem, dict(detail)))
    return samples


def memory_sample(answer: Any, active: Deployment | None, at: float, path: str) -> Sample:
    """The active deployment's latest MEMORY_USAGE_GB / MEMORY_LIMIT_GB."""
    if active is None:
        return Sample(Signal.MEMORY, at, None, "no active deployment")
    if not isinstance(answer, list):
        return Sample(Signal.MEMORY, at, None, f"{path}: expected a list, got {shown(answer)}")
    latest: dict[str, tuple[float, float]] = {}
    for group in answer:
        tags = group.get("tags") if isinstance(group, dict) else None
        measurement = group.get("measurement") if isinstance(group, dict) else None
        if not isinstance(tags, dict) or not isinstance(measurement, str):
            return Sample(Signal.MEMORY, at, None, f"{path}: unexpected entry {shown(group)}")
        if tags.get("deploymentId") != active.id:
            continue
        values = _points(group, "values", path, MAX_MEMORY_GB, "a memory size")
        if isinstance(values, str):
            return Sample(Signal.MEMORY, at, None, values)
        if values:
            latest[measurement] = max(values)
    usage, limit = latest.get("MEMORY_USAGE_GB"), latest.get("MEMORY_LIMIT_GB")
    if usage is None or limit is None:
        missing = "usage" if usage is None else "limit"
        reason = f"no memory {missing} for deployment {active.id}"
        return Sample(Signal.MEMORY, at, None, reason)
    detail = {"deployment": active.id, "usage_gb": usage[1], "limit_gb": limit[1]}
    if not limit[1] > 0:
        reason = f"memory limit {limit[1]:g} GB for deployment {active.id}"
        return Sample(Signal.MEMORY, at, None, reason, detail)
    ratio = usage[1] / limit[1]
    problem = value_problem(Signal.MEMORY, ratio)
    if problem:
        return Sample(Signal.MEMORY, at, None, problem, detail)
    return Sample(Signal.MEMORY, at, ratio, "", detail)
