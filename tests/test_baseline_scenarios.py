"""Baseline and latency rules on the emulator: a release judged against the one it replaced.

The issue's scenarios: a release whose p95 triples rolls back, one whose p95 rises 10% does
not; 2% errors where the previous release had 0.1% rolls back under a baseline rule and not
under the fixed 5% rule; 3% where the previous also had 3% does not; a service with 20
requests an hour is never judged by the baseline test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.clock import FakeClock
from monitor.model import Signal
from monitor.status import service_document
from monitor.statuspage import render_service
from tests.stage import Stage, store_of, trail, worker

RULES = """
[[rules]]
name = "error-rate"
signal = "error_rate"
op = ">"
threshold = "5%"
for = "6s"

[[rules]]
name = "error-regression"
signal = "error_rate"
op = ">"
threshold = "1%"
baseline = {{ factor = 2, min_requests = {min_requests} }}
for = "6s"

[[rules]]
name = "latency-regression"
signal = "latency_p95"
op = ">"
baseline = {{ factor = 1.5, min_requests = 15 }}
for = "5s"
"""

CONFIG = """
rule_files = ["rules.toml"]

[railway]
poll_interval = "2s"

[tiers.production]
bake = "10s"
grace = "0s"
cooldown = "60s"
rollback_timeout = "30s"
rules = {rules}

[tiers.staging]
rules = []

[tiers.preview]
rules = []

[[services]]
name = "web"
tier = "production"
service_id = "{{service}}"
environment_id = "{{env}}"
interval = "1s"
error_rate = {{{{ source = "railway", step = "5s", min_requests = {source_min} }}}}
latency = {{{{ source = "exposition", url = "{{app}}/metrics", min_requests = 10 }}}}
"""


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    stage.traffic_per_second = 20
    yield stage
    await stage.close()


def configure(
    stage: Stage, rules: list[str], *, min_requests: int = 200, source_min: int = 20
) -> None:
    stage.config_template = CONFIG.format(rules=rules, source_min=source_min)
    (stage.tmp / "rules.toml").write_text(RULES.format(min_requests=min_requests))


def traffic(stage: Stage, rps: float, error_ratio: float) -> None:
    """What Railway's edge counts for the service from now on (the error rate's source)."""
    stage.emu.set_traffic(stage.service, stage.env, rps, error_ratio=error_ratio)


async def baked(stage: Stage) -> str:
    """v1 served for hours; v1.1 goes live and bakes to known-good under railguard's eyes
    (recording its own behaviour as it does); returns v1.1's deployment id."""
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(24)
    record = await store_of(stage).deployment("web", good.id)
    assert record is not None
    assert record.verdict == "good"
    return str(good.id)


async def test_an_error_rate_twenty_times_its_baseline_rolls_back(stage: Stage) -> None:
    configure(stage, ["error-rate", "error-regression"])
    traffic(stage, 100, 0.001)
    good = await baked(stage)
    stage.deploy("v2")
    traffic(stage, 100, 0.02)  # 2%: under the fixed 5%, twenty times v1.1's 0.1%
    await stage.run_for(30)
    assert stage.rollbacks_sent() == [good]
    (rollback,) = await store_of(stage).rollbacks("web")
    assert rollback.rule == "error-regression"
    assert "vs baseline 0.1" in rollback.reason, rollback.reason
    assert "v1.1" in rollback.reason  # whose baseline it was
    (fired,) = [e for e in await trail(stage, "rule_firing") if e["rule"] == "error-regression"]
    assert "above 2x the baseline of v1.1" in fired["reason"]


async def test_the_fixed_rule_alone_lets_two_percent_serve(stage: Stage) -> None:
    configure(stage, ["error-rate"])
    traffic(stage, 100, 0.001)
    await baked(stage)
    stage.deploy("v2")
    traffic(stage, 100, 0.02)
    await stage.run_for(30)
    assert stage.rollbacks_sent() == []


async def test_three_percent_like_its_baseline_is_no_regression(stage: Stage) -> None:
    configure(stage, ["error-regression"])
    traffic(stage, 100, 0.03)
    await baked(stage)
    stage.deploy("v2")
    await stage.run_for(40)
    assert stage.rollbacks_sent() == []
    states = worker(stage).states
    assert states["error-regression"].phase.value == "inactive"
    sample = worker(stage).latest[Signal.ERROR_RATE]
    assert sample.value is not None
    assert sample.value == pytest.approx(0.03, abs=0.005)


async def test_twenty_requests_an_hour_are_never_judged(stage: Stage) -> None:
    # The source takes even one request as a rate; the baseline test wants 200 a side.
    configure(stage, ["error-regression"], source_min=1)
    traffic(stage, 100, 0.0)
    await baked(stage)  # a baseline of thousands of requests
    stage.deploy("v2")
    traffic(stage, 20 / 3600, 1.0)  # every request fails, but there are hardly any
    await stage.run_for(60)
    assert stage.rollbacks_sent() == []
    assert worker(stage).states["error-regression"].phase.value == "inactive"


async def test_a_release_whose_p95_triples_rolls_back(stage: Stage) -> None:
    configure(stage, ["latency-regression"])
    stage.behaviour = {"v1.1": {"latency": 0.08}, "v2": {"latency": 0.24}}
    good = await baked(stage)
    stage.deploy("v2")
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    (rollback,) = await store_of(stage).rollbacks("web")
    assert rollback.rule == "latency-regression"
    assert rollback.reason.startswith("p95 242ms vs baseline 99.6ms (2.44x, 20 requests) above"), (
        rollback.reason
    )
    book = stage.daemon.switchboard.baselines if stage.daemon else None
    assert book is not None
    # v1.1 serves again; its baseline is v1's, which railguard never saw serve: none.
    assert book.reference("web", Signal.LATENCY_P95) is None
    recorded = [s[Signal.LATENCY_P95].requests for s in book.summaries("web").values() if s]
    assert max(recorded) >= 100  # v1.1's own record, ready for the next release


async def test_a_release_whose_p95_rises_ten_percent_serves_on(stage: Stage) -> None:
    configure(stage, ["latency-regression"])
    stage.behaviour = {"v1.1": {"latency": 0.08}, "v2": {"latency": 0.088}}
    await baked(stage)
    stage.deploy("v2")
    await stage.run_for(30)
    assert stage.rollbacks_sent() == []
    assert worker(stage).states["latency-regression"].phase.value == "inactive"


async def test_status_says_the_comparison_while_it_fires(stage: Stage) -> None:
    configure(stage, ["error-regression"])
    traffic(stage, 100, 0.001)
    await baked(stage)
    stage.deploy("v2")
    traffic(stage, 100, 0.02)
    daemon = stage.daemon
    assert daemon is not None
    for _ in range(40):  # until the rule is firing, before the rollback restores v1.1
        await stage.run_for(0.5)
        if worker(stage).states["error-regression"].phase.value == "firing":
            break
    document = await service_document(daemon, worker(stage))
    service = document["service"]
    rule = service["rules"]["error-regression"]
    assert rule["baseline_rule"] is True
    assert rule["baseline"]["release"] == "v1.1"
    assert rule["limit"] == pytest.approx(max(0.01, 2 * rule["baseline"]["value"]))
    assert "error rate 2% vs baseline 0.1" in rule["compared"]
    page = render_service(document)
    assert "above 2x the baseline of v1.1" in page
