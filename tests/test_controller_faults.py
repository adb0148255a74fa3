"""The controller against the faults a review found (each asserts the contract).

Each was a real finding once: a double, missed or false rollback, a stuck incident or spam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import FakeClock
from monitor.model import Signal
from tests.stage import Stage, released, store_of
from tests.stage import trail as events

BAD = {"v2": {"error_ratio": 0.5}, "v3": {"error_ratio": 0.5}, "v4": {"error_ratio": 0.5}}


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD)
    await stage.start_servers()
    yield stage
    await stage.close()


def answer_rollback_with(stage: Stage, status: int, body: dict[str, Any], times: int = 1) -> None:
    """Let Railway APPLY the next ``times`` rollback mutations, then answer ``status``/``body``."""
    real_run = stage.emu._run
    left = {"n": times}

    def run(incoming: Any, scope: Any) -> tuple[int, Any]:
        result = real_run(incoming, scope)
        if incoming.record.operation_name == "DeploymentRollback" and left["n"] > 0:
            left["n"] -= 1
            return status, body
        return result

    stage.emu._run = run  # type: ignore[method-assign]


# -- 1. a 5xx after Railway applied the mutation ----------------------------------------------


async def test_a_502_after_railway_applied_the_rollback_is_not_sent_again(
    stage: Stage,
) -> None:
    """Railway's edge answers 502/504 after the backend applied the mutation (a gateway
    timeout): the client must not resend a mutation on its own."""
    good, _ = await released(stage)
    answer_rollback_with(stage, 502, {"errors": [{"message": "Bad Gateway"}]})
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [good]


# -- 2. a garbled answer after Railway applied the mutation -----------------------------------


async def test_a_garbled_answer_after_apply_is_reconciled_not_failed(stage: Stage) -> None:
    """README: 'a lost or garbled answer is settled against Railway's deployments'."""
    good, bad = await released(stage)
    answer_rollback_with(stage, 200, {"data": None})  # neither data nor errors
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert record.state == "succeeded", record.error
    assert await store_of(stage).frozen("web", stage.clock.time()) is None
    left = await store_of(stage).deployment("web", bad)
    assert left is not None
    assert left.verdict == "bad"


# -- 3. Railway down mid-rollback for longer than rollback_timeout ------------------------------


async def test_railway_down_after_a_refused_attempt_does_not_drop_the_rollback(
    stage: Stage,
) -> None:
    """The first attempt gets 503s (provably not applied), then all of Railway is down for
    45s (> rollback_timeout 30s). When it is back the rollback must go ahead: nothing
    reached Railway, so rollback_timeout ('counted from when Railway has the mutation')
    has not even started."""
    good, _ = await released(stage)
    stage.emu.set_faults(error_ratio=1.0, fault_operations=["DeploymentRollback"])
    store = store_of(stage)
    for _ in range(80):
        await stage.run_for(0.5)
        rows = await store.rollbacks("web")
        if rows and rows[0].attempts >= 1:
            break
    else:
        pytest.fail("no attempt was made")
    stage.emu.set_faults(error_ratio=1.0, fault_operations=None)  # all of Railway
    await stage.run_for(45)
    stage.emu.set_faults(error_ratio=0.0)
    await stage.run_for(60)
    assert stage.applied_rollbacks() == [good]
    record = (await store.rollbacks("web"))[0]
    assert record.state == "succeeded", (record.state, record.error)


# -- 4. one service's alias failing blinds every service ---------------------------------------

TWO_SERVICES = """
[[services]]
name = "other"
tier = "production"
service_id = "no-such-service"
environment_id = "{env}"
interval = "1s"
health = {{ url = "{app}/health", timeout = "1s" }}
error_rate = {{ source = "railway" }}
memory = {{ source = "railway" }}
"""


async def test_one_services_failing_alias_does_not_hold_another_services_rollback(
    stage: Stage,
) -> None:
    """DESIGN: 'an error on one service's alias never blinds the others'."""
    stage.config_template += TWO_SERVICES
    good, _ = await released(stage)
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    held = [e["guard"] for e in await events(stage, "rollback_held")]
    assert "monitor_blind" not in held


