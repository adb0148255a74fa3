"""The level-triggered controller on the Railway emulator, against the faults Railway produces.

Each scenario asserts what an SRE would check afterwards: how many rollback mutations Railway
applied (exactly one when one is due, none when none is due, never two), how the rollback
ended, and which holds were recorded (once per guard per episode).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import FakeClock
from tests.stage import Stage, released, store_of
from tests.stage import trail as events

BAD = {"v2": {"error_ratio": 0.5}, "v3": {"error_ratio": 0.5}, "v4": {"error_ratio": 0.5}}


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD)
    await stage.start_servers()
    yield stage
    await stage.close()


async def guards_held(stage: Stage) -> list[str]:
    return [str(e["guard"]) for e in await events(stage, "rollback_held")]


async def the_rollback(stage: Stage) -> Any:
    (record,) = [r for r in await store_of(stage).rollbacks("web") if not r.dry_run]
    return record


async def test_a_crash_looping_release_is_rolled_back_once(stage: Stage) -> None:
    stage.behaviour = {}  # the app answers fine while up: only Railway sees it dying
    good, bad = await released(stage)
    stage.emu.crash_loop(bad, period=1.5, max_restarts=3)  # then CRASHED, still active
    await stage.run_for(25)
    assert stage.applied_rollbacks() == [good]
    record = await the_rollback(stage)
    assert (record.rule, record.state) == ("deployment-crashed", "succeeded")
    assert record.from_deployment == bad
    assert record.evidence["from_status"] == "CRASHED"


async def test_a_release_that_goes_bad_inside_grace_is_rolled_back_when_grace_ends(
    stage: Stage,
) -> None:
    stage.grace = "9s"  # longer than the rule's 5s: it fires inside grace
    good, bad = await released(stage)
    await stage.run_for(25)
    assert stage.applied_rollbacks() == [good]
    assert await guards_held(stage) == ["grace"]  # once, not once per evaluation
    assert stage.daemon is not None
    held = stage.daemon.metrics.registry.get_sample_value(
        "railguard_rollback_held_total",
        {"service": "web", "tier": "production", "guard": "grace"},
    )
    assert held == 1
    record = await the_rollback(stage)
    live = stage.emu.deployments[bad].created_at
    assert record.decided_at - live >= 9


async def test_railway_unreachable_around_the_firing_holds_then_rolls_back(stage: Stage) -> None:
    good, _ = await released(stage)
    stage.emu.set_faults(error_ratio=1.0)  # every request answers 503 for a while
    await stage.run_for(40)  # each request is retried for ~8s before it counts as failed
    assert stage.applied_rollbacks() == []
    assert await guards_held(stage) == ["monitor_blind"]
    stage.emu.set_faults(error_ratio=0.0)
    await stage.run_for(20)
    assert stage.applied_rollbacks() == [good]
    assert (await the_rollback(stage)).state == "succeeded"


async def test_a_mutation_dropped_before_railway_applied_it_is_sent_again_once(
    stage: Stage,
) -> None:
    good, _ = await released(stage)
    stage.emu.set_faults(drop_count=1, fault_operations=["DeploymentRollback"])
    await stage.run_for(60)
    assert stage.applied_rollbacks() == [good]  # the first never arrived, the second did
    record = await the_rollback(stage)
    assert (record.state, record.attempts) == ("succeeded", 2), record.error
    assert len(stage.emu.mutation_calls("deploymentRollback")) == 1


async def test_a_mutation_whose_answer_was_lost_after_railway_applied_it_is_followed(
    stage: Stage,
) -> None:
    good, _ = await released(stage)
    stage.emu.set_faults(drop_after_count=1, fault_operations=["DeploymentRollback"])
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [good]  # never sent again
    record = await the_rollback(stage)
    assert (record.state, record.attempts) == ("succeeded", 1), record.error
    assert [r.fault for r in stage.emu.requests if r.status == 0] == ["drop-after"]


async def test_a_429_storm_ends_in_exactly_one_rollback(stage: Stage) -> None:
    good, _ = await released(stage)
    # Railway's edge answers 429 to most requests, whatever its rate-limit headers say.
    stage.emu.set_faults(error_status=429, error_ratio=0.7)
    await stage.run_for(90)
    assert stage.applied_rollbacks() == [good]
    assert 429 in {r.status for r in stage.emu.requests}
    assert (await the_rollback(stage)).state == "succeeded"


async def test_a_fix_coming_up_holds_and_when_it_is_bad_too_it_is_rolled_back(
    stage: Stage,
) -> None:
    good, _ = await released(stage)
    await stage.run_for(3)  # v2's rule is pending
    fix = stage.push("v3")  # someone ships a fix; it builds for a few seconds, and is bad too
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [good]
    assert "deployment_in_progress" in await guards_held(stage)
    record = await the_rollback(stage)
    assert (record.from_deployment, record.state) == (fix.id, "succeeded")


@pytest.mark.long_running
async def test_a_new_bad_release_within_the_cooldown_waits_for_it_and_is_no_loop(
    stage: Stage,
) -> None:
    good, _ = await released(stage)
    await stage.run_for(20)
    assert stage.applied_rollbacks() == [good]
    first = await the_rollback(stage)
    v4 = stage.deploy("v4")  # a new release, bad in its own way, 20s into the 60s cooldown
    await stage.run_for(20)
    assert stage.applied_rollbacks() == [good]
    assert await guards_held(stage) == ["cooldown"]
    await stage.run_for(50)  # the cooldown ends while v4 still fails
    store = store_of(stage)
    assert await store.frozen("web", stage.clock.time()) is None
    assert await events(stage, "escalation") == []
    second = (await store.rollbacks("web"))[0]
    assert (second.from_deployment, second.state) == (v4.id, "succeeded")
    assert second.to_deployment == first.new_deployment  # v1.1's release, as restored
    assert len(stage.applied_rollbacks()) == 2  # one per incident


async def test_unfreezing_acts_at_the_next_evaluation_if_the_rule_still_fires(
    stage: Stage,
) -> None:
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(12)
    store = store_of(stage)
    await store.freeze("web", "migration running", "manual:ops", stage.clock.time())
    stage.deploy("v2")
    await stage.run_for(20)
    assert stage.applied_rollbacks() == []
    assert await guards_held(stage) == ["frozen"]
    await store.unfreeze("web")
    await stage.run_for(15)
    assert stage.applied_rollbacks() == [good.id]


async def test_a_manual_rollback_of_a_release_polling_never_saw_records_it_bad(
    stage: Stage,
) -> None:
    stage.behaviour = {}
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    daemon = await stage.start_daemon()
    await stage.run_for(12)
    unseen = stage.deploy("v2")  # no poll has run since
    assert await store_of(stage).deployment("web", unseen.id) is None
    assert daemon.executor is not None
    import asyncio

    task = asyncio.ensure_future(
        daemon.executor.rollback("web", reason="bad deploy", actor="manual:ops", to=good.id)
    )
    while not task.done():
        await stage.run_for(1)
    assert task.result().state == "succeeded", task.result().error
    recorded = await store_of(stage).deployment("web", unseen.id)
    assert recorded is not None
    assert recorded.verdict == "bad"


async def test_railway_failing_mid_rollback_leaves_it_open_until_it_ends(stage: Stage) -> None:
    good, _ = await released(stage)
    store = store_of(stage)
    for _ in range(40):
        await stage.run_for(0.5)
        if stage.applied_rollbacks():
            break
    stage.emu.set_faults(error_ratio=1.0)  # Railway down while the replacement rolls out
    await stage.run_for(20)
    (record,) = await store.rollbacks("web")
    assert not record.finished  # the incident is open, not dropped
    stage.emu.set_faults(error_ratio=0.0)
    await stage.run_for(30)
    record = await the_rollback(stage)
    assert record.state == "succeeded", record.error
    assert stage.applied_rollbacks() == [good]


async def test_a_dry_run_records_one_rollback_per_incident(stage: Stage) -> None:
    stage.tier_extra = "dry_run = true"
    good, bad = await released(stage)
    await stage.run_for(40)  # the rule keeps firing the whole time
    records = await store_of(stage).rollbacks("web")
    assert [(r.state, r.from_deployment, r.to_deployment) for r in records] == [
        ("dry_run", bad, good)
    ]
    assert stage.applied_rollbacks() == []
    assert len(await events(stage, "rollback_dry_run")) == 1


async def test_a_deployment_is_announced_verified_once_across_restarts(
    stage: Stage, tmp_path: Path
) -> None:
    from monitor.store import open_store

    stage.behaviour = {}
    stage.deploy("v1", ago=3600)
    async with await open_store(tmp_path / "state.db") as store:
        for _ in range(2):  # railguard restarts on the same state
            await stage.start_daemon(store=store)
            await stage.run_for(12)  # longer than the 10s bake
            await stage.stop_daemon()
        verified = await store.events("web", kinds=["deployment_verified"])
        assert len(verified) == 1


async def test_the_frozen_gauge_follows_the_store_at_scrape_time(
    stage: Stage, tmp_path: Path
) -> None:
    from monitor.store import open_store

    stage.behaviour = {}
    stage.deploy("v1", ago=3600)
    async with await open_store(tmp_path / "state.db") as store:
        now = stage.clock.time()
        await store.freeze("web", "migration", "manual:ops", now, until=now + 30)  # a past run's
        daemon = await stage.start_daemon(store=store)
        labels = {"service": "web", "tier": "production"}

        def frozen() -> float | None:
            return daemon.metrics.registry.get_sample_value("railguard_frozen", labels)

        await daemon.refresh_gauges()  # what /metrics does before it renders
        assert frozen() == 1
        await stage.run_for(31)  # the freeze expires; nothing else notices
        await daemon.refresh_gauges()
        assert frozen() == 0
        await stage.stop_daemon()


async def test_a_closed_controller_decides_nothing(stage: Stage) -> None:
    await released(stage)
    assert stage.daemon is not None
    controller = stage.daemon.controller
    assert controller is not None
    await controller.aclose()  # as the shutdown does, before the ticks in flight end
    await stage.run_for(20)
    assert stage.applied_rollbacks() == []
    assert await store_of(stage).rollbacks("web") == []
