"""A service's signal tables (error_rate, memory, latency) and the source models each takes.

Apart from the config models (settings.py) so that the config file's messages
(configfile.py) can name the sources a table takes without importing the models.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field

from monitor.sources.exposition_config import (
    ExpositionErrorRate,
    ExpositionLatency,
    ExpositionMemory,
)
from monitor.sources.probe_latency import HealthLatency
from monitor.sources.promql import PromQLErrorRate, PromQLLatency, PromQLMemory
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwayMemory

# A signal's source is chosen by its `source` key; each type is its own strict model.
ErrorRateSource = Annotated[
    ExpositionErrorRate | RailwayErrorRate | PromQLErrorRate, Field(discriminator="source")
]
MemorySource = Annotated[
    ExpositionMemory | RailwayMemory | PromQLMemory, Field(discriminator="source")
]
# One table for every latency quantile: the rules say which quantiles (latency_p95, ...).
LatencySource = Annotated[
    ExpositionLatency | RailwayLatency | PromQLLatency | HealthLatency,
    Field(discriminator="source"),
]
SOURCE_TYPES = frozenset({"exposition", "railway", "promql", "health"})
SIGNAL_TABLES = ("error_rate", "memory", "latency")
"""The service's keys that choose a signal's source."""


def _tags(union: Any) -> tuple[str, ...]:
    """The ``source`` values a discriminated union of source models takes."""
    members = get_args(get_args(union)[0]) or (get_args(union)[0],)
    return tuple(sorted(get_args(m.model_fields["source"].annotation)[0] for m in members))


TABLE_SOURCES = {
    "error_rate": _tags(ErrorRateSource),
    "memory": _tags(MemorySource),
    "latency": _tags(LatencySource),
}
