"""The exposition source's settings: where to scrape, which series, and sizes in units.

Apart from the source so that the readers, which only read them, and the config file's models
can import them without importing the source (and the source its readers).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from monitor.configtypes import HttpUrl, Strict, Timeout, expand_in

MIB = 1024 * 1024
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
# Lowercase unit -> bytes: "", b; kb, mb, gb, tb (powers of 1000); kib/ki, mib/mi, ... (1024).
_SIZE_UNITS: dict[str, int] = {"": 1, "b": 1} | {
    prefix + suffix: base**power
    for power, prefix in enumerate("kmgt", start=1)
    for base, suffixes in ((1000, ("b",)), (1024, ("ib", "i")))
    for suffix in suffixes
}


def parse_size(value: Any) -> int:
    """``"512MiB"``, ``"1GiB"``, ``"500MB"``, ``"4096"`` or ``4096`` -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    unit = None if match is None else _SIZE_UNITS.get(match.group(2).lower())
    if match is None or unit is None:
        raise ValueError(
            f"not a size: {value!r} (use a whole number of bytes, or a number and a unit: "
            'B, kB, MB, GB, TB, KiB, MiB, GiB, TiB, as in "512MiB")'
        )
    return round(float(match.group(1)) * unit)


def _size(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        value = expand_in(value, info)
    return parse_size(value)


def _metric_name(value: str) -> str:
    if not _METRIC_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a Prometheus metric name")
    return value


Size = Annotated[int, BeforeValidator(_size)]
"""A size in bytes; ``"512MiB"`` in the file."""

MetricName = Annotated[str, AfterValidator(_metric_name)]


class Scrape(Strict):
    """What both exposition signals share: where to scrape and how patiently."""

    source: Literal["exposition"]
    url: HttpUrl
    timeout: Timeout = 5.0
    max_body_bytes: int = Field(default=4 * MIB, gt=0)
    labels: dict[str, str] = {}
    """Only series carrying these label values count (``{ handler = "/api" }``)."""


class ExpositionErrorRate(Scrape):
    """``error_rate = { source = "exposition", url = "...", min_requests = 20 }``."""

    metric: MetricName = "http_requests_total"
    """A requests counter; ``http_requests`` and ``http_requests_total`` mean the same."""
    status_label: str = "code"
    """5xx = a value of this label starting with "5" ("500", "503", "5xx")."""
    min_requests: int = Field(default=10, ge=1)


class ExpositionLatency(Scrape):
    """``latency = { source = "exposition", url = "..." }``: a request-duration histogram.

    Its ``_bucket`` series (seconds); each quantile a rule asks for is interpolated in the
    buckets' growth between two scrapes.
    """

    metric: MetricName = "http_request_duration_seconds"
    """The histogram's name, without ``_bucket``."""
    min_requests: int = Field(default=10, ge=1)
    """Fewer observations than this between two scrapes make the quantile UNKNOWN."""


class ExpositionMemory(Scrape):
    """``memory = { source = "exposition", url = "...", limit = "512MiB" }``.

    The limit is fixed (``limit``) or read from a gauge (``limit_metric``), which ``labels``
    do not filter: they select the usage series only.
    """

    metric: MetricName = "process_resident_memory_bytes"
    """A gauge; the matching series are summed."""
    limit: Size | None = None
    limit_metric: MetricName | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ExpositionMemory:
        if (self.limit is None) == (self.limit_metric is None):
            raise ValueError(
                'set exactly one of limit (such as "512MiB") and limit_metric '
                '(such as "app_memory_limit_bytes")'
            )
        if self.limit == 0:
            raise ValueError("limit must be more than 0 bytes")
        return self
