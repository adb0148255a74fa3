"""The deployment signal: Railway's own word on the active deployment, its rule and its plan."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import aiohttp
import pytest

from monitor.cli import main
from monitor.clock import FakeClock
from monitor.engine import RuleState, evaluate
from monitor.environment import load_environment
from monitor.model import Phase, Rule, Sample, Signal
from monitor.plan import NO_RAILWAY_IDS, Plan, source_type
from monitor.planning import build_plan
from monitor.railway.client import Deployment
from monitor.railway.deployment_signal import deployment_sample
from monitor.railway.poller import RailwayPoller
from monitor.rules import builtin_rules_path, dry_run, load_rule_files
from monitor.sources.railway import RailwaySource
from monitor.sources.registry import SourceContext, build_sources

Write = Callable[..., Path]


def deployment(status: str, *instances: str, id: str = "dep-1") -> Deployment:
    return Deployment(
        id=id,
        status=status,
        created_at=1000.0,
        updated_at=1000.0,
        can_rollback=True,
        service_id="svc",
        environment_id="env",
        status_updated_at=1010.0,
        instances=instances,
    )


# -- the sample --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "problem", "value", "reason"),
    [
        pytest.param(deployment("SUCCESS", "RUNNING"), None, 1.0, "", id="running"),
        pytest.param(deployment("SUCCESS"), None, 1.0, "", id="no instances reported"),
        pytest.param(
            deployment("SUCCESS", "RUNNING", "INITIALIZING"), None, 1.0, "", id="one coming up"
        ),
        pytest.param(deployment("CRASHED", "CRASHED"), None, 0.0, "", id="crashed"),
        pytest.param(deployment("CRASHED"), None, 0.0, "", id="crashed, no instances"),
        pytest.param(deployment("SUCCESS", "RESTARTING"), None, 0.0, "", id="restarting"),
        pytest.param(deployment("SUCCESS", "RUNNING", "CRASHED"), None, 0.0, "", id="one crashed"),
        pytest.param(deployment("SUCCESS", "EXITED"), None, 0.0, "", id="exited"),
        pytest.param(deployment("SLEEPING"), None, None, "is asleep (serverless)", id="sleeping"),
        pytest.param(deployment("SLEEPING", "CRASHED"), None, None, "is asleep", id="asleep wins"),
        pytest.param(None, None, None, "no active deployment", id="no active deployment"),
        pytest.param(
            deployment("REMOVED"), None, None, "neither running nor crashed", id="not live"
        ),
        pytest.param(
            deployment("CRASHED"),
            "d0.edges: expected a list",
            None,
            "d0.edges: expected a list",
            id="parse problem",
        ),
    ],
)
def test_sample(
    active: Deployment | None, problem: str | None, value: float | None, reason: str
) -> None:
    sample = deployment_sample(active, 2000.0, problem)
    assert sample.signal is Signal.DEPLOYMENT
    assert sample.at == 2000.0
    assert sample.value == value
    assert reason in sample.reason
    if value is not None:
        assert sample.reason == ""
    lo, hi = Signal.DEPLOYMENT.bounds
    assert value is None or lo <= value <= hi


def test_the_evidence_explains_itself() -> None:
    sample = deployment_sample(deployment("SUCCESS", "RUNNING", "RESTARTING", id="dep-9"), 5.0)
    assert sample.value == 0.0
    assert sample.detail == {
        "deployment": "dep-9",
        "status": "SUCCESS",
        "instances": ["RUNNING", "RESTARTING"],
        "failing_instances": 1,
        "failing_sightings": 0,
        "status_updated_at": 1010.0,
    }
    assert Sample.from_dict(sample.to_dict()) == sample  # JSON-ready, kept as evidence


# -- the default rule --------------------------------------------------------------------------

POLL = 30.0


def default_rule() -> Rule:
    spec = load_rule_files([builtin_rules_path()])["deployment-crashed"].spec
    return spec.resolve(POLL)


def feed(rule: Rule, values: list[float | None]) -> list[Phase]:
    state = RuleState()
    phases = []
    for i, value in enumerate(values):
        state, verdict = evaluate(rule, state, Sample(Signal.DEPLOYMENT, i * POLL, value))
        phases.append(verdict.phase)
    return phases


def test_the_default_rule() -> None:
    rule = default_rule()
    assert (rule.op.value, rule.threshold, rule.for_, rule.tolerance) == ("<", 1.0, 60.0, 0.5)
    assert "crash loop" in rule.description
    assert dry_run(rule, POLL) is None


def test_a_crash_loop_alternating_between_polls_fires() -> None:
    # RESTARTING, RUNNING, RESTARTING...: half the samples breach, which the tolerance allows.
    phases = feed(default_rule(), [0.0, 1.0] * 6)
    assert phases[:3] == [Phase.PENDING, Phase.PENDING, Phase.FIRING]  # for + 0 intervals
    # A 1m window at 30s polls holds 3 samples: a window ending on a RUNNING poll holds 1/3
    # breaching (< 0.5), so the engine resolves it, and the next RESTARTING poll starts it
    # again. The loop still fires every third poll for as long as it lasts.
    assert phases[3:6] == [Phase.INACTIVE, Phase.PENDING, Phase.PENDING]
    assert [i for i, p in enumerate(phases) if p is Phase.FIRING] == [2, 6, 10]


def test_a_crashed_deployment_fires_after_a_minute() -> None:
    assert feed(default_rule(), [1.0, 0.0, 0.0, 0.0]) == [
        Phase.INACTIVE,
        Phase.PENDING,
        Phase.PENDING,
        Phase.FIRING,
    ]


def test_a_single_restart_does_not_fire() -> None:
    phases = feed(default_rule(), [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert Phase.FIRING not in phases
    assert phases[-1] is Phase.INACTIVE


def test_a_sleeping_deployment_never_fires() -> None:
    phases = feed(default_rule(), [None] * 10)
    assert set(phases) == {Phase.INACTIVE}


def test_a_strict_window_would_miss_the_crash_loop() -> None:
    strict = replace(default_rule(), tolerance=1.0)
    assert Phase.FIRING not in feed(strict, [0.0, 1.0] * 5)


# -- the plan ----------------------------------------------------------------------------------

RAILWAY_SERVICE = """
[railway]
poll_interval = "{poll}"