async def test_two_refused_services_cost_one_request_each_then_sit_out(stage: Stage) -> None:
    """Railway names one failing alias at a time: the poll asks again without each, then the
    refused services sit out the batched poll (one request per poll again), and say why."""
    stage.config_template += TWO_SERVICES + TWO_SERVICES.replace('"other"', '"third"').replace(
        "no-such-service", "no-such-service-either"
    )
    good, _ = await released(stage)
    await stage.run_for(30)
    assert stage.applied_rollbacks() == [good]
    held = [e["guard"] for e in await events(stage, "rollback_held")]
    assert "monitor_blind" not in held
    polls = [r for r in stage.emu.requests if r.operation_name == "RailguardTick"]
    # Railway refuses: all three asked, then without one, then without the other; afterwards
    # one request per poll.
    assert [r.status for r in polls[:3]] == [200, 200, 200]
    assert [bool(r.errors) for r in polls[:3]] == [True, True, False]
    later = [r for r in polls[3:] if not r.errors]
    assert len(later) == len(polls) - 3
    assert stage.daemon is not None
    (third,) = [w for w in stage.daemon.workers if w.plan.name == "third"]
    sample = third.latest[Signal.ERROR_RATE]
    assert sample.value is None
    assert "Railway refused" in sample.reason
    assert "asked again in" in sample.reason


# -- 5. the replacement's meta names its release differently -----------------------------------


async def test_a_replacement_with_an_image_digest_is_still_ours(stage: Stage) -> None:
    """Railway reuses the target's built image for a rollback and reports its digest on
    the replacement; the target (a GitHub deploy) only had a commit."""
    good, _ = await released(stage)
    real = stage.emu.start_deployment

    def start(source: Any, *, rollback: bool) -> Any:
        new = real(source, rollback=rollback)
        if rollback:
            new.meta = {**new.meta, "imageDigest": "sha256:" + "ab" * 32}
        return new

    stage.emu.start_deployment = start  # type: ignore[method-assign]
    await stage.run_for(45)
    assert stage.applied_rollbacks() == [good]
    (record,) = await store_of(stage).rollbacks("web")
    assert record.state == "succeeded", record.error


# -- 6. two rules fire at once -----------------------------------------------------------------


async def test_two_rules_firing_at_once_roll_back_once(stage: Stage) -> None:
    stage.behaviour = {"v2": {"error_ratio": 0.6, "memory_bytes": 500 * 2**20}}
    good, _ = await released(stage)
    await stage.run_for(60)
    assert stage.applied_rollbacks() == [good]


# -- 7. a dry run and a second bad release ----------------------------------------------------


async def test_dry_run_one_record_per_bad_release(stage: Stage) -> None:
    stage.tier_extra = "dry_run = true"
    _, bad = await released(stage)
    await stage.run_for(30)
    v3 = stage.push("v3")
    await stage.run_for(40)
    records = await store_of(stage).rollbacks("web")
    assert sorted((r.from_deployment, r.state) for r in records) == sorted(
        [(bad, "dry_run"), (v3.id, "dry_run")]
    )
    assert stage.applied_rollbacks() == []
    assert len(await events(stage, "rollback_dry_run")) == 2


# -- 8. dry run turned off: the bad release the dry run saw is never rolled back ----------------


async def test_turning_dry_run_off_rolls_back_the_release_the_dry_run_saw(
    stage: Stage, tmp_path: Path
) -> None:
    """An operator watches the dry run, trusts it, turns dry_run off and restarts: v2 is still
    active and still failing, so a live rollback is due."""
    from monitor.store import open_store

    store = await open_store(tmp_path / "state.db")
    try:
        stage.tier_extra = "dry_run = true"
        stage.deploy("v1", ago=7200)
        good = stage.deploy("v1.1", ago=3600)
        await stage.start_daemon(store=store)
        await stage.run_for(12)
        stage.deploy("v2")
        await stage.run_for(20)
        assert [r.state for r in await store.rollbacks("web")] == ["dry_run"]
        await stage.stop_daemon()
        stage.tier_extra = ""
        await stage.start_daemon(store=store)
        await stage.run_for(40)
        assert stage.applied_rollbacks() == [good.id]
    finally:
        await stage.stop_daemon()
        await store.close()


