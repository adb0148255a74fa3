"""The /status document's words for the decision trail, and who gets HTML."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from monitor.server import wants_html
from monitor.status import TIMELINE_KINDS, Labels, words
from monitor.store import EventRecord, open_store
from monitor.store.sqlite import SQLiteStore


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    async with await open_store(Path(":memory:")) as opened:
        await opened.upsert_deployment(
            "web",
            id="dep-1",
            status="SUCCESS",
            created_at=1.0,
            can_rollback=True,
            meta={"commitHash": "0123456789abcdef"},
            seen_at=1.0,
            live=True,
        )
        yield opened


def event(kind: str, data: dict[str, Any]) -> EventRecord:
    return EventRecord(id=1, service="web", kind=kind, at=10.0, data=data)


@pytest.mark.parametrize(
    ("kind", "data", "title", "detail"),
    [
        ("rule_firing", {"rule": "error-rate", "reason": "5xx"}, "error-rate firing", "5xx"),
        ("rule_resolved", {"rule": "error-rate", "reason": "ok"}, "error-rate resolved", "ok"),
        (
            "blind",
            {"rule": "memory-high", "reason": "no samples"},
            "railguard is blind to memory-high",
            "no samples",
        ),
        (
            "rollback_started",
            {
                "rollback": 4,
                "from": "dep-2",
                "to": "dep-1",
                "trigger": "manual",
                "actor": "manual:ana",
                "reason": "bad deploy",
            },
            "rollback #4 started: deployment dep-2 → 0123456",  # an unknown id; a commit hash
            "by manual:ana: bad deploy",
        ),
        (
            "rollback_failed",
            {
                "rollback": 4,
                "from_release": "v2",
                "to_release": "v1",
                "why": "still failing",
                "took_s": 125.0,
            },
            "rollback #4 failed: v2 → v1",
            "still failing; 2m5s after the decision",
        ),
        (
            "rollback_abandoned",
            {"rollback": 5, "from": None, "to": "dep-1", "why": "never sent"},
            "rollback #5 abandoned: ? → 0123456",
            "never sent",
        ),
        (
            "rollback_held",
            {"guard": "cooldown", "why": "rolled back 2m ago"},
            "rollback held back (cooldown)",
            "rolled back 2m ago",
        ),
        (
            "escalation",
            {"kind": "loop_breaker", "why": "twice in 15m"},
            "a person is needed (loop_breaker)",
            "twice in 15m",
        ),
        (
            "deployment_failed",
            {"deployment": "dep-1", "status": "CRASHED"},
            "deployment 0123456 failed",
            "CRASHED",
        ),
        (
            "deployment_verified",
            {"deployment": "dep-1", "baked_s": 600.0},
            "deployment 0123456 verified healthy",
            "served 10m with every rule inactive",
        ),
        (
            "deployment_verified",
            {"deployment": "dep-1", "inferred": True},
            "deployment 0123456 verified healthy",
            "served with every rule inactive (inferred from Railway's history)",
        ),
        (
            "frozen",
            {"actor": "manual:ana", "reason": "incident 42"},
            "automatic rollback frozen",
            "manual:ana: incident 42",
        ),
        ("unfrozen", {}, "automatic rollback unfrozen", ""),
        (
            "rollback_started",
            {"rollback": 6, "to": "dep-1", "trigger": "manual", "reason": "r"},
            "rollback #6 started: ? → 0123456",
            "by hand: r",
        ),
        (  # odd numbers from an old or hand-made event: left out, not fatal
            "rollback_succeeded",
            {"rollback": 7, "to": "dep-1", "why": "ok", "took_s": float("nan")},
            "rollback #7 succeeded: ? → 0123456",
            "ok",
        ),
        (
            "deployment_verified",
            {"deployment": "dep-1", "baked_s": "soon"},
            "deployment 0123456 verified healthy",
            "served with every rule inactive",
        ),
    ],
)
async def test_each_timeline_event_reads_as_words(
    store: SQLiteStore, kind: str, data: dict[str, Any], title: str, detail: str
) -> None:
    said = await words(event(kind, data), Labels(store))
    assert (said.title, said.summary) == (title, detail)


def test_the_timeline_levels_are_the_page_levels() -> None:
    assert set(TIMELINE_KINDS.values()) == {"critical", "warning", "ok", "info"}


async def test_labels_read_again_for_a_deployment_newer_than_they_knew(store: SQLiteStore) -> None:
    labels = Labels(store)
    assert await labels.label("web", "dep-9") == "dep-9"
    await store.upsert_deployment(
        "web",
        id="dep-9",
        status="SUCCESS",
        created_at=2.0,
        can_rollback=True,
        meta={"release": "v9"},
        seen_at=2.0,
        live=True,
    )
    assert await labels.label("web", "dep-9") == "v9"
    assert await Labels(None).label("web", "dep-1") == "dep-1"  # no store: the id


@pytest.mark.parametrize(
    ("query", "accept", "html"),
    [
        ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # browser
        ("", "*/*", False),  # curl
        ("", "", False),
        ("", "application/json, text/html", False),
        ("", "text/html, application/json", True),
        ("?format=json", "text/html", False),
        ("?format=html", "application/json", True),
        ("?format=xml", "text/html", True),  # unknown: the header decides
    ],
)
def test_a_browser_gets_the_page_and_everything_else_json(
    query: str, accept: str, html: bool
) -> None:
    headers = {"Accept": accept} if accept else {}
    request: web.Request = make_mocked_request("GET", "/status" + query, headers=headers)
    assert wants_html(request) is html


async def test_an_event_that_cannot_be_described_is_shown_by_its_kind(store: SQLiteStore) -> None:
    class Odd:  # str() of it fails, as a corrupt row's value might
        def __str__(self) -> str:
            raise ValueError("corrupt")

    said = await words(event("rule_firing", {"rule": "x", "reason": Odd()}), Labels(store))
    assert said.title == "rule firing"
    assert "unreadable" in said.summary


def test_status_json_is_strict_and_times_stay_finite() -> None:
    from monitor.server import finite

    doc = {"a": [1.0, float("nan"), (float("inf"), "x")], "b": {"c": -float("inf")}, "d": 2}
    assert finite(doc) == {"a": [1.0, None, [None, "x"]], "b": {"c": None}, "d": 2}


@pytest.mark.parametrize("text", ["1" * 400 + "s", "3000000d", "9999-12-31T00:00:00Z"])
def test_a_freeze_cannot_last_beyond_the_calendar(text: str) -> None:
    from monitor.admin import Problem, parse_until

    with pytest.raises(Problem, match="too far away"):
        parse_until(text, 1_700_000_000.0)
