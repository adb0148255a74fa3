"""Which source feeds which signal: the registry keyed by a signal table's ``source`` key.

Adding a source is one file in this package and one line in :data:`SOURCES` (the health
probe, which every service with a health check has, is built apart: it also times itself for
``latency = { source = "health" }``). One source
instance serves every signal of its type for a service, so one scrape feeds error rate and
memory alike, and one view of the Railway poll feeds every Railway signal (the deployment
signal included, which needs no table). For a service on Railway, the sources that send
requests to the app are wrapped so that a sleeping (serverless) service is not woken, and a
health check with a release check counts only the active deployment's answers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from monitor.clock import Clock
from monitor.model import LATENCY_SIGNALS, Signal
from monitor.plan import ServicePlan, has_railway_ids
from monitor.sources.base import Source
from monitor.sources.exposition import ExpositionSource
from monitor.sources.health import HealthSource
from monitor.sources.promql import PromQLSource
from monitor.sources.railway import RailwaySource
from monitor.sources.release import ReleaseAware
from monitor.sources.sleep import SleepAware

if TYPE_CHECKING:  # the poller brings the Railway client and graphql-core: only when used
    from monitor.railway.poller import RailwayPoller


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source factory may use."""

    service: ServicePlan
    session: aiohttp.ClientSession
    clock: Clock
    poller: RailwayPoller | None


def _latency(configs: Mapping[Signal, Any]) -> tuple[Any, tuple[Signal, ...]]:
    """The latency table (shared by every quantile) and the quantiles asked of it."""
    quantiles = tuple(s for s in LATENCY_SIGNALS if s in configs)
    return (configs[quantiles[0]] if quantiles else None), quantiles


def _exposition(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    latency, quantiles = _latency(configs)
    return ExpositionSource(
        ctx.session,
        ctx.clock,
        error_rate=configs.get(Signal.ERROR_RATE),
        memory=configs.get(Signal.MEMORY),
        latency=latency,
        quantiles=quantiles,
    )


def _railway(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    assert ctx.poller is not None, "the plan guarantees Railway ids, so a poller exists"
    # Two polls may fail before the numbers count as stale: one slow poll is not blindness.
    max_age = 2 * ctx.poller.interval + ctx.service.interval
    return RailwaySource(ctx.poller, ctx.service.name, frozenset(configs), max_age=max_age)


def _promql(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    latency, quantiles = _latency(configs)
    return PromQLSource(
        ctx.session,
        ctx.clock,
        error_rate=configs.get(Signal.ERROR_RATE),
        memory=configs.get(Signal.MEMORY),
        latency=latency,
        quantiles=quantiles,
    )


SourceFactory = Callable[[Mapping[Signal, Any], SourceContext], Source]

# The `source` key of a service's signal table -> what builds it.
SOURCES: dict[str, SourceFactory] = {
    "exposition": _exposition,
    "railway": _railway,
    "promql": _promql,
}

# Signals configured by a table on the service (``error_rate = { source = ... }``; the
# ``latency`` table serves every quantile the rules ask for: ServicePlan.latency_signals).
# Signal.DEPLOYMENT has none: it always comes from the "railway" source.
TABLE_SIGNALS = (Signal.ERROR_RATE, Signal.MEMORY)


def table_signals(service: ServicePlan) -> dict[Signal, Any]:
    """Each table-configured signal the service samples, with its table."""
    configs: dict[Signal, Any] = {}
    for signal in (*TABLE_SIGNALS, *service.latency_signals):
        config = getattr(service.config, str(signal.table))
        if config is not None:
            configs[signal] = config
    return configs


# Sources that send requests to the app itself: while Railway has the service asleep they are
# not asked, and its cold start is forgiven (sources/sleep.py).
APP_FACING = frozenset({"health", "exposition"})


def _railway_aware(name: str, source: Source, ctx: SourceContext) -> Source:
    """``source``, counting only the active deployment's health answers (with a release
    check) and leaving a sleeping service alone (if it sends requests to the app). Both
    wrappers tell the health probe's response times which probes no longer count."""
    assert ctx.poller is not None
    health = ctx.service.health
    times = source.times if isinstance(source, HealthSource) else None
    if name == "health" and health is not None and health.release is not None:
        source = ReleaseAware(source, ctx.poller, ctx.service.name, times=times)
    if name not in APP_FACING:
        return source
    return SleepAware(
        source,
        ctx.poller,
        ctx.service.name,
        cold_start=health.cold_start if health is not None else 0.0,
        # As old as the Railway source trusts a poll: a stale SLEEPING does not stop probes.
        max_age=2 * ctx.poller.interval + ctx.service.interval,
        times=times,
    )


def build_sources(ctx: SourceContext) -> list[tuple[str, Source]]:
    """The sources that feed the service's signals."""
    sources = _sources(ctx)
    if ctx.poller is None or not has_railway_ids(ctx.service.config):
        return sources
    return [(n, _railway_aware(n, s, ctx)) for n, s in sources]


def _sources(ctx: SourceContext) -> list[tuple[str, Source]]:
    service = ctx.service
    sources: list[tuple[str, Source]] = []
    by_type: dict[str, dict[Signal, Any]] = defaultdict(dict)
    for signal, config in table_signals(service).items():
        by_type[config.source][signal] = config
    # Latency from the health probe's response times: the health source measures it.
    latency, quantiles = _latency(by_type.pop("health", {}))
    if service.health is not None:
        health = HealthSource(
            service.health, ctx.session, ctx.clock, latency=latency, quantiles=quantiles
        )
        sources.append(("health", health))
    else:
        assert latency is None, "the config refuses latency from health without a health check"
    if service.wants_deployment:  # no table: the plan keeps the rule only with Railway ids
        by_type["railway"][Signal.DEPLOYMENT] = None
    for kind, configs in by_type.items():
        sources.append((kind, SOURCES[kind](configs, ctx)))
    return sources
