"""deploy/: the alerting rules and dashboard for railguard itself check out against promtool
and name only metrics railguard really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from monitor.telemetry import Metrics
from tests.servers import binary

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus-rules.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
# A metric name, not a word ending in an underscore nor part of a longer identifier.
METRIC_NAME = re.compile(r"\brailguard_[a-z0-9_]*[a-z0-9]\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
    "info": ("_info",),
}


def _promtool() -> str:
    return binary(["promtool"], "prometheus")


def _exercised() -> CollectorRegistry:
    """A registry like a running railguard's, with a few labelled series set."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.rule_state.labels("web", "production", "health-failing").set(1)
    metrics.rule_blind.labels("web", "production", "health-failing").set(0)
    metrics.signal_value.labels("web", "production", "health").set(1.0)
    metrics.probe_duration.labels("production", "http").observe(0.02)
    metrics.probes.labels("web", "production", "health", "healthy").inc()
    metrics.scheduler_lag.observe(0.003)
    metrics.railway_requests.labels("deployments", "ok").inc()
    metrics.railway_request_duration.labels("deployments").observe(0.2)
    metrics.railway_budget_remaining.set(900)
    metrics.railway_budget_reserve.set(100)
    metrics.rollbacks.labels("web", "production", "auto", "succeeded").inc()
    metrics.rollback_duration.labels("web", "production").observe(75.0)
    metrics.deployment_duration.labels("web", "production").observe(120.0)
    metrics.rollback_held.labels("web", "production", "cooldown").inc()
    metrics.frozen.labels("web", "production").set(0)
    metrics.alerts_sent.labels("slack-0").inc()
    metrics.outbox_pending.labels("slack-0").set(0)
    metrics.up.set(1)
    return registry


def _exported_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def test_promtool_accepts_the_alerting_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_metrics_exposition_without_lint() -> None:
    exposition = generate_latest(_exercised())
    result = subprocess.run(
        [_promtool(), "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = (result.stdout + result.stderr).decode().strip()
    assert result.returncode == 0, output
    assert output == "", f"promtool lint on railguard's /metrics:\n{output}"


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = _exported_names(_exercised())
    for path in (RULES, DASHBOARD):
        used = set(METRIC_NAME.findall(path.read_text()))
        assert used, f"{path.name} names no railguard_ metric"
        unknown = sorted(used - exported)
        assert not unknown, f"{path.name} uses metrics railguard does not export: {unknown}"


def test_dashboard_is_valid_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] == 39
    assert any(i["name"] == "DS_PROMETHEUS" for i in dashboard["__inputs"])
    panels = _panels(dashboard["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["expr"] for target in panel["targets"]), panel["title"]
