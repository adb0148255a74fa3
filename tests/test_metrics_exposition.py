"""/metrics as users see it: the same families, types, help and labels as prometheus_client's
metrics gave before :mod:`monitor.series`, the same text as ``generate_latest``, rendered
in slices that give the event loop turns."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from monitor.clock import FakeClock
from monitor.series import Counter, Gauge, Histogram, Info, number, render
from monitor.telemetry import Metrics
from tests.stage import Stage, serving

# What the exposition held before railguard's metrics left prometheus_client's classes
# (captured from that code): family -> (type, help, (sample name, label names) pairs), with
# every family given one series.
BEFORE = {
    "railguard_alerts_failed": (
        "counter",
        "Notifications given up (the channel refused them for good), by channel.",
        (("railguard_alerts_failed_total", ("channel",)),),
    ),
    "railguard_alerts_queued": (
        "counter",
        "Notifications queued, by channel.",
        (("railguard_alerts_queued_total", ("channel",)),),
    ),
    "railguard_alerts_retried": (
        "counter",
        "Delivery attempts that failed and will be retried, by channel.",
        (("railguard_alerts_retried_total", ("channel",)),),
    ),
    "railguard_alerts_sent": (
        "counter",
        "Notifications delivered, by channel.",
        (("railguard_alerts_sent_total", ("channel",)),),
    ),
    "railguard_alerts_suppressed": (
        "counter",
        "Events not sent at once, by tier and why (off, digest, held, duplicate).",
        (("railguard_alerts_suppressed_total", ("reason", "tier")),),
    ),
    "railguard_build_info": (
        "gauge",
        "railguard's version.",
        (("railguard_build_info", ("version",)),),
    ),
    "railguard_deployment_duration_seconds": (
        "histogram",
        "Deployment time: created to SUCCESS (target under 5 minutes).",
        (
            ("railguard_deployment_duration_seconds_bucket", ("le", "service", "tier")),
            ("railguard_deployment_duration_seconds_count", ("service", "tier")),
            ("railguard_deployment_duration_seconds_sum", ("service", "tier")),
        ),
    ),
    "railguard_frozen": (
        "gauge",
        "1 while automatic rollback is frozen.",
        (("railguard_frozen", ("service", "tier")),),
    ),
    "railguard_known_good_releases": (
        "gauge",
        "Known-good releases railguard could roll back to.",
        (("railguard_known_good_releases", ("service", "tier")),),
    ),
    "railguard_leader": (
        "gauge",
        "1 while this replica leads (acts), 0 on a standby.",
        (("railguard_leader", ()),),
    ),
    "railguard_leader_takeovers": (
        "counter",
        "Times this replica became the leader.",
        (("railguard_leader_takeovers_total", ()),),
    ),
    "railguard_lease_epoch": (
        "gauge",
        "The lease epoch this replica leads under (0: none).",
        (("railguard_lease_epoch", ()),),
    ),
    "railguard_lease_look_failures": (
        "counter",
        "Looks at the lease that PostgreSQL did not answer.",
        (("railguard_lease_look_failures_total", ()),),
    ),
    "railguard_not_leader": (
        "counter",
        "Writes the store refused because this replica no longer held the lease.",
        (("railguard_not_leader_total", ("task",)),),
    ),
    "railguard_outbox_pending": (
        "gauge",
        "Notifications waiting in the outbox, by channel.",
        (("railguard_outbox_pending", ("channel",)),),
    ),
    "railguard_probe_duration_seconds": (
        "histogram",
        "Time taken by a source to take its samples.",
        (
            ("railguard_probe_duration_seconds_bucket", ("le", "source", "tier")),
            ("railguard_probe_duration_seconds_count", ("source", "tier")),
            ("railguard_probe_duration_seconds_sum", ("source", "tier")),
        ),
    ),
    "railguard_probes": (
        "counter",
        "Samples taken, by outcome (healthy, failing, breaching, ok, unknown).",
        (("railguard_probes_total", ("outcome", "service", "signal", "tier")),),
    ),
    "railguard_probes_in_flight": (
        "gauge",
        "Probes running right now.",
        (("railguard_probes_in_flight", ()),),
    ),
    "railguard_railway_budget_remaining": (
        "gauge",
        "Requests left in the hourly budget (railguard's own "
        "count, corrected by Railway's X-RateLimit-Remaining).",
        (("railguard_railway_budget_remaining", ()),),
    ),
    "railguard_railway_budget_reserve": (
        "gauge",
        "Requests of the hourly budget kept for rollback and verification.",
        (("railguard_railway_budget_reserve", ()),),
    ),
    "railguard_railway_budget_waits": (
        "counter",
        "Times a request waited for budget, by priority (routine, critical).",
        (("railguard_railway_budget_waits_total", ("priority",)),),
    ),
    "railguard_railway_polling_slowed": (
        "gauge",
        "1 while routine polling waits for budget instead of running on schedule.",
        (("railguard_railway_polling_slowed", ()),),
    ),
    "railguard_railway_request_duration_seconds": (
        "histogram",
        "Time taken by one request to Railway's API (each attempt).",
        (
            ("railguard_railway_request_duration_seconds_bucket", ("le", "operation")),
            ("railguard_railway_request_duration_seconds_count", ("operation",)),
            ("railguard_railway_request_duration_seconds_sum", ("operation",)),
        ),
    ),
    "railguard_railway_requests": (
        "counter",
        "Requests to Railway's API by operation and outcome (ok, "
        "graphql_error, auth_error, rate_limited, server_error, "
        "network_error).",
        (("railguard_railway_requests_total", ("operation", "outcome")),),
    ),
    "railguard_rebuild_duration_seconds": (
        "histogram",
        "Deploy time of a rebuild (no rollback image was "
        "left): its deployment created to SUCCESS (goal under "
        "5 minutes).",
        (
            ("railguard_rebuild_duration_seconds_bucket", ("le", "service", "tier")),
            ("railguard_rebuild_duration_seconds_count", ("service", "tier")),
            ("railguard_rebuild_duration_seconds_sum", ("service", "tier")),
        ),
    ),
    "railguard_rollback_decision_seconds": (
        "histogram",
        "From a rule firing to the rollback mutation being sent, less Railway's latency.",
        (
            ("railguard_rollback_decision_seconds_bucket", ("le",)),
            ("railguard_rollback_decision_seconds_count", ()),
            ("railguard_rollback_decision_seconds_sum", ()),
        ),
    ),
    "railguard_rollback_duration_seconds": (
        "histogram",
        "Rollback time: decision to the replacement serving "
        "healthily (target under 2m); rebuilds are in "
        "railguard_rebuild_duration_seconds.",
        (
            ("railguard_rollback_duration_seconds_bucket", ("le", "service", "tier")),
            ("railguard_rollback_duration_seconds_count", ("service", "tier")),
            ("railguard_rollback_duration_seconds_sum", ("service", "tier")),
        ),
    ),
    "railguard_rollback_held": (
        "counter",
        "Automatic rollbacks a guard held back, by guard.",
        (("railguard_rollback_held_total", ("guard", "service", "tier")),),
    ),
    "railguard_rollbacks": (
        "counter",
        "Rollbacks by trigger (auto, manual) and outcome (succeeded, failed, dry_run, abandoned).",
        (("railguard_rollbacks_total", ("outcome", "service", "tier", "trigger")),),
    ),
    "railguard_rule_blind": (
        "gauge",
        "1 while a rule has had no known sample for longer than its max_gap.",
        (("railguard_rule_blind", ("rule", "service", "tier")),),
    ),
    "railguard_rule_state": (
        "gauge",
        "Each rule's state: 0 inactive, 1 pending, 2 firing.",
        (("railguard_rule_state", ("rule", "service", "tier")),),
    ),
    "railguard_rule_transitions": (
        "counter",
        "Rule transitions (pending, firing, resolved, reset, blind, sight_restored).",
        (("railguard_rule_transitions_total", ("rule", "service", "tier", "transition")),),
    ),
    "railguard_scheduler_lag_seconds": (
        "histogram",
        "How late each tick started compared with its schedule.",
        (
            ("railguard_scheduler_lag_seconds_bucket", ("le",)),
            ("railguard_scheduler_lag_seconds_count", ()),
            ("railguard_scheduler_lag_seconds_sum", ()),
        ),
    ),
    "railguard_services": (
        "gauge",
        "Services being guarded, by tier.",
        (("railguard_services", ("tier",)),),
    ),
    "railguard_signal_value": (
        "gauge",
        "Latest value of each signal (NaN while UNKNOWN).",
        (("railguard_signal_value", ("service", "signal", "tier")),),
    ),
    "railguard_source_unknown": (
        "counter",
        "Samples a source could not take (UNKNOWN), by source.",
        (("railguard_source_unknown_total", ("service", "source", "tier")),),
    ),
    "railguard_task_restarts": (
        "counter",
        "Long-running loops restarted by the supervisor after an error or an exit.",
        (("railguard_task_restarts_total", ("task",)),),
    ),
    "railguard_tick_errors": (
        "counter",
        "Ticks that failed with an unexpected error, by exception type.",
        (("railguard_tick_errors_total", ("error", "service", "tier")),),
    ),
    "railguard_ticks_skipped": (
        "counter",
        "Ticks skipped because the previous one overran the interval.",
        (("railguard_ticks_skipped_total", ("service", "tier")),),
    ),
    "railguard_up": (
        "gauge",
        "1 while the scheduler runs, 0 while shutting down.",
        (("railguard_up", ()),),
    ),
}

DAEMON = {
    "railguard_alerts_failed": (),
    "railguard_alerts_queued": (),
    "railguard_alerts_retried": (),
    "railguard_alerts_sent": (),
    "railguard_alerts_suppressed": (),
    "railguard_build_info": (("railguard_build_info", ("version",)),),
    "railguard_deployment_duration_seconds": (
        ("railguard_deployment_duration_seconds_bucket", ("le", "service", "tier")),
        ("railguard_deployment_duration_seconds_count", ("service", "tier")),
        ("railguard_deployment_duration_seconds_sum", ("service", "tier")),
    ),
    "railguard_frozen": (("railguard_frozen", ("service", "tier")),),
    "railguard_known_good_releases": (("railguard_known_good_releases", ("service", "tier")),),
    "railguard_leader": (("railguard_leader", ()),),
    "railguard_leader_takeovers": (("railguard_leader_takeovers_total", ()),),
    "railguard_lease_epoch": (("railguard_lease_epoch", ()),),
    "railguard_lease_look_failures": (("railguard_lease_look_failures_total", ()),),
    "railguard_not_leader": (),
    "railguard_outbox_pending": (),
    "railguard_probe_duration_seconds": (
        ("railguard_probe_duration_seconds_bucket", ("le", "source", "tier")),
        ("railguard_probe_duration_seconds_count", ("source", "tier")),
        ("railguard_probe_duration_seconds_sum", ("source", "tier")),
    ),
    "railguard_probes": (("railguard_probes_total", ("outcome", "service", "signal", "tier")),),
    "railguard_probes_in_flight": (("railguard_probes_in_flight", ()),),
    "railguard_railway_budget_remaining": (("railguard_railway_budget_remaining", ()),),
    "railguard_railway_budget_reserve": (("railguard_railway_budget_reserve", ()),),
    "railguard_railway_budget_waits": (),
    "railguard_railway_polling_slowed": (("railguard_railway_polling_slowed", ()),),
    "railguard_railway_request_duration_seconds": (
        ("railguard_railway_request_duration_seconds_bucket", ("le", "operation")),
        ("railguard_railway_request_duration_seconds_count", ("operation",)),
        ("railguard_railway_request_duration_seconds_sum", ("operation",)),
    ),
    "railguard_railway_requests": (("railguard_railway_requests_total", ("operation", "outcome")),),
    "railguard_rebuild_duration_seconds": (),
    "railguard_rollback_decision_seconds": (
        ("railguard_rollback_decision_seconds_bucket", ("le",)),
        ("railguard_rollback_decision_seconds_count", ()),
        ("railguard_rollback_decision_seconds_sum", ()),
    ),
    "railguard_rollback_duration_seconds": (),
    "railguard_rollback_held": (),
    "railguard_rollbacks": (),
    "railguard_rule_blind": (("railguard_rule_blind", ("rule", "service", "tier")),),
    "railguard_rule_state": (("railguard_rule_state", ("rule", "service", "tier")),),
    "railguard_rule_transitions": (),
    "railguard_scheduler_lag_seconds": (
        ("railguard_scheduler_lag_seconds_bucket", ("le",)),
        ("railguard_scheduler_lag_seconds_count", ()),
        ("railguard_scheduler_lag_seconds_sum", ()),
    ),
    "railguard_services": (("railguard_services", ("tier",)),),
    "railguard_signal_value": (("railguard_signal_value", ("service", "signal", "tier")),),
    "railguard_source_unknown": (
        ("railguard_source_unknown_total", ("service", "source", "tier")),
    ),
    "railguard_task_restarts": (),
    "railguard_tick_errors": (),
    "railguard_ticks_skipped": (),
    "railguard_up": (("railguard_up", ()),),
}


def families(text: str) -> dict[str, tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...]]]:
    """Each parsed family: its type, help, and the label names of each sample name."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels))) for s in family.samples}
        parsed[family.name] = (family.type, family.documentation, tuple(sorted(samples)))
    return parsed


