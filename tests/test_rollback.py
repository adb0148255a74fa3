"""Rollback scenarios: the emulator, a sample app serving the active release, short windows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from monitor.clock import FakeClock
from monitor.railway.client import Deployment
from monitor.store import Store
from tests.stage import Stage

BAD_5XX = {"v2": {"error_ratio": 0.5}}


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD_5XX)
    await stage.start_servers()
    yield stage
    await stage.close()


async def released(stage: Stage, bad: str = "v2") -> tuple[str, str]:
    """v1 served for hours and was replaced by v1.1, which bakes; then ``bad`` goes out.

    Returns (the known-good v1.1 deployment, the bad one).
    """
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await stage.start_daemon()
    await stage.run_for(12)  # v1.1 bakes (10s) and becomes known-good
    bad_deployment = stage.deploy(bad)
    return good.id, bad_deployment.id


async def test_a_bad_release_is_rolled_back_once_to_the_last_known_good(stage: Stage) -> None:
    good, bad = await released(stage)
    daemon = stage.daemon
    assert daemon is not None
    assert daemon.store is not None
    records = {r.id: r for r in await daemon.store.deployments("web")}
    assert records[good].verdict == "good"
    assert records[good].evidence["baked_s"] >= 10

    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    assert stage.active_release() == "v1.1"
    (rollback,) = await daemon.store.rollbacks("web")
    assert rollback.state == "succeeded", rollback.error
    assert (rollback.from_deployment, rollback.to_deployment) == (bad, good)
    assert rollback.rule == "error-rate"
    assert rollback.evidence["samples"]  # the samples that made the rule fire
    # Detection and rollback within for (5s) + one interval (1s) + the poll (2s) and the
    # emulator's rollout of a rollback (3s), with a few seconds of verification.
    assert rollback.recovered_at is not None
    assert rollback.recovered_at - rollback.decided_at < 30
    assert (await daemon.store.deployment("web", bad)).verdict == "bad"  # type: ignore[union-attr]
    await stage.run_for(10)
    assert stage.rollbacks_sent() == [good]  # once


async def events(stage: Stage, kind: str) -> list[dict[str, object]]:
    assert stage.daemon is not None
    assert stage.daemon.store is not None
    return [dict(e.data) for e in await stage.daemon.store.events("web", kinds=[kind])]


async def test_memory_over_the_limit_is_rolled_back_likewise(stage: Stage) -> None:
    stage.behaviour = {"v2": {"memory_bytes": 500 * 2**20}}  # of 512 MiB: 98%
    good, _ = await released(stage)
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    assert stage.daemon is not None
    assert stage.daemon.store is not None
    (rollback,) = await stage.daemon.store.rollbacks("web")
    assert (rollback.rule, rollback.state) == ("memory-high", "succeeded")


async def test_flapping_health_that_never_holds_is_not_rolled_back(stage: Stage) -> None:
    stage.behaviour = {"v2": {"mode": "flap"}}
    await released(stage)
    await stage.run_for(30)
    assert stage.rollbacks_sent() == []


async def test_a_blind_monitor_never_rolls_back(stage: Stage) -> None:
    stage.behaviour = {"v2": {"error_ratio": 1.0}}
    await released(stage)
    stage.traffic_per_second = 0  # the error rate is UNKNOWN: too little traffic
    await stage.run_for(30)
    assert stage.rollbacks_sent() == []
    (blind,) = await events(stage, "blind")
    assert blind["rule"] == "error-rate"
    assert "too little traffic" in str(blind["reason"])


async def test_the_restored_release_failing_too_freezes_instead_of_looping(stage: Stage) -> None:
    good, _ = await released(stage)
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    stage.behaviour["v1.1"] = {"error_ratio": 0.5}  # the restored release fails as well
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]  # no second rollback
    held = await events(stage, "rollback_held")  # newest first
    # The loop breaker freezes; from then on the freeze holds (said once for the episode).
    assert [h["guard"] for h in held] == ["frozen", "loop_breaker"]
    (escalation,) = await events(stage, "escalation")  # a person is needed: it pages
    assert escalation["kind"] == "loop_breaker"
    assert escalation["restored"] == good
    assert stage.daemon is not None
    assert stage.daemon.store is not None
    frozen = await stage.daemon.store.frozen("web", stage.clock.time())
    assert frozen is not None
    assert "fails too" in frozen.reason


async def test_a_newer_deployment_in_progress_holds_the_rollback(stage: Stage) -> None:
    await released(stage)
    await stage.run_for(1)
    stage.deploy("v3", status="BUILDING")  # someone is already shipping a fix
    await stage.run_for(20)
    assert stage.rollbacks_sent() == []
    held = await events(stage, "rollback_held")
    assert held
    assert held[0]["guard"] == "deployment_in_progress"
    assert "BUILDING" in str(held[0]["why"])


async def test_no_known_good_release_escalates_and_never_guesses(stage: Stage) -> None:
    stage.deploy("v2")  # a fresh project: the bad release is all there is
    await stage.start_daemon()
    await stage.run_for(20)
    assert stage.rollbacks_sent() == []
    escalations = await events(stage, "escalation")
    assert escalations
    assert escalations[0]["kind"] == "no_known_good"
    assert "no known-good release" in str(escalations[0]["why"])


async def test_railway_errors_during_the_rollback_are_retried_and_it_is_sent_once(
    stage: Stage,
) -> None:
    good, _ = await released(stage)
    await stage.run_for(4)  # the rule is pending
    stage.emu.set_faults(error_ratio=0.5, rate_limit=20, rate_window=10)
    # A 503 on the mutation may come after Railway applied it: each one costs a reconcile
    # window (20s) before the next attempt.
    await stage.run_for(90)
    applied = [m for m in stage.emu.mutation_calls("deploymentRollback") if m.ok]
    assert [m.arguments["id"] for m in applied] == [good]
    statuses = {r.status for r in stage.emu.requests}
    assert {429, 503} & statuses
    assert stage.active_release() == "v1.1"


async def store_of(stage: Stage):  # type: ignore[no-untyped-def]
    assert stage.daemon is not None
    assert stage.daemon.store is not None
    return stage.daemon.store


async def test_dry_run_decides_and_records_but_never_sends(stage: Stage) -> None:
    stage.tier_extra = "dry_run = true"
    good, bad = await released(stage)
    await stage.run_for(20)
    assert stage.rollbacks_sent() == []
    (record,) = await (await store_of(stage)).rollbacks("web")
    assert (record.state, record.from_deployment, record.to_deployment) == ("dry_run", bad, good)


@pytest.mark.parametrize(
    ("grace", "tier_extra", "guard", "why"),
    [
        ("5m", "", "grace", "went live"),
        ("0s", "max_rollbacks_per_day = 0", "budget", "0 automatic rollbacks in the last 24h"),
    ],
)
async def test_guards_hold_and_say_why(
    stage: Stage, grace: str, tier_extra: str, guard: str, why: str
) -> None:
    stage.grace, stage.tier_extra = grace, tier_extra
    await released(stage)
    await stage.run_for(15)
    assert stage.rollbacks_sent() == []
    held = await events(stage, "rollback_held")
    assert held
    assert held[0]["guard"] == guard
    assert why in str(held[0]["why"])
    assert held[0]["samples"]  # the evidence that would have justified it


async def test_a_replacement_that_fails_escalates_and_freezes(stage: Stage) -> None:
    good, _ = await released(stage)
    stage.emu.set_faults(deploy_outcome="FAILED")
    await stage.run_for(20)
    assert stage.rollbacks_sent() == [good]
    store = await store_of(stage)
    (record,) = await store.rollbacks("web")
    assert record.state == "failed"
    assert "FAILED" in (record.error or "")
    (escalation,) = await events(stage, "escalation")
    assert escalation["kind"] == "rollback_failed"
    assert await store.frozen("web", stage.clock.time()) is not None


async def test_a_restore_that_never_recovers_fails_within_rollback_timeout(stage: Stage) -> None:
    stage.behaviour["v1.1"] = {}
    good, _ = await released(stage)
    await stage.run_for(8)  # pending, about to fire
    stage.behaviour["v1.1"] = {"error_ratio": 0.5}  # the known-good release is broken now too
    await stage.run_for(45)
    assert stage.rollbacks_sent() == [good]
    (record,) = await (await store_of(stage)).rollbacks("web")
    assert record.state == "failed"
    assert "did not recover within 30s" in (record.error or "")


async def test_manual_rollbacks_go_through_the_executor(stage: Stage) -> None:
    from monitor.executor import RollbackRefused

    stage.behaviour = {}
    stage.deploy("v1", ago=7200)
    older = stage.deploy("v1.1", ago=3600)
    current = stage.deploy("v1.2", ago=1800)
    daemon = await stage.start_daemon()
    await stage.run_for(3)
    executor = daemon.executor
    assert executor is not None
    for kwargs, message in [
        ({"to": "nope"}, "is not one of web's recent deployments"),
        ({"to": current.id}, "is the active deployment already"),
    ]:
        with pytest.raises(RollbackRefused, match=message):
            await executor.rollback("web", reason="test", actor="manual:ops", **kwargs)
    with pytest.raises(RollbackRefused, match="no service named 'api'"):
        await executor.rollback("api", reason="test", actor="manual:ops")
    stage.emu.set_deployment(older.id, can_rollback=False)
    with pytest.raises(RollbackRefused, match="canRollback is false"):
        await executor.rollback("web", reason="test", actor="manual:ops", to=older.id)
    stage.emu.set_deployment(older.id, can_rollback=True)

    task = asyncio.ensure_future(
        executor.rollback("web", reason="ops asked", actor="manual:ops", to=older.id)
    )
    while not task.done():
        await stage.run_for(1)
    record = task.result()
    assert (record.state, record.trigger, record.actor) == ("succeeded", "manual", "manual:ops")
    assert stage.rollbacks_sent() == [older.id]
    assert (await (await store_of(stage)).deployment("web", current.id)).verdict == "bad"  # type: ignore[union-attr]


async def test_reconciliation_settles_what_a_previous_run_left(
    stage: Stage, tmp_path: Path
) -> None:
    from monitor.store import open_store

    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    bad = stage.deploy("v2", ago=600)
    store = await open_store(tmp_path / "state.db")
    now = stage.clock.time()
    for service, state in [("web", "intent"), ("gone", "intent"), ("gone-too", "sent")]:
        await store.upsert_deployment(
            service,
            id=bad.id,
            status="SUCCESS",
            created_at=now - 600,
            can_rollback=True,
            meta={},
            seen_at=now - 600,
            live=True,
        )
        record = await store.begin_rollback(
            service,
            bad.id,
            good.id,
            "auto",
            "railguard",
            "error-rate",
            "test",
            {},
            now - 30,
            dry_run=False,
        )
        if state == "sent":
            await store.advance_rollback(record.id, "sent", at=now - 29)
    stage.behaviour = {}
    await stage.start_daemon(store=store)
    settled = {r.service: r.state for r in await store.rollbacks()}
    assert settled == {"web": "abandoned", "gone": "abandoned", "gone-too": "failed"}
    assert stage.rollbacks_sent() == []  # nothing was (re)sent
    await stage.stop_daemon()
    await store.close()


async def test_a_rollback_that_reached_railway_is_followed_after_a_restart(
    stage: Stage, tmp_path: Path
) -> None:
    good, bad, store = await intent_left(stage, tmp_path, attempt=False)
    stage.emu.start_deployment(stage.emu.deployments[good.id], rollback=True)  # it did arrive
    stage.behaviour = {}
    await stage.start_daemon(store=store)
    await stage.run_for(20)
    (record,) = await store.rollbacks("web")
    assert record.state == "succeeded", record.error
    assert stage.rollbacks_sent() == []  # followed, never sent again
    assert (await store.deployment("web", bad.id)).verdict == "bad"  # type: ignore[union-attr]
    await stage.stop_daemon()
    await store.close()


async def test_an_intent_killed_before_its_counted_mutation_left_is_sent_once_after_the_window(
    stage: Stage, tmp_path: Path
) -> None:
    """SIGKILL right after the intent (with its first attempt counted) was written and before
    the mutation left: Railway shows no replacement, so after the reconcile window the same
    intent is sent, once, and the rollback ends."""
    from monitor.store import open_store

    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    bad = stage.deploy("v2", ago=600)
    store = await open_store(tmp_path / "state.db")
    now = stage.clock.time()
    await store.upsert_deployment(
        "web",
        id=bad.id,
        status="SUCCESS",
        created_at=now - 600,
        can_rollback=True,
        meta={},
        seen_at=now - 600,
        live=True,
    )
    intent = await store.begin_rollback(
        "web",
        bad.id,
        good.id,
        "auto",
        "railguard",
        "error-rate",
        "test",
        {},
        now - 1,
        dry_run=False,
        attempt=True,
    )
    assert intent.attempts == 1
    stage.behaviour = {"v2": {"error_ratio": 0.5}}
    await stage.start_daemon(store=store)
    await stage.run_for(10)
    assert stage.rollbacks_sent() == []  # within the window Railway may still apply it
    await stage.run_for(40)
    assert stage.rollbacks_sent() == [good.id]
    (record,) = await store.rollbacks("web")
    assert (record.state, record.attempts) == ("succeeded", 2), record.error
    await stage.stop_daemon()
    await store.close()


async def intent_left(
    stage: Stage, tmp_path: Path, *, attempt: bool
) -> tuple[Deployment, Deployment, Store]:
    """v2 live for 10 minutes, an intent to roll it back to v1.1 left in the store (with its
    attempt counted when ``attempt``), as a kill or a takeover leaves it: v1.1, v2, the store."""
    from monitor.store import open_store

    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    bad = stage.deploy("v2", ago=600)
    store = await open_store(tmp_path / "state.db")
    now = stage.clock.time()
    await store.upsert_deployment(
        "web", id=bad.id, status="SUCCESS", created_at=now - 600, can_rollback=True, meta={},
        seen_at=now - 600, live=True,
    )  # fmt: skip
    await store.begin_rollback(
        "web", bad.id, good.id, "auto", "railguard", "error-rate", "test", {}, now - 1,
        dry_run=False, attempt=attempt,
    )  # fmt: skip
    return good, bad, store


async def resumed_intent(stage: Stage, tmp_path: Path) -> tuple[Deployment, Store]:
    """v2 live for 10 minutes and failing, an intent to v1.1 left with its attempt counted
    (a kill or a takeover), the daemon started on that store: v1.1 and the store."""
    good, _, store = await intent_left(stage, tmp_path, attempt=True)
    stage.behaviour = {"v2": {"error_ratio": 0.5}}
    await stage.start_daemon(store=store)
    return good, store


async def test_a_resumed_intent_whose_rule_has_no_whole_evidence_yet_waits_not_abandons(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a takeover or a restart the rule may fire on evidence not yet whole about the
    release (Idle, waiting): the intent is kept and sent when the decision says Go again,
    not abandoned and decided anew as a second rollback. Past the wait's bound (the rule's
    `for`, two intervals and 30 s from the decision) it is abandoned."""
    from monitor import controller as controller_module
    from monitor.decision import Idle

    real = controller_module.decide
    waiting = {"on": True}

    def decide(policy: Any, facts: Any) -> Any:
        if waiting["on"] and facts.firing:
            return Idle("no rollback rule fires on fresh evidence", waiting=True)
        return real(policy, facts)

    monkeypatch.setattr(controller_module, "decide", decide)
    good, store = await resumed_intent(stage, tmp_path)
    await stage.run_for(25)  # past the reconcile window: it would be sent, but not yet
    (record,) = await store.rollbacks("web")
    assert record.state == "intent"
    assert stage.rollbacks_sent() == []
    waiting["on"] = False  # the evidence is whole: Go, the same intent
    await stage.run_for(30)
    assert stage.rollbacks_sent() == [good.id]
    (record,) = await store.rollbacks("web")
    assert (record.state, record.attempts) == ("succeeded", 2), record.error
    await stage.stop_daemon()
    await store.close()


async def test_an_intent_kept_for_evidence_that_never_comes_is_abandoned_in_time(
    stage: Stage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor import controller as controller_module
    from monitor.decision import Idle

    def decide(policy: Any, facts: Any) -> Any:
        return Idle("no rollback rule fires on fresh evidence", waiting=bool(facts.firing))

    monkeypatch.setattr(controller_module, "decide", decide)
    _, store = await resumed_intent(stage, tmp_path)
    await stage.run_for(120)
    (record,) = await store.rollbacks("web")
    assert record.state == "abandoned"
    assert "fresh evidence" in (record.error or "")
    assert stage.rollbacks_sent() == []
    await stage.stop_daemon()
    await store.close()
