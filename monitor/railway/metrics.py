"""Railway's metric answers read at the boundary: the error rate and memory samples of a poll.

``httpMetricsGroupedByStatus`` and ``metrics`` answers become :class:`~monitor.model.Sample`
values; anything that is not a finite, plausible measurement at a real time makes the sample
UNKNOWN with the entry in its reason, never a breach and never an exception.
"""

from __future__ import annotations

import math
from typing import Any

from monitor.model import Sample, Signal
from monitor.railway.client import Deployment, shown
from monitor.sources.exposition_checks import value_problem
from monitor.sources.railway import RailwayErrorRate

# Requests in one step past this are garbage, not traffic (a billion a second for a minute).
MAX_REQUESTS_PER_STEP = 1e11
# Memory in GB past this (1 EiB) is garbage, not a measurement.
MAX_MEMORY_GB = 2.0**30


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


def error_rate_sample(answer: Any, config: RailwayErrorRate, at: float, path: str) -> Sample:
    """5xx / all requests in the newest complete step of ``httpMetricsGroupedByStatus``.

    Any entry that is not a status code with finite, non-negative counts at real times makes
    the sample UNKNOWN with the entry in the reason: garbage never becomes a rate.
    """
    if not isinstance(answer, list):
        return Sample(Signal.ERROR_RATE, at, None, f"{path}: expected a list, got {shown(answer)}")
    totals: dict[float, float] = {}
    errors: dict[float, float] = {}
    for group in answer:
        status = group.get("statusCode") if isinstance(group, dict) else None
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 999:
            reason = f"{path}: unexpected entry {shown(group)}"
            return Sample(Signal.ERROR_RATE, at, None, reason)
        points = _points(group, "samples", path, MAX_REQUESTS_PER_STEP, "a request count")
        if isinstance(points, str):
            return Sample(Signal.ERROR_RATE, at, None, points)
        for ts, value in points:
            if ts + config.step <= at:  # the step still filling would understate the rate
                totals[ts] = totals.get(ts, 0.0) + value
                if 500 <= status <= 599:
                    errors[ts] = errors.get(ts, 0.0) + value
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
