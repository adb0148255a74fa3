"""Serverless services on the stage: asleep they are never probed, judged or rolled back; their
cold start after a wake is UNKNOWN; a release that is bad once awake is still rolled back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.clock import FakeClock
from monitor.model import Phase, Signal
from monitor.sandbox.sample_app import STATE_KEY
from tests.helpers import until
from tests.stage import CONFIG, Stage, known_good, store_of, trail, watch, worker

# The app answers 502 this long after the request that woke it: longer than the health rule's
# `for` (5s), so only the cold-start allowance keeps a healthy release from being rolled back.
APP_COLD_START = 8.0
COLD_START = 10.0  # railguard's: failing probes this long after a poll shows it awake
RAILGUARD_CONFIG = CONFIG.replace(
    'timeout = "1s" }', f'timeout = "1s", cold_start = "{COLD_START:g}s" }}'
)


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {"v2": {"mode": "error"}})
    stage.config_template = RAILGUARD_CONFIG
    await stage.start_servers()
    stage.app[STATE_KEY].update({"cold_start": APP_COLD_START})
    yield stage
    await stage.close()


async def fall_asleep(stage: Stage, deployment: str) -> None:
    """Railway puts ``deployment`` to sleep and railguard's next poll (a webhook's) sees it.

    Nobody calls the service from now on. The probes in flight finish first: one reaching the
    app after it fell asleep would wake it, as a request to a sleeping service does.
    """
    daemon = stage.daemon
    assert daemon is not None
    assert daemon.poller is not None
    poller = daemon.poller
    stage.idle = True
    in_flight = "railguard_probes_in_flight"
    await until(lambda: daemon.metrics.registry.get_sample_value(in_flight) == 0, "probes")
    stage.emu.sleep(deployment)
    assert poller.refresh()

    def seen_asleep() -> bool:
        active = latest.active if (latest := poller.latest("web")) is not None else None
        return active is not None and active.status == "SLEEPING"

    await until(seen_asleep, "a poll that sees the service asleep")


def never_judged(stage: Stage) -> None:
    """No rule of the service has a breach in progress (nor fired, nor made a rollback)."""
    phases = {name: state.phase for name, state in worker(stage).states.items()}
    assert set(phases.values()) == {Phase.INACTIVE}, phases
    assert stage.rollbacks_sent() == []


async def test_a_sleeping_service_is_not_probed_and_its_cold_start_is_not_a_breach(
    stage: Stage,
) -> None:
    good = await known_good(stage)
    await fall_asleep(stage, good)

    reasons = await watch(stage, 30)  # six times health-failing's `for`
    assert stage.app[STATE_KEY].asleep  # no probe and no scrape reached it: still asleep
    assert stage.emu.deployments[good].status == "SLEEPING"
    assert all(r.startswith("service is sleeping") for r in reasons[4:]), reasons
    never_judged(stage)
    assert await trail(stage, "rule_firing") == []
    # Asleep far longer than max_gap, and no rule went blind: a sleep is nothing to see, not
    # an outage of railguard's sight (a blind alert each time a service sleeps would be noise).
    assert not any(state.blind for state in worker(stage).states.values())
    assert await trail(stage, "blind") == []

    stage.idle = False  # a user calls it: the request wakes it, the app starts for 8s
    reasons = await watch(stage, 20)
    assert stage.emu.deployments[good].status == "SUCCESS"
    assert any(r.startswith("service is waking up") for r in reasons), reasons
    health = worker(stage).latest[Signal.HEALTH]
    assert (health.value, health.reason) == (1.0, "")
    never_judged(stage)
    assert await trail(stage, "rule_firing") == []
    assert await trail(stage, "blind") == []


async def test_a_bad_release_asleep_is_left_alone_and_rolled_back_once_awake(
    stage: Stage,
) -> None:
    good = await known_good(stage)
    bad = stage.deploy("v2").id  # its health fails (500)...
    await fall_asleep(stage, bad)  # ...but it sleeps before a probe reaches it

    await watch(stage, 30)
    assert stage.app[STATE_KEY].asleep
    never_judged(stage)

    stage.idle = False
    woken_at = stage.clock.time()
    await watch(stage, 30)
    assert stage.rollbacks_sent() == [good]
    assert stage.active_release() == "v1.1"
    (rollback,) = await store_of(stage).rollbacks("web")
    assert (rollback.from_deployment, rollback.state) == (bad, "succeeded")
    # Judged on what it did awake: its errors began when the app had started (its 8s cold
    # start after the waking request), and a rule needs `for` (5s, less the engine's slack and
    # a scrape interval) of them.
    assert rollback.decided_at >= woken_at + APP_COLD_START + 5 - 0.1 - 1
    (evidence_start, *_) = sorted(s["at"] for s in rollback.evidence["samples"])
    assert evidence_start >= woken_at