def touch_every_family(metrics: Metrics) -> None:
    """One series in every family (label values made to need escaping)."""
    for family in metrics.families:
        values = {name: f'v "{i}" \\ \n' for i, name in enumerate(family.labelnames)}
        series: Any = family.labels(**values) if values else family.plain
        for update in ("observe", "set", "inc"):
            if hasattr(series, update):
                getattr(series, update)(1)
                break


async def test_every_family_keeps_its_name_type_help_and_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    touch_every_family(metrics)
    assert families((await metrics.exposition()).decode()) == BEFORE


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {"v2": {"error_ratio": 0.5}})
    await stage.start_servers()
    yield stage
    await stage.close()


async def test_a_small_daemon_serves_the_families_and_labels_it_served_before(
    stage: Stage,
) -> None:
    stage.deploy("v1", ago=7200)
    stage.deploy("v1.1", ago=3600)
    daemon = await stage.start_daemon()
    await stage.run_for(12)  # probes, polls, a release verified, a deployment timed
    async with (
        serving(daemon) as port,
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = await response.text()
    served = families(text)
    assert {name: samples for name, (_, _, samples) in served.items()} == DAEMON
    assert {name: kind for name, (kind, _, _) in served.items()} == {
        name: kind for name, (kind, _, _) in BEFORE.items()
    }
    assert {name: doc for name, (_, doc, _) in served.items()} == {
        name: doc for name, (_, doc, _) in BEFORE.items()
    }
    # Values too: the scrape and prometheus_client's own rendering of the registry agree.
    assert text == generate_latest(daemon.metrics.registry).decode()


async def test_the_text_is_what_generate_latest_writes() -> None:
    metrics = Metrics(CollectorRegistry())
    touch_every_family(metrics)
    metrics.signal_value.labels("web", "production", "latency_p95").set(math.nan)
    metrics.signal_value.labels("web", "production", "memory").set(123456789.0)
    metrics.scheduler_lag.observe(0.007)
    metrics.scheduler_lag.observe(math.inf)
    metrics.scheduler_lag.observe(math.nan)  # in no bucket, but in the sum
    metrics.probes_in_flight.inc(3)
    metrics.probes_in_flight.dec()
    metrics.railway_budget_remaining.set(True)  # a bool is 1
    metrics.probes.labels(service="web", tier="production", signal="health", outcome="ok").inc(2)
    text = (await metrics.exposition()).decode()
    assert text == generate_latest(metrics.registry).decode()
    registry = metrics.registry
    assert registry.get_sample_value("railguard_probes_in_flight") == 1 + 3 - 1
    assert registry.get_sample_value("railguard_railway_budget_remaining") == 1
    lag = {"le": "0.01"}
    # Observed: 1 (touch_every_family), 0.007, +Inf and NaN (counted in no bucket).
    assert registry.get_sample_value("railguard_scheduler_lag_seconds_bucket", lag) == 1
    assert registry.get_sample_value("railguard_scheduler_lag_seconds_count") == 3
    assert math.isnan(registry.get_sample_value("railguard_scheduler_lag_seconds_sum") or 0.0)
    labels = {"service": "web", "tier": "production", "signal": "health", "outcome": "ok"}
    assert registry.get_sample_value("railguard_probes_total", labels) == 2


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 2, -3.5, 0.1, 1e-9, 123456.0, 1234567.0, 1e22, -1e22, 5e-324,
     math.inf, -math.inf, math.nan, 17.25, 1000000.0],
)  # fmt: skip
def test_numbers_are_written_as_prometheus_client_writes_them(value: float) -> None:
    assert number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


