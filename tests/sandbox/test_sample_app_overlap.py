"""The sample app says which deployment answered, and models a deploy's overlap: for a while
after a new release goes live, the release it replaced still answers (some or all requests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from monitor.clock import FakeClock
from monitor.sandbox.sample_app import STATE_KEY, create_app
from monitor.sandbox.sandbox import Sandbox

OLD = {"release": "v1", "deployment_id": "dep-1", "commit": "a" * 40}
NEW = {"release": "v2", "deployment_id": "dep-2", "commit": "b" * 40}


@pytest.fixture
async def app(clock: FakeClock) -> web.Application:
    app = create_app(clock=clock)
    app[STATE_KEY].update(OLD)
    return app


@pytest.fixture
async def get(app: web.Application) -> AsyncIterator[Any]:
    """GET a path: (status, the deployment header, the commit header, the JSON body or None)."""
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:

        async def run(path: str = "/health") -> tuple[int, str | None, str | None, Any]:
            async with session.get(server.make_url(path)) as response:
                headers = response.headers
                is_json = response.content_type == "application/json"
                return (
                    response.status,
                    headers.get("X-Railway-Deployment-Id"),
                    headers.get("X-Railway-Git-Commit-Sha"),
                    await response.json() if is_json else None,
                )

        yield run


async def test_the_deployment_and_commit_are_echoed_in_headers_and_health_json(get: Any) -> None:
    status, deployment, commit, body = await get()
    assert (status, deployment, commit) == (200, "dep-1", "a" * 40)
    assert body == {"status": "ok", "release": "v1", "deployment": "dep-1", "commit": "a" * 40}
    status, deployment, _, _ = await get("/work")
    assert (status, deployment) == (200, "dep-1")


async def test_a_failing_health_answer_still_says_who_sent_it(
    app: web.Application, get: Any
) -> None:
    app[STATE_KEY].update({"mode": "error"})
    status, deployment, _, body = await get()
    assert (status, deployment, body["deployment"]) == (500, "dep-1", "dep-1")


async def test_without_a_deployment_nothing_is_echoed(clock: FakeClock) -> None:
    app = create_app(clock=clock)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        response = await session.get(server.make_url("/health"))
        assert "X-Railway-Deployment-Id" not in response.headers
        assert await response.json() == {"status": "ok", "release": "v1"}


async def test_railways_edge_answer_while_the_app_wakes_carries_no_app_headers(
    app: web.Application, get: Any
) -> None:
    app[STATE_KEY].update({"asleep": True})
    status, deployment, commit, _ = await get()
    assert (status, deployment, commit) == (502, None, None)


async def test_in_the_overlap_the_replaced_release_answers_as_it_behaved(
    app: web.Application, get: Any, clock: FakeClock
) -> None:
    app[STATE_KEY].update({"mode": "error", "error_ratio": 1.0})  # v1 is bad
    app[STATE_KEY].update({**NEW, "mode": "ok", "error_ratio": 0.0, "overlap": 10})
    status, deployment, commit, body = await get()
    assert (status, deployment, commit) == (500, "dep-1", "a" * 40)
    assert (body["release"], body["deployment"]) == ("v1", "dep-1")
    assert (await get("/work"))[:2] == (500, "dep-1")
    await clock.advance(9.9)
    assert (await get())[:2] == (500, "dep-1")
    await clock.advance(0.1)  # the overlap is over: only v2 answers
    assert [(await get(path))[:2] for path in ("/health", "/work")] == [(200, "dep-2")] * 2


async def test_an_overlap_ratio_shares_the_answers_deterministically(
    app: web.Application, get: Any
) -> None:
    app[STATE_KEY].update({**NEW, "overlap": 60, "overlap_ratio": 0.5})
    assert [(await get())[1] for _ in range(4)] == ["dep-2", "dep-1"] * 2


async def test_no_overlap_without_a_new_release_or_with_none_set(
    app: web.Application, get: Any
) -> None:
    state = app[STATE_KEY]
    state.update({"overlap": 60})
    state.update({"mode": "error"})  # the same deployment behaving differently: no overlap
    assert (await get())[:2] == (500, "dep-1")
    state.update({**NEW, "mode": "ok", "overlap": 0})
    assert (await get())[:2] == (200, "dep-2")


async def test_a_rollback_is_a_new_deployment_and_overlaps_too(
    app: web.Application, get: Any
) -> None:
    state = app[STATE_KEY]
    state.update({**NEW, "mode": "error"})
    # Railway's rollback: v1's release again, in a new deployment; v2's keeps answering a while.
    state.update({**OLD, "deployment_id": "dep-3", "mode": "ok", "overlap": 5})
    assert (await get())[:2] == (500, "dep-2")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"deployment_id": "dep\r\nX-Evil: 1"}, "deployment_id: must be a deployment id"),
        ({"commit": 42}, "commit: must be a deployment id or a commit"),
        ({"overlap": -1}, "overlap: must be between 0 and 3600"),
        ({"overlap_ratio": 2}, "overlap_ratio: must be between 0 and 1"),
    ],
)
async def test_bad_identity_or_overlap_is_refused(
    app: web.Application, changes: dict[str, Any], message: str
) -> None:
    state = app[STATE_KEY]
    with pytest.raises(ValueError, match=message):
        state.update(changes)
    assert state.to_dict()["deployment_id"] == "dep-1"


async def test_the_sandbox_app_plays_the_active_deployment_and_its_overlap(
    clock: FakeClock,
) -> None:
    sandbox = Sandbox(
        clock,
        ["production"],
        behaviour={"v1": {"mode": "error"}, "v2": {"overlap": 5}},
        rollout=(("DEPLOYING", 1.0),),
    )
    await sandbox.start()
    try:
        v1 = sandbox.release("production", "v1", ago=60)
        url = sandbox.urls["production"] + "/health"
        async with aiohttp.ClientSession() as session:

            async def who() -> tuple[int, str]:
                async with session.get(url) as response:
                    return response.status, response.headers["X-Railway-Deployment-Id"]

            assert await who() == (500, v1.id)
            v2 = sandbox.deploy("production", "v2")
            await clock.advance(1.0)
            assert sandbox.active_release("production") == "v2"
            assert await who() == (500, v1.id)  # v1 still answers in v2's overlap
            await clock.advance(5.0)
            assert await who() == (200, v2.id)
    finally:
        await sandbox.close()
