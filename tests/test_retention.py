"""Railway's image retention on the stage: what railguard does when a rollback image is gone.

Railway keeps rollback images 24h to 360h by plan; the emulator models it with a retention in
hours (emulator_images). Each scenario asserts what an SRE would check: the mutations Railway
received, how the rollback (or rebuild) ended, the escalation, the deploy time recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import FakeClock
from monitor.rebuild import DEPLOY_GOAL
from monitor.store import open_store
from tests.stage import Stage, store_of
from tests.stage import trail as events

BAD = {"v2": {"error_ratio": 0.5}}
HOUR = 3600.0
BUILD = 1.0 + 3.0 + 2.0  # the stage's rollout with its BUILDING phase


def commit(release: str) -> str:
    return hashlib.sha1(release.encode()).hexdigest()  # the stage's release_meta


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD)
    await stage.start_servers()
    yield stage
    await stage.close()


async def expired(stage: Stage, **daemon: Any) -> tuple[str, str]:
    """Images are kept 24h; v1 and v1.1 were built more than a day ago, v1.1 bakes on the
    stage (v1 is known-good from Railway's history); then v2, which is bad, goes live."""
    stage.emu.set_image_retention(24)
    stage.deploy("v1", ago=30 * HOUR)
    good = stage.deploy("v1.1", ago=25 * HOUR)
    await stage.start_daemon(**daemon)
    await stage.run_for(12)
    return good.id, stage.deploy("v2").id


def rebuilds(stage: Stage) -> list[dict[str, Any]]:
    return [m.arguments for m in stage.emu.mutation_calls("serviceInstanceDeployV2")]


def metric(stage: Stage, name: str) -> float | None:
    assert stage.daemon is not None
    labels = {"service": "web", "tier": "production"}
    return stage.daemon.metrics.registry.get_sample_value(name, labels)


async def test_an_expired_image_is_skipped_for_an_older_known_good_release(
    stage: Stage,
) -> None:
    # By age alone the older image goes first; Railway also turns canRollback off for other
    # reasons, and an image newer than the one kept can be the one gone.
    older = stage.deploy("v1", ago=7200)
    newer = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(12)
    stage.emu.set_deployment(newer.id, can_rollback=False)
    stage.deploy("v2")
    await stage.run_for(20)
    assert stage.applied_rollbacks() == [older.id]  # exactly one, to the older release
    assert rebuilds(stage) == []
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.to_deployment, record.state) == (older.id, "succeeded"), record.error
    assert stage.active_release() == "v1"
    assert await events(stage, "escalation") == []


async def test_no_image_left_and_no_rebuild_escalates_once_naming_retention(
    stage: Stage,
) -> None:
    good, _ = await expired(stage)
    await stage.run_for(30)
    assert stage.emu.mutations == []  # nothing sent: no rollback, no deploy
    (escalation,) = await events(stage, "escalation")  # once for the incident
    assert escalation["kind"] == "retention_expired"
    why = str(escalation["why"])
    assert "retention ran out" in why
    assert f"v1.1 ({good})" in why
    assert f"a rebuild of commit {commit('v1.1')} would bring it back" in why
    assert "rebuild = true" in why
    assert await store_of(stage).rollbacks("web") == []
    assert await store_of(stage).frozen("web", stage.clock.time()) is None


async def test_the_rebuild_deploys_the_commit_once_follows_and_verifies_it(
    stage: Stage,
) -> None:
    stage.tier_extra = "rebuild = true"
    good, bad = await expired(stage)
    await stage.run_for(30)
    assert rebuilds(stage) == [
        {"environmentId": stage.env, "serviceId": stage.service, "commitSha": commit("v1.1")}
    ]
    assert stage.applied_rollbacks() == []
    assert stage.active_release() == "v1.1"
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.state, record.attempts) == ("succeeded", 1), record.error
    assert (record.from_deployment, record.to_deployment) == (bad, good)
    assert record.evidence["rebuild_commit"] == commit("v1.1")  # the audit says: a rebuild
    assert record.reason.startswith(f"rebuild of commit {commit('v1.1')} (v1.1: no rollback")
    rebuilt = stage.emu.deployments[record.new_deployment or ""]
    assert rebuilt.meta["release"] == "v1.1"
    assert (await store_of(stage).deployment("web", bad)).verdict == "bad"  # type: ignore[union-attr]
    # Its deploy time, created to SUCCESS on Railway's clock: the emulator's build model.
    assert metric(stage, "railguard_rebuild_duration_seconds_count") == 1
    assert metric(stage, "railguard_rebuild_duration_seconds_sum") == BUILD
    assert not metric(stage, "railguard_rollback_duration_seconds_count")  # not a rollback
    (started,) = await events(stage, "rollback_started")
    assert "rebuild of commit" in str(started["reason"])
    (ended,) = await events(stage, "rollback_succeeded")
    assert ended["why"] == "the rebuilt deployment serves healthily"
    assert await events(stage, "rebuild_slow") == []
    assert await events(stage, "escalation") == []


