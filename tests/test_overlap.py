"""A deploy's overlap on the stage: the deployment being replaced still answers for a while.

With the release check (``health.release``), railguard attributes each health answer to the
deployment that sent it: the replaced release's answers say nothing about the new one (never a
breach, never a verification), while the new release's own answers are judged as ever.
Without it, the same overlap blames the replaced release's errors on the new one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitor.clock import FakeClock
from monitor.model import Signal
from tests.stage import CONFIG, Stage, known_good, released, store_of, watch, worker

HEADER = "X-Railway-Deployment-Id"
# The stage's health check, with the release check (the app echoes its deployment id).
CHECKED = CONFIG.replace(
    'timeout = "1s" }}', 'timeout = "1s", release = {{ header = "' + HEADER + '" }} }}'
)
MIB = 2**20


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    stage.config_template = CHECKED
    await stage.start_servers()
    yield stage
    await stage.close()


def test_the_stage_config_has_the_release_check() -> None:
    assert f'release = {{ header = "{HEADER}" }}' in CHECKED.format(
        service="s", env="e", app="http://a", tier_extra="", grace="0s"
    )


@pytest.mark.parametrize("checked", [True, False], ids=["release-check", "no-check"])
async def test_a_good_fix_whose_overlap_has_the_bad_release_answering_errors_is_kept(
    stage: Stage, checked: bool
) -> None:
    if not checked:
        stage.config_template = CONFIG
    # v2 is broken (its health answers 500); v3 fixes it, and its deploy overlaps v2 by 8s,
    # longer than health-failing's `for` (5s).
    stage.behaviour = {"v2": {"mode": "error"}, "v3": {"overlap": 8}}
    good = await known_good(stage)
    stage.idle = True  # no traffic: the replaced release's errors reach only the probes
    stage.push("v2")
    await stage.run_for(1)
    fix = stage.push("v3")  # pushed while v2 builds: v2 serves a second, then v3 with overlap
    reasons = await watch(stage, 30)
    if not checked:  # what the release check is for: v2's errors are blamed on v3
        assert stage.applied_rollbacks() == [good]
        (record,) = await store_of(stage).rollbacks("web")
        assert (record.from_deployment, record.rule) == (fix.id, "health-failing")
        return
    assert stage.applied_rollbacks() == []
    assert stage.active_release() == "v3"
    v2 = next(d for d in stage.emu.deployments.values() if d.meta["release"] == "v2")
    overlap = f"answered by deployment {v2.id} (v2), not the active deployment {fix.id} (v3)"
    assert any(r.startswith(overlap) for r in reasons), reasons
    health = worker(stage).latest[Signal.HEALTH]
    assert (health.value, health.detail["deployment"], health.detail["release"]) == (
        1.0,
        fix.id,
        "v3",
    )
    assert await store_of(stage).rollbacks("web") == []


async def test_a_bad_release_is_rolled_back_once_its_own_answers_breach(stage: Stage) -> None:
    # v2 fails its health check; while it overlaps v1.1 for 4s, v1.1's healthy answers are
    # not counted for it (nor against it): it is judged on its own answers.
    stage.behaviour = {"v2": {"mode": "error", "overlap": 4}}
    good, bad = await released(stage)
    stage.idle = True
    reasons = await watch(stage, 25)
    assert stage.applied_rollbacks() == [good]
    assert any("(overlap: the deployment it replaced still answers)" in r for r in reasons)
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.from_deployment, record.rule, record.state) == (
        bad,
        "health-failing",
        "succeeded",
    )
    evidence = record.evidence["samples"]
    assert evidence, record.evidence
    assert {s["detail"].get("deployment") for s in evidence if s["value"] is not None} == {bad}
    live = stage.emu.deployments[bad].created_at
    assert record.decided_at - live >= 4 + 4  # the overlap, then `for` (less slack, a tick)


async def rolled_back_with_overlap(stage: Stage, overlap: float) -> tuple[str, str]:
    """v2 is bad on memory only (its health answers fine); the rollback to v1.1 overlaps v2
    by ``overlap`` seconds. Returns v1.1's and v2's ids."""
    stage.behaviour = {"v2": {"memory_bytes": 500 * MIB}, "v1.1": {"overlap": overlap}}
    # Railway too keeps the replaced deployment running (SUCCESS) through the overlap.
    stage.emu.overlap[stage.service] = overlap
    return await released(stage)


@pytest.mark.parametrize("checked", [True, False], ids=["release-check", "no-check"])
async def test_a_rollback_is_verified_only_once_the_restored_release_answers(
    stage: Stage, checked: bool
) -> None:
    if not checked:
        stage.config_template = CONFIG
    good, bad = await rolled_back_with_overlap(stage, 10)
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert (record.from_deployment, record.rule, record.state) == (bad, "memory-high", "succeeded")
    assert record.new_deployment is not None
    replacement = stage.emu.deployments[record.new_deployment]
    assert record.finished_at is not None
    verified_after = record.finished_at - replacement.updated_at
    if checked:  # only once the overlap (v2 answering healthily) is over
        assert 10 <= verified_after <= 14, verified_after
        health = worker(stage).latest[Signal.HEALTH]
        assert health.detail["deployment"] == replacement.id
    else:  # v2's healthy answers pass for the restored release's
        assert verified_after < 5, verified_after


async def test_a_restored_release_never_seen_answering_fails_verification_saying_so(
    stage: Stage,
) -> None:
    good, bad = await rolled_back_with_overlap(stage, 60)  # longer than rollback_timeout (30s)
    await stage.run_for(50)
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert record.state == "failed"
    assert record.new_deployment is not None
    assert f"the replacement {record.new_deployment} (v1.1) was not seen answering" in (
        record.error or ""
    )
    assert f"answered by deployment {bad} (v2)" in (record.error or "")
