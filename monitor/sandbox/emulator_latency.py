"""Request durations in the Railway emulator: ``httpDurationMetrics`` from the traffic model.

The requests ``httpMetricsGroupedByStatus`` counts are the ones timed here: a traffic
segment's take log-normal times (median ``latency_ms``, spread ``latency_sigma``, so its
q-quantile is ``median * exp(sigma * z_q)``); requests recorded as events took their
``latency_ms`` each. A step's quantiles are those of everything it served, weighted by request
count, in milliseconds as Railway answers; a step without requests has no sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from monitor.sandbox.emulator_model import HttpCount, Traffic

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
_NORMAL = NormalDist()
_BISECTIONS = 200  # halvings of the log-duration bracket: far below a float's resolution

# Requests served alike: (how many, log of their median in ms, log-normal sigma; 0: all alike)
Component = tuple[float, float, float]


def step_components(
    segments: Sequence[Traffic],
    events: Sequence[HttpCount],
    bucket: float,
    step: float,
    now: float,
    status: int | None = None,
) -> list[Component]:
    """What the step from ``bucket`` served (only answers with ``status``, if given)."""
    found: list[Component] = []
    for event in events:
        if bucket <= event.at < bucket + step and status in (None, event.status):
            found.append((event.count, math.log(event.latency_ms), 0.0))
    for i, seg in enumerate(segments):
        seg_end = min(segments[i + 1].start if i + 1 < len(segments) else now, now)
        total = seg.rps * max(0.0, min(bucket + step, seg_end) - max(bucket, seg.start))
        if status is not None:  # the same split as httpMetricsGroupedByStatus
            failed = total * seg.error_ratio if status == seg.error_status else 0.0
            total = failed + (total * (1 - seg.error_ratio) if status == 200 else 0.0)
        found.append((total, math.log(seg.latency_ms), seg.latency_sigma))
    return [c for c in found if c[0] > 0]


def quantile(components: Sequence[Component], q: float) -> float:
    """The q-quantile in ms of the mixture: the least duration that q of the requests took."""
    z = _NORMAL.inv_cdf(q)
    if len({(mu, sigma) for _, mu, sigma in components}) == 1:
        _, mu, sigma = components[0]
        return math.exp(mu + sigma * z)
    total = sum(n for n, _, _ in components)

    def share(log_ms: float) -> float:  # of the requests that took at most exp(log_ms)
        below = 0.0
        for n, mu, sigma in components:
            if sigma > 0:
                below += n * _NORMAL.cdf((log_ms - mu) / sigma)
            elif mu <= log_ms:
                below += n
        return below / total

    low = min(mu - 10 * sigma for _, mu, sigma in components) - 1
    high = max(mu + 10 * sigma for _, mu, sigma in components) + 1
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if share(middle) >= q:
            high = middle
        else:
            low = middle
    return math.exp(high)


def duration_samples(
    segments: Sequence[Traffic],
    events: Sequence[HttpCount],
    buckets: Sequence[int],
    step: int,
    now: float,
    status: int | None = None,
) -> list[dict[str, float]]:
    """``HttpDurationMetricsSample`` values for the steps of ``buckets`` that had requests."""
    samples: list[dict[str, float]] = []
    for bucket in buckets:
        components = step_components(segments, events, bucket, step, now, status)
        if components:
            sample: dict[str, float] = {"ts": bucket}
            sample |= {key: quantile(components, q) for key, q in QUANTILES.items()}
            samples.append(sample)
    return samples