async def test_a_deploy_answer_lost_after_railway_applied_it_is_followed_not_resent(
    stage: Stage,
) -> None:
    stage.tier_extra = "rebuild = true"
    await expired(stage)
    stage.emu.set_faults(drop_after_count=1, fault_operations=["ServiceInstanceDeploy"])
    await stage.run_for(40)
    assert len(rebuilds(stage)) == 1  # never sent again
    assert [r.fault for r in stage.emu.requests if r.status == 0] == ["drop-after"]
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.state, record.attempts) == ("succeeded", 1), record.error
    assert stage.active_release() == "v1.1"


async def test_a_deploy_that_never_reached_railway_is_sent_again_once(stage: Stage) -> None:
    stage.tier_extra = "rebuild = true"
    await expired(stage)
    stage.emu.set_faults(drop_count=1, fault_operations=["ServiceInstanceDeploy"])
    await stage.run_for(60)
    assert len(rebuilds(stage)) == 1  # the first never arrived; the second did
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.state, record.attempts) == ("succeeded", 2), record.error


async def test_a_rebuild_under_way_at_a_restart_is_followed_not_resent(
    stage: Stage, tmp_path: Path
) -> None:
    stage.tier_extra = "rebuild = true"
    store = await open_store(tmp_path / "state.db")
    await expired(stage, store=store)
    stage.emu.rollout = (("INITIALIZING", 1.0), ("BUILDING", 20.0), ("DEPLOYING", 2.0))
    await stage.run_for(10)
    (building,) = await store.rollbacks("web")
    assert building.state in ("sent", "deploying")
    await stage.stop_daemon()
    await stage.start_daemon(store=store)
    await stage.run_for(40)
    assert len(rebuilds(stage)) == 1
    (record,) = await store.rollbacks("web")
    assert record.state == "succeeded", record.error
    await stage.stop_daemon()
    await store.close()


@pytest.mark.long_running
async def test_a_rebuild_past_the_deploy_goal_says_so_once_and_still_recovers(
    stage: Stage, tmp_path: Path
) -> None:
    stage.tier_extra = "rebuild = true"
    store = await open_store(tmp_path / "state.db")
    await expired(stage, store=store)
    building = DEPLOY_GOAL + 20
    stage.emu.rollout = (("INITIALIZING", 1.0), ("BUILDING", building), ("DEPLOYING", 4.0))
    await stage.run_for(20)  # decided and sent: the build is under way
    stage.traffic_per_second = 1  # nothing to judge while it builds: keep the test quick
    await stage.run_for(DEPLOY_GOAL, step=2.0)
    (slow,) = await events(stage, "rebuild_slow")  # said while it still builds
    assert "has been deploying for 5m" in str(slow["why"])
    assert "past the 5m deployment goal" in str(slow["why"])
    assert stage.emu.deployments[str(slow["new"])].status == "BUILDING"
    await stage.stop_daemon()  # a restart in the middle: the next run says it no more
    await stage.start_daemon(store=store)
    stage.traffic_per_second = 10
    await stage.run_for(40)
    (record,) = await store.rollbacks("web")
    assert record.state == "succeeded", record.error
    assert slow["new"] == record.new_deployment
    assert len(await events(stage, "rebuild_slow")) == 1
    assert metric(stage, "railguard_rebuild_duration_seconds_sum") == 1.0 + building + 4.0
    assert len(rebuilds(stage)) == 1
    await stage.stop_daemon()
    await store.close()


async def test_a_dry_run_records_the_rebuild_it_would_send(stage: Stage) -> None:
    stage.tier_extra = "rebuild = true\ndry_run = true"
    good, _ = await expired(stage)
    await stage.run_for(20)
    assert stage.emu.mutations == []
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.state, record.to_deployment) == ("dry_run", good)
    assert record.evidence["rebuild_commit"] == commit("v1.1")
    (would,) = await events(stage, "rollback_dry_run")
    assert would["why"] == f"would rebuild commit {commit('v1.1')}"


async def test_a_fresh_start_with_every_image_expired_still_rebuilds(stage: Stage) -> None:
    """railguard starts with no store, after Railway dropped every image it could roll back
    to: with rebuild on, Railway's history still tells it which release served well."""
    stage.tier_extra = "rebuild = true"
    stage.emu.set_image_retention(24)
    stage.deploy("v1", ago=30 * HOUR)
    stage.deploy("v1.1", ago=25 * HOUR)
    stage.deploy("v2", ago=60)  # bad, and live before railguard starts
    await stage.start_daemon()
    await stage.run_for(40)
    assert rebuilds(stage) == [
        {"environmentId": stage.env, "serviceId": stage.service, "commitSha": commit("v1.1")}
    ]
    assert stage.active_release() == "v1.1"


async def test_a_fresh_start_without_rebuild_infers_no_expired_release(stage: Stage) -> None:
    stage.emu.set_image_retention(24)
    stage.deploy("v1", ago=30 * HOUR)
    stage.deploy("v1.1", ago=25 * HOUR)
    stage.deploy("v2", ago=60)
    await stage.start_daemon()
    await stage.run_for(40)
    assert rebuilds(stage) == []
    assert stage.applied_rollbacks() == []
    assert [r.verdict for r in await store_of(stage).deployments("web")] == [
        "unverified",
        "unverified",
        "unverified",
    ]