async def test_a_scrape_gives_the_loop_turns_and_sees_series_made_meanwhile() -> None:
    registry = CollectorRegistry()
    counter = Counter("c_total", "C.", ["n"], registry=registry)
    for i in range(1000):
        counter.labels(str(i)).inc()
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            counter.labels(f"new-{turns}").inc()  # the dict grows while the scrape runs
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    try:
        text = (await render([counter], budget=0.0)).decode()
    finally:
        task.cancel()
    # 1,000 series in chunks of 200, the loop's turn after each: the other task ran meanwhile.
    assert turns >= 5
    assert text.count("\n") >= 2 + 1000
    assert text.startswith("# HELP c_total C.\n# TYPE c_total counter\n")


def test_misuse_is_a_clear_error() -> None:
    registry = CollectorRegistry()
    counter = Counter("jobs_total", "Jobs.", ["kind"], registry=registry)
    with pytest.raises(ValueError, match="labels are"):
        counter.labels("a", "b")
    with pytest.raises(ValueError, match="labels are"):
        counter.labels(other="a")
    with pytest.raises(ValueError, match="labels are"):
        counter.labels("a", kind="b")
    with pytest.raises(ValueError, match="call labels"):
        counter.inc()
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("a").inc(-1)
    assert counter.labels(kind="a") is counter.labels("a")
    with pytest.raises(ValueError, match="Duplicated"):
        Gauge("jobs_total", "Again.", registry=registry)  # the registry checks names
    unlabelled = Counter("runs_total", "Runs.")
    with pytest.raises(ValueError, match="labels are"):
        unlabelled.labels("x")