# -- 9. Railway's clock a little behind railguard's ----------------------------------------------


class SkewedClock:
    """The emulator's clock: the same FakeClock, ``offset`` seconds off in wall time."""

    def __init__(self, clock: FakeClock, offset: float) -> None:
        self._clock, self._offset = clock, offset

    def time(self) -> float:
        return self._clock.time() + self._offset

    def monotonic(self) -> float:
        return self._clock.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._clock.sleep(seconds)


@pytest.fixture
async def skewed(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    from monitor.sandbox.railway_emulator import RailwayEmulator
    from tests.stage import ROLLOUT, TOKEN

    stage = Stage(clock, tmp_path, BAD)
    stage.emu = RailwayEmulator(SkewedClock(clock, -10.0), tokens=[TOKEN], rollout=ROLLOUT)  # type: ignore[arg-type]
    await stage.start_servers()
    yield stage
    await stage.close()


async def test_railway_10s_behind_still_finds_the_replacement(skewed: Stage) -> None:
    good, _ = await released(skewed)
    await skewed.run_for(45)
    assert skewed.applied_rollbacks() == [good]
    (record,) = await store_of(skewed).rollbacks("web")
    assert record.state == "succeeded", record.error


# -- 10. a lagging signal blames a healthy fix for its predecessor's errors ----------------------


async def test_a_healthy_fix_is_not_rolled_back_for_its_predecessors_errors(
    stage: Stage,
) -> None:
    """Railway's error rate (step 10s, for 10s: the README's 1m/1m scaled down) describes the
    newest *complete* step, so it lags. v2 errs for the 6s it serves; a fix, v3, replaces it
    and never errs. The breach the rule sees after v3 went live is v2's traffic."""
    stage.behaviour = {}  # the app itself is healthy in every release
    stage.config_template = stage.config_template.replace(
        'error_rate = {{ source = "exposition", url = "{app}/metrics", min_requests = 5 }}',
        'error_rate = {{ source = "railway", min_requests = 5, step = "10s" }}',
    ).replace('[services.rules.error-rate]\nfor = "5s"', '[services.rules.error-rate]\nfor = "10s"')
    assert 'source = "railway"' in stage.config_template
    emu, svc, env = stage.emu, lambda: stage.service, lambda: stage.env
    emu.set_traffic(svc(), env(), 10, error_ratio=0.0, at=stage.clock.time() - 300)
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(25)
    v2 = stage.deploy("v2")
    emu.set_traffic(svc(), env(), 10, error_ratio=0.5)
    await stage.run_for(1)
    v3 = stage.push("v3")  # the fix: builds 6s, then serves without a single error
    while stage.active_release() != "v3":
        await stage.run_for(0.5)
    emu.set_traffic(svc(), env(), 10, error_ratio=0.0)
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [], "the healthy fix v3 was rolled back"
    verdict = await store_of(stage).deployment("web", v3.id)
    assert verdict is not None
    assert verdict.verdict != "bad"
    del good, v2


# -- 11. a flapping rule while no rollback is possible pages again and again ------------------


async def test_a_flapping_rule_escalates_once_per_incident_when_no_image_is_left(
    stage: Stage,
) -> None:
    """v2 is bad, nothing older can be rolled back to (canRollback false: retention ran out):
    one escalation for the incident on v2, not one per flap of the rule (each one pages)."""
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(12)
    for d in (good.id, *[d.id for d in stage.emu.deployments.values()]):
        stage.emu.set_deployment(d, can_rollback=False)
    stage.deploy("v2")
    for _ in range(5):  # bad for 8s, briefly fine for 2s, bad again: the same release
        stage.behaviour["v2"] = {"error_ratio": 0.5}
        await stage.run_for(8)
        stage.behaviour["v2"] = {"error_ratio": 0.0}
        await stage.run_for(2)
    assert stage.applied_rollbacks() == []
    kinds = [e["kind"] for e in await events(stage, "escalation")]
    assert kinds == ["retention_expired"], kinds


# -- 12. the restored release crash-loops: loop breaker, never a second rollback --------------


async def test_a_restored_release_that_crash_loops_trips_the_loop_breaker(
    stage: Stage,
) -> None:
    good, bad = await released(stage)
    store = store_of(stage)
    for _ in range(80):
        await stage.run_for(0.5)
        rows = await store.rollbacks("web")
        if rows and rows[0].state == "succeeded":
            break
    else:
        pytest.fail("the first rollback did not succeed")
    replacement = rows[0].new_deployment
    assert replacement is not None
    stage.emu.crash_loop(replacement, period=1.5, max_restarts=3)  # then CRASHED
    await stage.run_for(40)
    assert stage.applied_rollbacks() == [good]
    assert "loop_breaker" in [e["kind"] for e in await events(stage, "escalation")]
    assert await store.frozen("web", stage.clock.time()) is not None
    del bad


# -- 13. a freeze while an unsure attempt waits out the reconcile window ------------------------


async def test_a_freeze_during_the_reconcile_window_stops_the_resend(stage: Stage) -> None:
    good, _ = await released(stage)
    stage.emu.set_faults(drop_count=1, fault_operations=["DeploymentRollback"])
    store = store_of(stage)
    for _ in range(80):
        await stage.run_for(0.5)
        rows = await store.rollbacks("web")
        if rows and rows[0].attempts == 1:
            break
    else:
        pytest.fail("no attempt was made")
    await store.freeze("web", "ops are on it", "manual:ops", stage.clock.time())
    await stage.run_for(40)
    assert stage.applied_rollbacks() == []
    assert (await store.rollbacks("web"))[0].state == "abandoned"
    del good


# -- 12b. a crash loop that never runs out of restarts ---------------------------------------


async def test_a_release_crash_looping_for_ever_is_rolled_back(stage: Stage) -> None:
    """Restart policy ALWAYS (or many retries): the process exits every 1.5s and is brought
    back, for ever; the deployment stays SUCCESS. Railway's facts say so at every poll that
    lands in a restart, and its restart count climbs."""
    stage.behaviour = {}
    good, bad = await released(stage)
    stage.emu.crash_loop(bad, period=1.5, max_restarts=None)
    await stage.run_for(60)
    assert stage.applied_rollbacks() == [good]


# -- 14. the store fails right after Railway accepted the mutation -----------------------------


async def test_the_store_failing_after_the_mutation_never_resends(stage: Stage) -> None:
    from monitor.errors import StoreError

    good, _ = await released(stage)
    store = store_of(stage)
    real = store.advance_rollback
    failed = {"n": 0}

    async def advance(id: int, state: str, **kw: Any) -> Any:
        if state == "sent" and failed["n"] < 3:
            failed["n"] += 1
            raise StoreError("database is locked")
        return await real(id, state, **kw)

    store.advance_rollback = advance  # type: ignore[method-assign]
    await stage.run_for(60)
    assert failed["n"] >= 1
    assert stage.applied_rollbacks() == [good]
    assert (await store.rollbacks("web"))[0].state == "succeeded"


# -- 5. a decision Railway cannot answer still lets the alerts go ------------------------------


async def test_a_decision_railway_cannot_confirm_is_decided_as_far_as_the_alerts_go(
    stage: Stage,
) -> None:
    """The alert router waits for the controller's decision before it tells a rule firing
    (a rollback would hold it). If the controller cannot decide (Railway fails the fresh
    look at the deployments), the symptom is for people now, not after the router's cap."""
    await released(stage)
    stage.emu.set_faults(error_ratio=1.0, fault_operations=["RailguardDeployments"])
    store = store_of(stage)
    for _ in range(120):
        await stage.run_for(0.5)
        if await store.events("web", kinds=["rule_firing"]):
            break
    else:
        pytest.fail("the rule never fired")
    (firing,) = await store.events("web", kinds=["rule_firing"])
    daemon = stage.daemon
    assert daemon is not None
    assert daemon.controller is not None
    (web,) = daemon.plan.services
    cap = web.decision_wait
    while (daemon.controller.decided_through("web") or 0.0) < firing.at:
        assert stage.clock.time() - firing.at < cap / 2, "decided only by the router's cap"
        await stage.run_for(0.5)  # the client's own retries come first
    assert stage.applied_rollbacks() == []  # nothing could be confirmed, nothing was sent
