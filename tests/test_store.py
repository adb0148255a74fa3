"""The state store on real SQLite files: migrations, verdicts, the rollback write-ahead log."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from monitor.clock import FakeClock
from monitor.engine import RuleState
from monitor.errors import RailguardError, StoreError
from monitor.model import Phase, Sample, Signal
from monitor.store import (
    TERMINAL,
    RollbackRecord,
    Store,
    open_store,
    state_path,
)
from monitor.store.schema import newest
from monitor.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0
NEWEST = newest()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SQLiteStore]:
    async with await open_store(tmp_path / "railguard.db") as s:
        yield s


def versions(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version_num FROM alembic_version")]


async def begin(store: Store, service: str = "api", **overrides: Any) -> RollbackRecord:
    args: dict[str, Any] = {
        "service": service,
        "from_deployment": "d2",
        "to_deployment": "d1",
        "trigger": "auto",
        "actor": "railguard",
        "rule": "error-rate",
        "reason": "error rate 12% > 5% for 2m",
        "evidence": {"value": 0.12, "samples": [{"at": T0, "v": 0.12}]},
        "decided_at": T0,
        "dry_run": False,
    }
    args.update(overrides)
    return await store.begin_rollback(**args)


# -- opening and migrating (more in test_migrations.py) -------------------------------------


@pytest.mark.sqlite_only
async def test_migrates_an_empty_database(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "deep" / "dir" / "railguard.db"  # the directories are created
    async with await open_store(path) as store:
        assert store.migrated == tuple(range(1, NEWEST + 1))
        assert store.schema_version == NEWEST
        pragmas = {}
        for name in ("journal_mode", "synchronous", "foreign_keys"):
            rows = await store._fetch(f"PRAGMA {name}", {})
            pragmas[name] = rows[0][0]
        assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}
    assert versions(path) == [f"{NEWEST:04d}"]


@pytest.mark.sqlite_only
async def test_reopening_applies_nothing(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    async with await open_store(path) as store:
        await store.freeze("api", "incident 42", "ana", T0)
    before = versions(path)
    await clock.advance(3600)
    async with await open_store(path) as store:
        assert store.migrated == ()
        assert store.schema_version == NEWEST
        assert await store.frozen("api", T0) is not None
    assert versions(path) == before


@pytest.mark.sqlite_only
async def test_refuses_a_database_from_a_newer_railguard(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    await (await open_store(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(StoreError) as e:
        await open_store(path)
    message = str(e.value)
    assert str(path) in message
    assert "schema version 99" in message
    assert f"up to {NEWEST}" in message
    assert "Upgrade railguard" in message


@pytest.mark.sqlite_only
async def test_unwritable_path_is_a_store_error_naming_it(tmp_path: Path, clock: FakeClock) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "railguard.db"  # root or not: a file is no directory
    with pytest.raises(StoreError, match="cannot open the state database") as e:
        await open_store(path)
    assert str(path) in str(e.value)
    assert "RAILGUARD_STATE" in str(e.value)
    assert isinstance(e.value, RailguardError)


@pytest.mark.sqlite_only
async def test_a_directory_is_no_database(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "dir"
    path.mkdir()
    with pytest.raises(StoreError, match="cannot open the state database") as e:
        await SQLiteStore.open(path)
    assert str(path) in str(e.value)


@pytest.mark.sqlite_only
async def test_a_corrupt_file_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(StoreError, match="not a usable railguard database") as e:
        await open_store(path)
    assert str(path) in str(e.value)
    assert "move the file aside" in str(e.value)


@pytest.mark.sqlite_only
async def test_an_unreadable_schema_table_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "railguard.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_migrations (something TEXT)")
    with pytest.raises(StoreError, match="cannot read the schema version"):
        await open_store(path)


@pytest.mark.sqlite_only
async def test_open_store_needs_no_clock(tmp_path: Path) -> None:
    async with await open_store(tmp_path / "railguard.db") as store:
        assert store.schema_version == NEWEST


async def test_a_closed_store_says_so(tmp_path: Path, clock: FakeClock) -> None:
    store = await open_store(tmp_path / "railguard.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.deployments("api")
    with pytest.raises(StoreError, match="closed"):
        await store.freeze("api", "x", "ana", T0)


@pytest.mark.sqlite_only
async def test_sqlite_errors_become_store_errors(store: SQLiteStore) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute("DROP TABLE events")
    with pytest.raises(StoreError, match="no such table"):
        await store.events()
    with pytest.raises(StoreError, match="no such table"):
        await store.record_event("api", "blind", T0, {})


# -- where the database lives ---------------------------------------------------------------


def test_state_path_prefers_the_configured_path(tmp_path: Path) -> None:
    configured = tmp_path / "state" / "guard.db"
    assert state_path(configured, data_dir=tmp_path) == configured


def test_state_path_puts_the_file_in_a_configured_directory(tmp_path: Path) -> None:
    assert state_path(tmp_path, data_dir=tmp_path / "nope") == tmp_path / "railguard.db"


def test_state_path_uses_the_data_volume_when_mounted(tmp_path: Path) -> None:
    assert state_path(None, data_dir=tmp_path) == tmp_path / "railguard.db"


def test_state_path_falls_back_to_the_working_directory(tmp_path: Path) -> None:
    assert state_path(None, data_dir=tmp_path / "missing") == Path("railguard.db")


# -- deployments ----------------------------------------------------------------------------


async def upsert(store: Store, id: str = "d1", *, seen_at: float, live: bool, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "status": "SUCCESS" if live else "REMOVED",
        "created_at": T0,
        "can_rollback": True,
        "meta": {"commit": "abc"},
    }
    args.update(kw)
    return await store.upsert_deployment("api", id=id, seen_at=seen_at, live=live, **args)


async def test_upsert_keeps_first_seen_and_the_first_live_at(store: SQLiteStore) -> None:
    first = await upsert(store, seen_at=T0 + 10, live=False, status="DEPLOYING")
    assert (first.first_seen, first.live_at, first.ended_at) == (T0 + 10, None, None)
    assert first.verdict == "unverified"
    assert first.evidence == {}
    live = await upsert(store, seen_at=T0 + 20, live=True, meta={"commit": "def"})
    assert (live.first_seen, live.live_at, live.status) == (T0 + 10, T0 + 20, "SUCCESS")
    assert live.meta == {"commit": "def"}
    again = await upsert(store, seen_at=T0 + 30, live=True, can_rollback=False, created_at=T0 + 999)
    assert (again.live_at, again.can_rollback, again.created_at) == (T0 + 20, False, T0)
    assert await store.deployment("api", "d1") == again


async def test_ended_at_is_when_it_stopped_serving(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=True)
    ended = await upsert(store, seen_at=T0 + 60, live=False)
    assert ended.ended_at == T0 + 60
    still = await upsert(store, seen_at=T0 + 120, live=False)
    assert still.ended_at == T0 + 60
    back = await upsert(store, seen_at=T0 + 180, live=True)
    assert (back.live_at, back.ended_at) == (T0, None)


async def test_a_deployment_that_never_served_has_no_end(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=False, status="BUILDING")
    failed = await upsert(store, seen_at=T0 + 60, live=False, status="FAILED")
    assert (failed.live_at, failed.ended_at, failed.status) == (None, None, "FAILED")


async def test_deployments_newest_created_first(store: SQLiteStore) -> None:
    for i in (2, 0, 3, 1):
        await upsert(store, f"d{i}", seen_at=T0, live=False, created_at=T0 + i)
    await store.upsert_deployment(
        "web", id="w1", status="SUCCESS", created_at=T0, can_rollback=True, meta={},
        seen_at=T0, live=True,
    )  # fmt: skip
    assert [d.id for d in await store.deployments("api")] == ["d3", "d2", "d1", "d0"]
    assert [d.id for d in await store.deployments("api", limit=2)] == ["d3", "d2"]
    assert await store.deployment("api", "w1") is None
    assert await store.deployment("nobody", "d1") is None


async def test_good_is_kept_and_idempotent(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=True)
    evidence = {"baked_s": 600.5, "rules": [{"name": "error-rate", "threshold": 0.05}]}
    good = await store.mark_good("api", "d1", T0 + 600, "baked 10m", evidence)
    assert (good.verdict, good.verdict_at, good.verdict_reason) == ("good", T0 + 600, "baked 10m")
    assert good.evidence == evidence
    again = await store.mark_good("api", "d1", T0 + 900, "baked again", {"other": 1})
    assert again == good
    polled = await upsert(store, seen_at=T0 + 1000, live=True)
    assert (polled.verdict, polled.evidence) == ("good", evidence)


async def test_bad_is_for_ever(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=True)
    await store.mark_good("api", "d1", T0 + 600, "baked", {})
    bad = await store.mark_bad("api", "d1", T0 + 700, "rolled back from", {"rollback": 1})
    assert (bad.verdict, bad.verdict_at, bad.verdict_reason) == (
        "bad",
        T0 + 700,
        "rolled back from",
    )
    assert bad.evidence == {"rollback": 1}
    assert await store.mark_good("api", "d1", T0 + 800, "baked", {}) == bad
    assert await store.mark_bad("api", "d1", T0 + 900, "again", {}) == bad
    assert (await upsert(store, seen_at=T0 + 1000, live=True)).verdict == "bad"


async def test_bad_without_being_good_first(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=True)
    assert (await store.mark_bad("api", "d1", T0, "crashed", {})).verdict == "bad"


async def test_a_verdict_needs_a_recorded_deployment(store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match=r"deployment zz of api .* never recorded"):
        await store.mark_bad("api", "zz", T0, "x", {})
    with pytest.raises(StoreError, match="never recorded"):
        await store.mark_good("api", "zz", T0, "x", {})


async def test_json_columns_take_mappings_and_refuse_the_rest(store: SQLiteStore) -> None:
    await upsert(store, seen_at=T0, live=True, meta=MappingProxyType({"a": {"b": 1.5}}))
    record = await store.deployment("api", "d1")
    assert record is not None
    assert record.meta == {"a": {"b": 1.5}}
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        await store.record_event("api", "x", T0, {"when": object()})


# -- rollbacks ------------------------------------------------------------------------------


async def test_rollback_lifecycle_stamps_each_step(store: SQLiteStore) -> None:
    intent = await begin(store)
    assert (intent.state, intent.decided_at, intent.dry_run) == ("intent", T0, False)
    assert intent.evidence == {"value": 0.12, "samples": [{"at": T0, "v": 0.12}]}
    assert (intent.trigger, intent.actor, intent.rule) == ("auto", "railguard", "error-rate")
    assert intent.sent_at is intent.finished_at is intent.new_deployment is None
    assert not intent.finished
    sent = await store.advance_rollback(intent.id, "sent", at=T0 + 1)
    assert (sent.state, sent.sent_at) == ("sent", T0 + 1)
    deploying = await store.advance_rollback(intent.id, "deploying", at=T0 + 5, new_deployment="d3")
    assert (deploying.deploying_at, deploying.new_deployment) == (T0 + 5, "d3")
    assert deploying.live_at is None
    done = await store.advance_rollback(intent.id, "succeeded", at=T0 + 70, live_at=T0 + 40)
    assert done.state == "succeeded"
    assert done.finished
    assert (done.live_at, done.recovered_at, done.finished_at) == (T0 + 40, T0 + 70, T0 + 70)
    assert done.new_deployment == "d3"
    assert (done.decided_at, done.sent_at, done.deploying_at) == (T0, T0 + 1, T0 + 5)
    assert await store.rollback(intent.id) == done


async def test_live_at_defaults_to_success_time_and_is_kept_once_known(store: SQLiteStore) -> None:
    r = await begin(store)
    await store.advance_rollback(r.id, "deploying", at=T0 + 5, new_deployment="d3", live_at=T0 + 9)
    done = await store.advance_rollback(r.id, "succeeded", at=T0 + 30)
    assert (done.live_at, done.recovered_at) == (T0 + 9, T0 + 30)
    r2 = await begin(store, decided_at=T0 + 100)
    done2 = await store.advance_rollback(r2.id, "succeeded", at=T0 + 130, new_deployment="d4")
    assert (done2.live_at, done2.sent_at, done2.deploying_at) == (T0 + 130, None, None)


async def test_failure_and_abandonment_finish_the_rollback(store: SQLiteStore) -> None:
    r = await begin(store)
    failed = await store.advance_rollback(r.id, "failed", at=T0 + 3, error="canRollback is false")
    assert (failed.state, failed.finished_at, failed.error) == (
        "failed",
        T0 + 3,
        "canRollback is false",
    )
    r2 = await begin(store, decided_at=T0 + 10)
    gone = await store.advance_rollback(r2.id, "abandoned", at=T0 + 20, error="never sent")
    assert (gone.state, gone.finished_at, gone.error) == ("abandoned", T0 + 20, "never sent")
    r3 = await begin(store, decided_at=T0 + 30)
    await store.advance_rollback(r3.id, "sent", at=T0 + 31, error="slow answer")
    late = await store.advance_rollback(r3.id, "failed", at=T0 + 200)
    assert late.error == "slow answer"  # a later step without an error keeps the first


async def test_a_dry_run_is_recorded_and_finished_at_once(store: SQLiteStore) -> None:
    dry = await begin(store, dry_run=True)
    assert (dry.state, dry.dry_run, dry.finished_at) == ("dry_run", True, T0)
    assert dry.finished
    with pytest.raises(StoreError, match="already dry_run"):
        await store.advance_rollback(dry.id, "sent", at=T0 + 1)


@pytest.mark.parametrize(
    ("path", "target", "message"),
    [
        (["sent"], "sent", "is sent: it cannot go back to sent"),
        (["deploying"], "sent", "is deploying: it cannot go back to sent"),
        (["sent"], "abandoned", "reached Railway, so it cannot be abandoned"),
        (["deploying"], "abandoned", "cannot be abandoned"),
        (["succeeded"], "failed", "is already succeeded: it cannot become failed"),
        (["failed"], "succeeded", "already failed"),
        (["abandoned"], "sent", "already abandoned"),
        (["failed"], "failed", "already failed"),
    ],
)
async def test_illegal_transitions_are_refused(
    store: SQLiteStore, path: list[str], target: str, message: str
) -> None:
    r = await begin(store)
    for i, state in enumerate(path):
        await store.advance_rollback(r.id, state, at=T0 + i, new_deployment="d3")
    before = await store.rollback(r.id)
    with pytest.raises(StoreError, match=message):
        await store.advance_rollback(r.id, target, at=T0 + 99, new_deployment="d3")
    assert await store.rollback(r.id) == before


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("done", {}, "unknown rollback state 'done'"),
        ("intent", {}, "only when it begins"),
        ("dry_run", {}, "only when it begins"),
        ("deploying", {}, "the replacement deployment is needed"),
        ("succeeded", {}, "the replacement deployment is needed"),
        ("sent", {"live_at": T0}, "live_at goes with deploying or succeeded"),
    ],
)
async def test_impossible_calls_are_value_errors(
    store: SQLiteStore, target: str, kwargs: dict[str, Any], message: str
) -> None:
    r = await begin(store)
    with pytest.raises(ValueError, match=message):
        await store.advance_rollback(r.id, target, at=T0 + 1, **kwargs)
    with pytest.raises(ValueError, match="unknown rollback trigger"):
        await begin(store, trigger="cron")


async def test_unknown_rollbacks(store: SQLiteStore) -> None:
    assert await store.rollback(42) is None
    with pytest.raises(StoreError, match="no rollback #42"):
        await store.advance_rollback(42, "sent", at=T0)


async def test_one_unfinished_rollback_per_service(store: SQLiteStore) -> None:
    first = await begin(store)
    with pytest.raises(
        StoreError, match=rf"a rollback of api is already in progress \(#{first.id}\)"
    ):
        await begin(store, decided_at=T0 + 1)
    await store.advance_rollback(first.id, "deploying", at=T0 + 2, new_deployment="d3")
    with pytest.raises(StoreError, match="already in progress"):
        await begin(store, trigger="manual", actor="ana")
    other = await begin(store, service="web")  # another service is independent
    dry = await begin(store, dry_run=True)  # a dry run changes nothing on Railway
    assert (other.state, dry.state) == ("intent", "dry_run")
    await store.advance_rollback(first.id, "failed", at=T0 + 3)
    assert (await begin(store, decided_at=T0 + 4)).state == "intent"


async def test_concurrent_begins_for_one_service_exactly_one_wins(store: SQLiteStore) -> None:
    results = await asyncio.gather(
        *(begin(store, decided_at=T0 + i) for i in range(5)), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, RollbackRecord)]
    lost = [r for r in results if isinstance(r, StoreError)]
    assert (len(won), len(lost)) == (1, 4)
    assert all(f"in progress (#{won[0].id})" in str(e) for e in lost)
    assert [r.id for r in await store.rollbacks("api")] == [won[0].id]


async def test_a_broken_rollback_row_is_a_store_error(store: SQLiteStore) -> None:
    with pytest.raises(StoreError, match=r"(?i)not.null"):
        await begin(store, reason=None)
    assert await store.rollbacks() == []


async def test_listing_rollbacks(store: SQLiteStore) -> None:
    a1 = await begin(store, "api", decided_at=T0)
    await store.advance_rollback(a1.id, "failed", at=T0 + 1)
    w1 = await begin(store, "web", decided_at=T0 + 10)
    a2 = await begin(store, "api", decided_at=T0 + 20)
    d1 = await begin(store, "db", decided_at=T0 + 30, dry_run=True)
    assert [r.id for r in await store.rollbacks()] == [d1.id, a2.id, w1.id, a1.id]
    assert [r.id for r in await store.rollbacks("api")] == [a2.id, a1.id]
    assert [r.id for r in await store.rollbacks(unfinished=True)] == [a2.id, w1.id]
    assert [r.id for r in await store.rollbacks("web", unfinished=True)] == [w1.id]
    assert [r.id for r in await store.rollbacks(since=T0 + 10)] == [d1.id, a2.id, w1.id]
    assert [r.id for r in await store.rollbacks(limit=1)] == [d1.id]
    assert all(r.state not in TERMINAL for r in await store.rollbacks(unfinished=True))


async def test_counting_rollbacks_for_the_budget(store: SQLiteStore) -> None:
    day = 86400.0
    old = await begin(store, decided_at=T0 - day - 1)
    await store.advance_rollback(old.id, "failed", at=T0 - day)
    ok = await begin(store, decided_at=T0 + 10)
    await store.advance_rollback(ok.id, "succeeded", at=T0 + 60, new_deployment="d3")
    failed = await begin(store, decided_at=T0 + 100)
    await store.advance_rollback(failed.id, "failed", at=T0 + 101)
    never = await begin(store, decided_at=T0 + 200)
    await store.advance_rollback(never.id, "abandoned", at=T0 + 201)
    await begin(store, decided_at=T0 + 300, dry_run=True)
    manual = await begin(store, decided_at=T0 + 400, trigger="manual", actor="ana")
    await begin(store, "web", decided_at=T0 + 500)
    since = T0 + 600 - day
    assert await store.rollbacks_since("api", since) == 2  # succeeded + failed
    assert await store.rollbacks_since("api", since, trigger="manual") == 1
    assert await store.rollbacks_since("api", T0 - 2 * day) == 3
    assert await store.rollbacks_since("nobody", since) == 0
    assert manual.state == "intent"


# -- rule pending state ---------------------------------------------------------------------


async def test_rule_state_round_trip(store: SQLiteStore) -> None:
    state = RuleState(
        phase=Phase.PENDING,
        since=T0 + 0.25,
        last_known_at=T0 + 30.5,
        blind=False,
        window=(
            Sample(Signal.ERROR_RATE, T0 + 0.25, 0.07, detail={"5xx": 7, "total": 100}),
            Sample(Signal.ERROR_RATE, T0 + 30.5, 0.0625, detail={"5xx": 5, "total": 80}),
        ),
    )
    await store.save_rule_state("api", "error-rate", state.to_dict(), T0 + 31)
    await store.save_rule_state("api", "health-failing", RuleState().to_dict(), T0 + 31)
    await store.save_rule_state("web", "error-rate", RuleState(blind=True).to_dict(), T0)
    saved = await store.rule_states("api")
    assert sorted(saved) == ["error-rate", "health-failing"]
    assert RuleState.from_dict(saved["error-rate"]) == state
    assert RuleState.from_dict(saved["health-failing"]) == RuleState()

    await store.save_rule_state("api", "error-rate", RuleState().to_dict(), T0 + 60)
    assert RuleState.from_dict((await store.rule_states("api"))["error-rate"]) == RuleState()
    await store.delete_rule_state("api", "error-rate")
    await store.delete_rule_state("api", "never-saved")
    assert sorted(await store.rule_states("api")) == ["health-failing"]
    assert RuleState.from_dict((await store.rule_states("web"))["error-rate"]).blind
    assert await store.rule_states("nobody") == {}


# -- freezes --------------------------------------------------------------------------------


async def test_freezes(store: SQLiteStore) -> None:
    assert await store.frozen("api", T0) is None
    api = await store.freeze("api", "incident 42", "ana", T0)
    assert (api.service, api.reason, api.actor, api.at, api.until) == (
        "api", "incident 42", "ana", T0, None
    )  # fmt: skip
    assert await store.frozen("api", T0 + 10**6) == api
    web = await store.freeze("web", "loop breaker", "railguard", T0, until=T0 + 3600)
    assert await store.frozen("web", T0 + 3599) == web
    assert await store.frozen("web", T0 + 3600) is None  # expired: not frozen
    assert await store.freezes(T0 + 10) == [api, web]
    assert await store.freezes(T0 + 3600) == [api]

    replaced = await store.freeze("api", "release week", "bo", T0 + 5, until=T0 + 50)
    assert await store.frozen("api", T0 + 6) == replaced
    assert await store.unfreeze("api") == replaced
    assert await store.unfreeze("api") is None
    assert await store.frozen("api", T0 + 6) is None
    assert await store.unfreeze("web") == web  # an expired freeze is still removed


# -- events ---------------------------------------------------------------------------------


async def test_events_newest_first_and_filtered(store: SQLiteStore) -> None:
    ids = [
        await store.record_event("api", "guard_held", T0, {"guard": "cooldown", "left_s": 12.5}),
        await store.record_event("api", "no_known_good", T0 + 10, {"rule": "error-rate"}),
        await store.record_event("web", "blind", T0 + 20, {"rules": ["health-failing"]}),
        await store.record_event(None, "api_budget_low", T0 + 30, {"left": 40}),
        await store.record_event("api", "guard_held", T0 + 40, {"guard": "budget"}),
    ]
    assert ids == sorted(ids)
    everything = await store.events()
    assert [e.id for e in everything] == ids[::-1]
    assert everything[-1].data == {"guard": "cooldown", "left_s": 12.5}
    assert everything[1].service is None
    assert [e.id for e in await store.events("api")] == [ids[4], ids[1], ids[0]]
    assert [e.id for e in await store.events(since=T0 + 20)] == [ids[4], ids[3], ids[2]]
    assert [e.kind for e in await store.events("api", kinds=["guard_held"])] == ["guard_held"] * 2
    assert [e.id for e in await store.events(kinds="blind")] == [ids[2]]
    assert [e.id for e in await store.events(kinds=["blind", "no_known_good"])] == [ids[2], ids[1]]
    assert await store.events(kinds=[]) == []
    assert [e.id for e in await store.events(limit=2)] == [ids[4], ids[3]]
    assert await store.events("api", since=T0 + 41) == []


# -- durability -----------------------------------------------------------------------------

READER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT id, service, state, from_deployment, to_deployment FROM rollbacks")
print(rows.fetchall())
"""


@pytest.mark.sqlite_only
async def test_an_intent_is_on_disk_before_begin_returns(store: SQLiteStore) -> None:
    intent = await begin(store)
    # Another process, the store still open: only what was committed is visible to it.
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", READER, str(store.path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == repr([(intent.id, "api", "intent", "d2", "d1")])


async def test_an_in_memory_store_for_runs_without_state(clock: FakeClock) -> None:
    async with await open_store(Path(":memory:")) as store:
        assert store.migrated == tuple(range(1, NEWEST + 1))
        assert (await begin(store)).state == "intent"