[[services]]
name = "web"
tier = "{tier}"
interval = "10s"
health_url = "http://127.0.0.1:9/health"
error_rate = {{ source = "exposition", url = "http://127.0.0.1:9/metrics" }}
memory = {{ source = "exposition", url = "http://127.0.0.1:9/metrics", limit = "512MiB" }}
{ids}
"""
IDS = 'service_id = "svc"\nenvironment_id = "env"'


def plan_of(write: Write, *, tier: str = "production", ids: str = IDS, poll: str = "30s") -> Plan:
    text = RAILWAY_SERVICE.format(tier=tier, ids=ids, poll=poll)
    return build_plan(write(textwrap.dedent(text)), load_environment({}), {})


@pytest.mark.parametrize("tier", ["production", "staging"])
def test_services_with_railway_ids_get_the_rule_at_the_poll_cadence(
    write: Write, tier: str
) -> None:
    plan = plan_of(write, tier=tier, poll="45s")
    (service,) = plan.services
    rule = {r.name: r for r in service.rules}["deployment-crashed"]
    assert rule.max_gap == 2 * 45.0  # the slower of interval 10s and the 45s poll
    assert rule.tolerance == 0.5
    assert source_type(service.config, Signal.DEPLOYMENT) == "railway"
    assert service.wants_deployment
    assert service.skipped == ()


def test_preview_has_no_deployment_rule(write: Write) -> None:
    (service,) = plan_of(write, tier="preview").services
    assert [r.name for r in service.rules] == ["health-failing"]
    assert not service.wants_deployment
    assert service.skipped == ()


def test_without_railway_ids_the_rule_is_skipped_not_an_error(write: Write) -> None:
    (service,) = plan_of(write, ids="").services
    assert [r.name for r in service.rules] == ["health-failing", "error-rate", "memory-high"]
    assert [(s.name, s.why) for s in service.skipped] == [("deployment-crashed", NO_RAILWAY_IDS)]
    assert source_type(service.config, Signal.DEPLOYMENT) is None
    assert not service.wants_deployment


def test_a_named_deployment_rule_is_skipped_too(write: Write) -> None:
    text = textwrap.dedent(RAILWAY_SERVICE.format(tier="custom", ids="", poll="30s"))
    text += '[tiers.custom]\nrules = ["deployment-crashed", "health-failing"]\n'
    text += '[services.rules.deployment-crashed]\nfor = "2m"\n'
    (service,) = build_plan(write(text), load_environment({}), {}).services
    assert [r.name for r in service.rules] == ["health-failing"]
    assert [s.name for s in service.skipped] == ["deployment-crashed"]


def test_check_shows_the_skipped_rule_and_why(write: Write) -> None:
    text = RAILWAY_SERVICE.format(tier="staging", ids="", poll="30s")
    out = io.StringIO()
    assert main(["check", "--config", str(write(textwrap.dedent(text)))], stdout=out) == 0
    shown = out.getvalue()
    assert f"    deployment-crashed: skipped: {NO_RAILWAY_IDS}" in shown
    assert "service_id and environment_id" in shown
    assert shown.rstrip().endswith("config OK (1 warning)")  # staging's digest: no channel


def test_check_shows_the_rule_with_railway_ids(write: Write) -> None:
    out = io.StringIO()
    path = write(textwrap.dedent(RAILWAY_SERVICE.format(tier="production", ids=IDS, poll="30s")))
    assert main(["check", "--config", str(path)], stdout=out) == 0
    shown = out.getvalue()
    assert "deployment-crashed: deployment < 1 for 1m (max_gap 1m, tolerance 0.5)" in shown
    assert "skipped" not in shown


# -- the source --------------------------------------------------------------------------------


@dataclass
class Snapshot:
    at: float
    samples: Mapping[Signal, Sample] = field(default_factory=dict)


@dataclass
class FakePoller:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    interval: float = 30.0
    last_error: str | None = None

    def latest(self, name: str) -> Snapshot | None:
        return self.snapshots.get(name)


async def test_one_railway_source_serves_the_deployment_signal(
    write: Write, clock: FakeClock
) -> None:
    (service,) = plan_of(write).services
    poller = FakePoller()
    async with aiohttp.ClientSession() as session:
        ctx = SourceContext(service, session, clock, cast(RailwayPoller, poller))
        sources = dict(build_sources(ctx))
    assert set(sources) == {"health", "exposition", "railway"}
    railway = sources["railway"]
    assert isinstance(railway, RailwaySource)
    assert railway.signals == frozenset({Signal.DEPLOYMENT})

    crashed = deployment_sample(deployment("CRASHED", "CRASHED"), 100.0)
    poller.snapshots["web"] = Snapshot(100.0, {Signal.DEPLOYMENT: crashed})
    assert await railway.collect(105.0) == [crashed]
    (stale,) = await railway.collect(100.0 + 2 * 30 + 10 + 1)  # past max_age
    assert (stale.signal, stale.value) == (Signal.DEPLOYMENT, None)
    assert "no fresh Railway data" in stale.reason


async def test_railway_tables_and_the_deployment_signal_share_one_source(
    write: Write, clock: FakeClock
) -> None:
    text = textwrap.dedent(RAILWAY_SERVICE.format(tier="production", ids=IDS, poll="30s"))
    text = text.replace('{ source = "exposition", url = "http://127.0.0.1:9/metrics" }', "")
    text = text.replace("error_rate = \n", 'error_rate = { source = "railway" }\n')
    (service,) = build_plan(write(text), load_environment({}), {}).services
    async with aiohttp.ClientSession() as session:
        ctx = SourceContext(service, session, clock, cast(RailwayPoller, FakePoller()))
        sources = build_sources(ctx)
    railway = [s for kind, s in sources if kind == "railway"]
    assert len(railway) == 1
    assert railway[0].signals == frozenset({Signal.ERROR_RATE, Signal.DEPLOYMENT})


async def test_no_railway_source_without_ids(write: Write, clock: FakeClock) -> None:
    (service,) = plan_of(write, ids="").services
    async with aiohttp.ClientSession() as session:
        sources = build_sources(SourceContext(service, session, clock, None))
    assert [kind for kind, _ in sources] == ["health", "exposition"]