async def test_histogram_and_info_render_like_prometheus_client() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "H.", ["op"], registry=registry, buckets=(0.1, 1.0))
    histogram.labels("x").observe(0.1)  # a bound is inclusive
    histogram.labels("x").observe(5)
    plain = Histogram("p_seconds", "P.", registry=registry, buckets=(1.0, math.inf))
    plain.observe(0.5)
    info = Info("build", "Build.", registry=registry)
    unset = Info("later", "Not set yet.", registry=registry)
    info.info({"version": "1.2"})
    text = (await render([histogram, plain, info, unset])).decode()
    assert text == generate_latest(registry).decode()
    assert 'h_seconds_bucket{le="0.1",op="x"} 1.0' in text
    assert "p_seconds_count 1.0" in text
    assert 'build_info{version="1.2"} 1.0' in text
    assert "later_info" not in text.replace("# HELP later_info", "").replace(
        "# TYPE later_info", ""
    )


async def test_a_service_forgotten_leaves_the_exposition() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.signal_value.labels("web", "preview", "health").set(1)
    metrics.probes.labels("web", "preview", "health", "healthy").inc()
    metrics.probes.labels("api", "preview", "health", "healthy").inc()
    metrics.services.labels("preview").set(2)
    assert metrics.forget_service("web") == 2
    text = (await metrics.exposition()).decode()
    assert 'service="web"' not in text
    assert 'service="api"' in text
    assert 'railguard_services{tier="preview"} 2.0' in text
    metrics.probes.remove("api", "preview", "health", "healthy")
    metrics.probes.remove("never", "preview", "health", "healthy")  # nothing to remove
    assert 'service="api"' not in (await metrics.exposition()).decode()
