"""/status over HTTP on the rollback stage: the summary, one service in detail, the query's
checks, and the summary's parts reused between requests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitor import status_routes, status_summary
from monitor.clock import FakeClock
from monitor.engine import RuleState
from monitor.errors import StoreError
from monitor.model import Phase
from monitor.status import service_document
from monitor.status_routes import PIECE, _pieces
from monitor.status_summary import Summary, finite, state_of
from monitor.statuspage import render_service
from tests.stage import Stage, serving, store_of, worker
from tests.test_maintenance import one_off

BAD_5XX = {"v2": {"error_ratio": 0.5}}


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, BAD_5XX)
    await stage.start_servers()
    yield stage
    await stage.close()


class Client:
    """GETs against railguard's server for the stage's daemon."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def get(self, path: str, accept: str = "*/*") -> tuple[int, str, str]:
        async with self.session.get(self.url + path, headers={"Accept": accept}) as r:
            return r.status, r.content_type, await r.text()

    async def json(self, path: str, status: int = 200) -> Any:
        got, kind, text = await self.get(path)
        assert (got, kind) == (status, "application/json"), text
        return json.loads(text)


@pytest.fixture
async def baked(stage: Stage) -> AsyncIterator[Client]:
    """v1 served for hours, v1.1 went live and baked to known-good; the server answers."""
    stage.deploy("v1", ago=7200)
    stage.deploy("v1.1", ago=3600)
    daemon = await stage.start_daemon()
    await stage.run_for(12)
    async with serving(daemon) as port, aiohttp.ClientSession() as session:
        yield Client(f"http://127.0.0.1:{port}", session)


async def test_the_summary_and_the_verified_active_release(stage: Stage, baked: Client) -> None:
    summary = await baked.json("/status")
    (web_,) = summary["services"]
    assert web_ | {"deployment": None} == {
        "name": "web",
        "tier": "production",
        "state": "ok",
        "firing": [],
        "release": "v1.1",
        "deployment": None,
        "verdict": "good",
        "frozen": False,
        "maintenance": False,
        "rollback_in_progress": False,
        "on_railway": True,
    }
    assert summary["counts"]["by_state"] == {"firing": 0, "pending": 0, "blind": 0, "ok": 1}
    assert summary["counts"]["by_tier"] == {
        "production": {"firing": 0, "pending": 0, "blind": 0, "ok": 1}
    }
    assert "rules" not in web_  # the details are one click away
    assert summary["railway_budget"]["per_hour"] > 0

    detail = await baked.json("/status/web")
    railway = detail["service"]["railway"]
    # Just verified: the active release is the known-good one (not only an older target).
    assert railway["active"]["release"] == "v1.1"
    assert railway["active"]["verdict"] == "good"
    assert railway["active"]["verified_at"] is not None
    assert railway["known_good"]["release"] == "v1.1"
    assert railway["rollback_target"]["release"] == "v1"
    assert railway["bad"] == []
    assert railway["guards"] | {"cooldown": 0} == {
        "auto_rollback": True,
        "cooldown": 0,
        "cooldown_until": None,
        "max_rollbacks_per_day": 3,
        "rollbacks_last_24h": 0,
        "budget_left": 3,
        "frozen_until": None,
    }
    rule = detail["service"]["rules"]["error-rate"]
    assert rule["threshold_shown"] == "5%"
    assert rule["value_shown"] == "0%"
    assert rule["history"]
    assert await baked.json("/status?service=web") == detail | {
        "generated_at": detail["generated_at"]
    }

    status, kind, page = await baked.get("/status/web", "text/html")
    assert (status, kind) == (200, "text/html")
    assert "none verified yet" not in page
    assert "(the active release)" in page


async def test_during_and_after_a_rollback(stage: Stage, baked: Client) -> None:
    stage.deploy("v2")
    for _ in range(60):
        await stage.run_for(0.5)
        summary = await baked.json("/status")
        if summary["services"][0]["rollback_in_progress"]:
            break
    (web_,) = summary["services"]
    assert web_["rollback_in_progress"] is True
    assert summary["counts"]["rollbacks_in_progress"] == 1
    _, _, page = await baked.get("/status", "text/html")
    assert "rollback in progress" in page
    await stage.settle()
    await stage.run_for(5)  # the replacement serves, and a poll has seen it
    detail = await baked.json("/status/web")
    railway = detail["service"]["railway"]
    assert [b["release"] for b in railway["bad"]] == ["v2"]
    assert railway["active"]["release"] == "v1.1"
    guards = railway["guards"]
    assert guards["budget_left"] == 2
    assert guards["cooldown_until"] is not None
    assert guards["cooldown_until"] > detail["generated_at"]
    assert (await baked.json("/status"))["services"][0]["rollback_in_progress"] is False


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/status?tier=nope", 400, "unknown tier 'nope'"),
        ("/status?colour=red", 400, "unknown parameter 'colour'"),
        ("/status?history=maybe", 400, "history must be 1 or 0"),
        ("/status?tier=production&tier=staging", 400, "'tier' given 2 times"),
        ("/status?service=web&tier=production", 400, "not both"),
        ("/status/web?tier=production", 400, "not /status/<service>"),
        ("/status/nope", 404, "no service called 'nope'"),
        ("/status?service=nope", 404, "no service called 'nope'"),
        ("/status/%3Cscript%3E", 404, "no service called '<script>'"),
        ("/status?tier=%00" + "x" * 500, 400, "unknown tier '\\x00xxx"),
        ("/status/" + "y" * 3000, 404, "no service called 'yyy"),
        ("/status?history=%F0%9F%92%A5", 400, "history must be 1 or 0"),
    ],
)
async def test_bad_queries_are_refused_naming_what_is_wrong(
    baked: Client, path: str, status: int, words: str
) -> None:
    answer = await baked.json(path, status)
    assert words in answer["error"]
    got, kind, _ = await baked.get(path, "text/html")  # a browser gets the JSON error too
    assert (got, kind) == (status, "application/json")


async def test_filters_and_history_only_where_asked(
    baked: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_routes, "ROWS", 1)  # let the loop go after every row rendered
    assert [s["name"] for s in (await baked.json("/status?tier=production"))["services"]] == ["web"]
    assert (await baked.json("/status?tier=staging"))["services"] == []  # a tier, no service
    with_history = await baked.json("/status?history=1")
    assert set(with_history["services"][0]["history"]) >= {"health", "error_rate"}
    assert "history" not in (await baked.json("/status?history=0"))["services"][0]
    lean = await baked.json("/status/web?history=0")
    assert all("history" not in r for r in lean["service"]["rules"].values())
    status, kind, page = await baked.get("/status?tier=production", "text/html")
    assert (status, kind) == (200, "text/html")
    assert 'href="/status/web"' in page


async def test_the_summary_reuses_what_did_not_change(stage: Stage, baked: Client) -> None:
    assert stage.daemon is not None
    summary = Summary(stage.daemon)
    _, first = await summary.build()
    await stage.run_for(1)  # ticks that change no rule's phase
    _, again = await summary.build()
    assert again[0] is first[0]  # the same part, its JSON not encoded again
    worker(stage).states["error-rate"] = RuleState(phase=Phase.PENDING, since=1.0)
    _, changed = await summary.build()
    assert changed[0] is not first[0]
    assert changed[0].entry["state"] == "pending"


def test_the_worst_rule_sets_the_state() -> None:
    ok, blind = RuleState(), RuleState(blind=True)
    pending, firing = RuleState(phase=Phase.PENDING), RuleState(phase=Phase.FIRING)
    assert state_of(iter([])) == "ok"
    assert state_of(iter([ok, blind])) == "blind"
    assert state_of(iter([blind, pending])) == "pending"
    assert state_of(iter([pending, firing, ok])) == "firing"


def test_a_page_is_written_in_pieces() -> None:
    fragments = ["x" * 1000] * (3 * PIECE // 1000)
    pieces = list(_pieces(fragments))
    assert len(pieces) >= 3
    assert b"".join(pieces) == "".join(fragments).encode()


class Seen:
    """The daemon as the status documents see it, with some of its parts replaced."""

    def __init__(self, daemon: Any, **replaced: Any) -> None:
        self._daemon = daemon
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._daemon, name)


class BrokenStore:
    """A store every read of which fails, as PostgreSQL out of reach does."""

    def __getattr__(self, name: str) -> Any:
        async def fails(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("connection refused")

        return fails


async def test_without_the_store_the_live_state_is_still_shown(stage: Stage, baked: Client) -> None:
    seen = Seen(stage.daemon, store=BrokenStore())
    document, parts = await Summary(seen).build()
    assert document["store_error"] == "connection refused"
    assert [p.entry["state"] for p in parts] == ["ok"]
    assert parts[0].entry["release"] is None  # the store's part is left out, not guessed
    detail = await service_document(seen, worker(stage))
    assert detail["store_error"] == "connection refused"
    assert detail["service"]["rules"]["error-rate"]["phase"] == "inactive"


async def test_removed_services_are_forgotten_and_events_refresh_releases(
    stage: Stage, baked: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stage.daemon is not None
    summary = Summary(stage.daemon)
    _, parts = await summary.build()
    assert parts[0].entry["verdict"] == "good"
    # A verdict written behind the summary's back: an event about the service refreshes it.
    store = store_of(stage)
    active = parts[0].entry["deployment"]
    await store.mark_bad("web", active, stage.clock.time(), "by hand", {})
    monkeypatch.setattr(status_summary, "EVENTS_READ", 1)  # more events than it reads: all
    for _ in range(2):
        await store.record_event("web", "unfrozen", stage.clock.time(), {})
    _, parts = await summary.build()
    assert parts[0].entry["verdict"] == "bad"
    _, parts = await Summary(Seen(stage.daemon, workers=())).build()
    assert parts == []
    gone = Summary(stage.daemon)
    await gone.build()
    gone.daemon = Seen(stage.daemon, workers=())
    await gone.build()
    assert gone._parts == {}


@pytest.mark.long_running
async def test_a_maintenance_window_in_force_is_flagged_and_explained(
    clock: FakeClock, tmp_path: Path
) -> None:
    stage = Stage(clock, tmp_path, BAD_5XX)
    await stage.start_servers()
    try:
        t0 = clock.time()
        stage.extra_config = one_off(t0 - 60, t0 + 600)
        stage.deploy("v1", ago=7200)
        daemon = await stage.start_daemon()
        await stage.run_for(2)
        _, parts = await Summary(daemon).build()
        assert parts[0].entry["maintenance"] is True
        document = await service_document(daemon, worker(stage))
        assert document["service"]["maintenance"]["active"]["name"] == "deploy-freeze"
        page = render_service(finite(document))
        assert "maintenance window <strong>deploy-freeze</strong> open until" in page
        await clock.advance(700)  # the window is over
        _, parts = await Summary(daemon).build()
        assert parts[0].entry["maintenance"] is False
    finally:
        await stage.close()
