"""A real Prometheus for tests, serving backfilled data: no scraping, no waiting for time.

``promtool tsdb create-blocks-from openmetrics`` turns a generated OpenMetrics file with
timestamped samples into TSDB blocks, then Prometheus starts on them (with no scrape targets)
on a free port. Tests query instant values at the fixed times in :class:`Prometheus`, passing
``time=``, so every answer is reproducible.

Use it by importing the fixture into a test module::

    from tests.prometheus_fixture import Prometheus, prometheus_server  # noqa: F401

and asking for ``prometheus``. Without the ``prometheus`` and ``promtool`` binaries (Debian's
``prometheus`` package, listed in .ci/apt-packages) the tests are skipped, except in CI
(``CI=true``), where they fail.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import servers

START = 1_700_000_000
"""The first sample's time (FakeClock's default start). Retention counts back from the newest
data, not from now, so fixed old timestamps stay queryable."""
STEP = 15
"""Seconds between samples, a common scrape interval."""
PERIOD = 600
"""Each phase lasts 10 minutes: failing (10% 5xx), then healthy (0%), then idle."""
MEMORY_BYTES = 256 * 1024 * 1024
MEMORY_LIMIT_BYTES = 512 * 1024 * 1024
LATENCY_BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")
LATENCY_GROWTH = ((2, 3, 3, 1, 0, 1, 0), (6, 3, 1, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0, 0))
"""Per phase (failing, healthy, idle), what each step adds to each latency bucket (not
cumulative): the failing phase is slower (its 10 requests reach 2.5s), the healthy one fast."""
"""Bounds a broken start only; Prometheus is ready in well under a second."""


@dataclass(frozen=True)
class Prometheus:
    """A running Prometheus and the times at which its data says something known."""

    url: str
    start: float = START

    @property
    def failing(self) -> float:
        """Mid-way through the phase where 10% of requests are 5xx."""
        return self.start + PERIOD / 2

    @property
    def healthy(self) -> float:
        """Mid-way through the phase with traffic and no 5xx."""
        return self.start + PERIOD * 1.5

    @property
    def idle(self) -> float:
        """Mid-way through the phase with no requests at all."""
        return self.start + PERIOD * 2.5


def openmetrics() -> str:
    """The backfill: request counters by status over three phases, two memory gauges, and a
    request-duration histogram.

    Per step, the failing phase adds 9 requests with status 200 and 1 with 500, the healthy
    phase 10 with 200, the idle phase nothing.
    """
    steps = range(3 * PERIOD // STEP + 1)
    growth = {"200": (9, 10, 0), "500": (1, 0, 0)}
    lines = ["# TYPE http_requests counter", "# HELP http_requests Requests served."]
    for code, per_phase in growth.items():
        count = 0
        for i in steps:
            lines.append(
                f'http_requests_total{{job="web",code="{code}"}} {count} {START + i * STEP}'
            )
            count += per_phase[min(i * STEP // PERIOD, 2)]
    for name, value in (
        ("app_memory_bytes", MEMORY_BYTES),
        ("app_memory_limit_bytes", MEMORY_LIMIT_BYTES),
    ):
        lines += [f"# TYPE {name} gauge", f"# HELP {name} Memory."]
        lines += [f'{name}{{job="web"}} {value} {START + i * STEP}' for i in steps]
    lines += latency_histogram(steps)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def latency_histogram(steps: range) -> list[str]:
    """``http_request_duration_seconds`` by phase (:data:`LATENCY_GROWTH`), with ``_count``."""
    name = "http_request_duration_seconds"
    lines = [f"# TYPE {name} histogram", f"# HELP {name} Request latency."]
    counts = [0] * len(LATENCY_BOUNDS)
    for i in steps:
        at = START + i * STEP
        cumulative = list(itertools.accumulate(counts))
        for le, n in zip(LATENCY_BOUNDS, cumulative, strict=True):
            lines.append(f'{name}_bucket{{job="web",le="{le}"}} {n} {at}')
        lines.append(f'{name}_count{{job="web"}} {cumulative[-1]} {at}')
        lines.append(f'{name}_sum{{job="web"}} 0 {at}')
        growth = LATENCY_GROWTH[min(i * STEP // PERIOD, 2)]
        counts = [n + g for n, g in zip(counts, growth, strict=True)]
    return lines


@contextmanager
def backfilled(root: Path, text: str) -> Iterator[str]:
    """A Prometheus serving the OpenMetrics ``text`` (timestamped samples), at its URL."""
    prometheus = servers.binary(["prometheus"], "prometheus")
    promtool = servers.binary(["promtool"], "prometheus")
    source, data, config = root / "backfill.om", root / "data", root / "prometheus.yml"
    source.write_text(text)
    backfill = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if backfill.returncode != 0:
        pytest.fail(f"promtool could not backfill {source}: {backfill.stderr.strip()}")
    config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    process, url = servers.start(
        "prometheus",
        lambda listen: [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={listen}",
            "--storage.tsdb.retention.time=100y",
        ],
        root / "prometheus.log",
    )
    try:
        yield url
    finally:
        servers.stop(process)


@pytest.fixture(scope="session", name="prometheus")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus serving :func:`openmetrics`, started once per test session."""
    with backfilled(tmp_path_factory.mktemp("prometheus"), openmetrics()) as url:
        yield Prometheus(url)
