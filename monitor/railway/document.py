"""The poll's GraphQL document: aliased root fields per service, one time window.

``dN`` a service's recent deployments (release tracking), ``hN`` its HTTP requests by status
(error rate), ``pN`` its request duration quantiles (latency) with ``nN`` the requests they
describe (``hN`` itself when the steps agree), ``mN`` its memory usage and limit by
deployment; ``platform`` is Railway's own status (its incidents: the platform_incident guard).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from monitor.errors import RailwayGraphQLError
from monitor.model import Signal
from monitor.railway.client import DEPLOYMENT_FIELDS
from monitor.railway.platform import FIELD as PLATFORM_FIELD
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwayMemory

ALIASES = ("d", "h", "m", "p", "n")  # the letters of a service's fields; N is its index


@dataclass(frozen=True, slots=True)
class Target:
    """One service as the poller asks Railway about it."""

    name: str
    service_id: str
    environment_id: str
    error_rate: RailwayErrorRate | None = None
    memory: RailwayMemory | None = None
    latency: RailwayLatency | None = None
    quantiles: tuple[Signal, ...] = ()  # the latency quantiles its rules watch
    deployment: bool = False  # a rule watches the active deployment's status (Signal.DEPLOYMENT)
    deployments: int = 10  # how much history each poll fetches


def asks_window(target: Target) -> bool:
    """Whether the target asks Railway for metrics over the poll's time window."""
    return any(c is not None for c in (target.error_rate, target.memory, target.latency))


def counts_alias(i: int, target: Target) -> str:
    """Where the requests behind target ``i``'s latency quantiles are: its error rate's
    ``hN`` when the steps agree, else a field of their own."""
    rate, latency = target.error_rate, target.latency
    same = rate is not None and latency is not None and int(rate.step) == int(latency.step)
    return f"h{i}" if same else f"n{i}"


def _by_status(alias: str, ids: str, step: float) -> str:
    return (
        f"{alias}: httpMetricsGroupedByStatus({ids}, startDate: $start, endDate: $end, "
        f"stepSeconds: {int(step)}) {{ statusCode samples {{ ts value }} }}"
    )


def build_document(targets: Sequence[Target], *, platform: bool = True) -> str:
    """The tick's query: aliased fields per target, one ``$start``/``$end`` window, and
    Railway's own status (``platform``) as one more root field of the same request."""
    # GraphQL refuses declared variables no field uses: the window only when metrics are asked.
    windowed = any(asks_window(t) for t in targets)
    params = ["$start: DateTime!", "$end: DateTime!"] if windowed else []
    fields = []
    for i, t in enumerate(targets):
        params += [f"$s{i}: String!", f"$e{i}: String!"]
        ids = f"serviceId: $s{i}, environmentId: $e{i}"
        fields.append(
            f"d{i}: deployments(input: {{{ids}}}, first: {t.deployments}) "
            f"{{ edges {{ node {{ {DEPLOYMENT_FIELDS} }} }} }}"
        )
        if t.error_rate is not None:
            fields.append(_by_status(f"h{i}", ids, t.error_rate.step))
        if t.latency is not None:
            fields.append(
                f"p{i}: httpDurationMetrics({ids}, startDate: $start, endDate: $end, "
                f"stepSeconds: {int(t.latency.step)}) {{ samples {{ ts p50 p90 p95 p99 }} }}"
            )
            if counts_alias(i, t) != f"h{i}":
                fields.append(_by_status(f"n{i}", ids, t.latency.step))
        if t.memory is not None:
            fields.append(
                f"m{i}: metrics({ids}, startDate: $start, endDate: $end, "
                f"measurements: [MEMORY_USAGE_GB, MEMORY_LIMIT_GB], groupBy: [DEPLOYMENT_ID], "
                f"sampleRateSeconds: {int(t.memory.sample_rate)}) "
                f"{{ measurement tags {{ deploymentId }} values {{ ts value }} }}"
            )
    if platform:
        fields.append(PLATFORM_FIELD)
    body = "\n  ".join(fields)
    declared = f"({', '.join(params)})" if params else ""
    return f"query RailguardTick{declared} {{\n  {body}\n}}\n"


def blamed_by(targets: Sequence[Target], error: RailwayGraphQLError) -> dict[str, str]:
    """The targets whose aliases an error names (``d3``, ``h3``, ``p3``... are target 3)."""
    blamed: dict[str, str] = {}
    for alias, message in error.paths.items():
        index = alias[1:]
        if alias[:1] in ALIASES and index.isdigit() and int(index) < len(targets):
            blamed.setdefault(targets[int(index)].name, message)
    return blamed
