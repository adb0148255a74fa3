"""Which source feeds which signal: the registry keyed by a signal table's ``source`` key.

Adding a source is one file in this package and one line in :data:`SOURCES`. One source
instance serves every signal of its type for a service, so one scrape feeds error rate and
memory alike, and one view of the Railway poll feeds every Railway signal (the deployment
signal included, which needs no table).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from monitor.clock import Clock
from monitor.model import Signal
from monitor.plan import ServicePlan
from monitor.sources.base import Source
from monitor.sources.exposition import ExpositionSource
from monitor.sources.health import HealthSource
from monitor.sources.promql import PromQLSource
from monitor.sources.railway import RailwaySource

if TYPE_CHECKING:  # the poller brings the Railway client and graphql-core: only when used
    from monitor.railway.poller import RailwayPoller


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What a source factory may use."""

    service: ServicePlan
    session: aiohttp.ClientSession
    clock: Clock
    poller: RailwayPoller | None


def _exposition(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    return ExpositionSource(
        ctx.session,
        ctx.clock,
        error_rate=configs.get(Signal.ERROR_RATE),
        memory=configs.get(Signal.MEMORY),
    )


def _railway(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    assert ctx.poller is not None, "the plan guarantees Railway ids, so a poller exists"
    # Two polls may fail before the numbers count as stale: one slow poll is not blindness.
    max_age = 2 * ctx.poller.interval + ctx.service.interval
    return RailwaySource(ctx.poller, ctx.service.name, frozenset(configs), max_age=max_age)


def _promql(configs: Mapping[Signal, Any], ctx: SourceContext) -> Source:
    return PromQLSource(
        ctx.session,
        ctx.clock,
        error_rate=configs.get(Signal.ERROR_RATE),
        memory=configs.get(Signal.MEMORY),
    )


SourceFactory = Callable[[Mapping[Signal, Any], SourceContext], Source]

# The `source` key of a service's signal table -> what builds it.
SOURCES: dict[str, SourceFactory] = {
    "exposition": _exposition,
    "railway": _railway,
    "promql": _promql,
}

# Signals configured by a table on the service (``error_rate = { source = ... }``).
# Signal.DEPLOYMENT has none: it always comes from the "railway" source.
TABLE_SIGNALS = (Signal.ERROR_RATE, Signal.MEMORY)


def build_sources(ctx: SourceContext) -> list[tuple[str, Source]]:
    """The sources that feed the service's signals."""
    service = ctx.service
    sources: list[tuple[str, Source]] = []
    if service.health is not None:
        sources.append(("health", HealthSource(service.health, ctx.session, ctx.clock)))
    by_type: dict[str, dict[Signal, Any]] = defaultdict(dict)
    for signal in TABLE_SIGNALS:
        config = getattr(service.config, signal.value)
        if config is not None:
            by_type[config.source][signal] = config
    if service.wants_deployment:  # no table: the plan keeps the rule only with Railway ids
        by_type["railway"][Signal.DEPLOYMENT] = None
    for kind, configs in by_type.items():
        sources.append((kind, SOURCES[kind](configs, ctx)))
    return sources
