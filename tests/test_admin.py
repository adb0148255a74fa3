"""The admin API and the deploy webhook, served by a real daemon guarding the rollback stage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitor.clock import FakeClock
from monitor.daemon import Daemon
from monitor.environment import load_environment
from monitor.planning import build_plan
from monitor.telemetry import Metrics
from tests.helpers import until
from tests.stage import Stage

ADMIN_TOKEN = "admin-token-0123456789"
HOOK_SECRET = "hook-secret-abcdef"
BAD_5XX = {"v2": {"error_ratio": 0.5}}
DOCS = """
[[services]]
name = "docs"
tier = "preview"
health_url = "{app}/health"
"""


async def start_daemon(stage: Stage, **overrides: str | None) -> Daemon:
    """The stage's daemon, serving HTTP on a free port with the admin token and hook secret."""
    environ = {
        **stage.environ,
        "RAILGUARD_ADMIN_TOKEN": ADMIN_TOKEN,
        "RAILGUARD_WEBHOOK_SECRET": HOOK_SECRET,
        "PORT": "0",
        "RAILGUARD_HOST": "127.0.0.1",
    }
    for key, value in overrides.items():
        if value is None:
            environ.pop(key)
        else:
            environ[key] = value
    path = stage.write_config()
    plan = build_plan(path, load_environment(environ), environ)
    daemon = Daemon(plan, clock=stage.clock, metrics=Metrics(CollectorRegistry()), serve_http=True)
    stage.daemon = daemon  # the stage shuts it down
    stage.sync_app()
    await daemon.startup()
    return daemon


async def released(stage: Stage, **overrides: str | None) -> tuple[str, str]:
    """v1, then v1.1 which bakes into known-good, then v2 goes out: (v1.1's id, v2's id)."""
    stage.deploy("v1", ago=7200)
    good = stage.deploy("v1.1", ago=3600)
    await start_daemon(stage, **overrides)
    await stage.run_for(12)
    bad = stage.deploy("v2")
    await stage.run_for(2)  # a poll sees v2 serving
    return good.id, bad.id


class Admin:
    """An HTTP client of the stage daemon's admin API."""

    def __init__(self, session: aiohttp.ClientSession, stage: Stage) -> None:
        self.session = session
        self.stage = stage

    @property
    def url(self) -> str:
        assert self.stage.daemon is not None
        return f"http://127.0.0.1:{self.stage.daemon.port}"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN_TOKEN,
        **headers: str,
    ) -> tuple[int, Any]:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as response:
            text = await response.text()
            kind = response.headers.get("Content-Type", "")
            return response.status, await response.json() if "json" in kind else text


@pytest.fixture
async def stage(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Stage]:
    stage = Stage(clock, tmp_path, {})
    await stage.start_servers()
    yield stage
    await stage.close()


@pytest.fixture
async def admin(stage: Stage) -> AsyncIterator[Admin]:
    async with aiohttp.ClientSession() as session:
        yield Admin(session, stage)


def daemon_of(stage: Stage) -> Daemon:
    assert stage.daemon is not None
    return stage.daemon


def frozen_gauge(stage: Stage) -> float | None:
    registry = daemon_of(stage).metrics.registry
    return registry.get_sample_value("railguard_frozen", {"service": "web", "tier": "production"})


async def test_the_admin_api_wants_the_token_and_never_logs_a_wrong_one(
    stage: Stage, admin: Admin
) -> None:
    await released(stage)
    status, body = await admin.call("GET", "/api/v1/status", token=None)
    assert status == 401
    assert "bearer token" in body["error"]
    with capture_logs() as logs:
        for token in ("not-the-token", ADMIN_TOKEN + "x", ""):
            status, _ = await admin.call("GET", "/api/v1/status", token=token)
            assert status == 401
        status, _ = await admin.call("GET", "/api/v1/status", token=None, Authorization="Basic x")
        assert status == 401
    assert any(e["event"] == "admin API: unauthorized" for e in logs)
    assert "not-the-token" not in repr(logs)
    assert ADMIN_TOKEN not in repr(logs)
    async with admin.session.get(f"{admin.url}/api/v1/status") as response:
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_without_a_token_the_admin_api_is_disabled(stage: Stage, admin: Admin) -> None:
    stage.deploy("v1")
    await start_daemon(stage, RAILGUARD_ADMIN_TOKEN=None, RAILGUARD_WEBHOOK_SECRET=None)
    for token in (None, "anything"):
        status, body = await admin.call("GET", "/api/v1/status", token=token)
        assert status == 403
        assert body == {"error": "the admin API is disabled: set RAILGUARD_ADMIN_TOKEN"}
    status, _ = await admin.call("POST", "/webhooks/railway/anything", {})
    assert status == 404  # no secret configured: no webhook


async def test_status_shows_releases_freezes_rollbacks_and_events(
    stage: Stage, admin: Admin
) -> None:
    stage.extra_config = DOCS.format(app=stage.app_url)
    good, bad = await released(stage)
    status, body = await admin.call("GET", "/api/v1/status")
    assert status == 200
    services = {s["name"]: s for s in body["services"]}
    web = services["web"]
    assert web["tier"] == "production"
    assert web["rules"]["error-rate"]["phase"] == "inactive"
    railway = web["railway"]
    assert railway["active"]["id"] == bad
    assert railway["active"]["meta"]["release"] == "v2"
    assert railway["known_good"][0] == good  # newest first; v1 is inferred good as well
    assert len(railway["known_good"]) == 2
    assert railway["frozen"] is None
    assert railway["rollbacks"] == []
    assert services["docs"]["railway"] is None  # no Railway ids: watched, nothing more

    await admin.call("POST", "/api/v1/services/web/freeze", {"reason": "release train"})
    _, body = await admin.call("GET", "/api/v1/status")
    railway = body["services"][0]["railway"]
    assert railway["frozen"]["reason"] == "release train"
    assert railway["frozen"]["actor"] == "manual:admin-api"
    assert railway["events"][0]["kind"] == "frozen"
    assert railway["events"][0]["data"]["reason"] == "release train"


async def test_a_manual_rollback_is_accepted_then_followed_to_success(
    stage: Stage, admin: Admin
) -> None:
    good, bad = await released(stage)
    body = {"reason": "checkout is slow", "confirm": "CONFIRM"}
    status, answer = await admin.call(
        "POST", "/api/v1/services/web/rollback", body, **{"X-Railguard-Actor": "alice"}
    )
    assert status == 202, answer
    rollback = answer["rollback"]
    assert answer["state"] in ("intent", "sent", "deploying")
    assert answer["record"]["to"] == good

    await stage.run_for(20)
    status, record = await admin.call("GET", f"/api/v1/rollbacks/{rollback}")
    assert status == 200
    assert record["state"] == "succeeded", record["error"]
    assert (record["from"], record["to"], record["trigger"]) == (bad, good, "manual")
    assert record["actor"] == "manual:alice"
    assert record["reason"] == "checkout is slow"
    assert record["new_deployment"] is not None
    assert stage.rollbacks_sent() == [good]  # exactly one mutation reached Railway
    assert stage.active_release() == "v1.1"


async def test_a_manual_rollback_to_a_named_deployment(stage: Stage, admin: Admin) -> None:
    v1 = stage.deploy("v0", ago=9000)  # an old release nobody verified: named on purpose
    await released(stage)
    body = {"reason": "back to v0", "to": v1.id, "confirm": "CONFIRM"}
    status, answer = await admin.call("POST", "/api/v1/services/web/rollback", body)
    assert status == 202, answer
    await stage.run_for(20)
    _, record = await admin.call("GET", f"/api/v1/rollbacks/{answer['rollback']}")
    assert record["state"] == "succeeded"
    assert stage.rollbacks_sent() == [v1.id]
    assert stage.active_release() == "v0"


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("web", {"reason": "r"}, 400, 'confirm: must be exactly "CONFIRM" (got None)'),
        ("web", {"reason": "r", "confirm": "confirm"}, 400, "confirm: must be exactly"),
        ("web", {"confirm": "CONFIRM"}, 400, "reason: required"),
        ("web", {"reason": " ", "confirm": "CONFIRM"}, 400, "reason: expected a non-empty"),
        ("web", {"reason": "r", "to": 5, "confirm": "CONFIRM"}, 400, "to: expected a non-empty"),
        ("web", {"reason": "r" * 1001, "confirm": "CONFIRM"}, 400, "reason: longer than"),
        ("web", {"reason": "r", "confirm": "CONFIRM", "x": 1}, 400, "x: unknown field"),
        ("web", ["CONFIRM"], 400, "body: expected a JSON object"),
        ("web", "{", 400, "body: not valid JSON"),
        ("nope", {"reason": "r", "confirm": "CONFIRM"}, 404, "no service named 'nope'"),
        ("docs", {"reason": "r", "confirm": "CONFIRM"}, 409, "docs has no Railway ids"),
        ("web", {"reason": "r", "to": "d-x", "confirm": "CONFIRM"}, 409, "d-x is not one of"),
    ],
)
async def test_rollback_requests_that_are_refused(
    stage: Stage, admin: Admin, path: str, body: Any, status: int, message: str
) -> None:
    stage.extra_config = DOCS.format(app=stage.app_url)
    await released(stage)
    if isinstance(body, str):  # raw, not JSON
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        url = f"{admin.url}/api/v1/services/{path}/rollback"
        async with admin.session.post(url, data=body, headers=headers) as response:
            got, answer = response.status, await response.json()
    else:
        got, answer = await admin.call("POST", f"/api/v1/services/{path}/rollback", body)
    assert got == status
    assert message in answer["error"]
    assert stage.rollbacks_sent() == []


async def test_no_known_good_release_is_a_409_that_says_so(stage: Stage, admin: Admin) -> None:
    stage.deploy("v2")  # all there is
    await start_daemon(stage)
    await stage.run_for(2)
    body = {"reason": "r", "confirm": "CONFIRM"}
    status, answer = await admin.call("POST", "/api/v1/services/web/rollback", body)
    assert status == 409
    assert "no known-good release" in answer["error"]
    assert stage.rollbacks_sent() == []


async def test_a_second_rollback_waits_for_the_first(stage: Stage, admin: Admin) -> None:
    await released(stage)
    body = {"reason": "r", "confirm": "CONFIRM"}
    first, answer = await admin.call("POST", "/api/v1/services/web/rollback", body)
    assert first == 202
    second, refused = await admin.call("POST", "/api/v1/services/web/rollback", body)
    assert second == 409
    assert f"rollback #{answer['rollback']} of web is" in refused["error"]


async def test_rollback_progress_of_unknown_ids(stage: Stage, admin: Admin) -> None:
    await released(stage)
    assert (await admin.call("GET", "/api/v1/rollbacks/42"))[0] == 404
    status, answer = await admin.call("GET", "/api/v1/rollbacks/x1")
    assert status == 400
    assert "id: not a rollback number" in answer["error"]


async def test_a_freeze_holds_automatic_rollback_until_unfrozen(
    stage: Stage, admin: Admin, clock: FakeClock
) -> None:
    stage.behaviour = BAD_5XX
    await released(stage)
    assert frozen_gauge(stage) in (None, 0.0)
    body = {"reason": "migration running", "until": "2h"}
    status, answer = await admin.call(
        "POST", "/api/v1/services/web/freeze", body, **{"X-Railguard-Actor": "bob"}
    )
    assert status == 200, answer
    assert answer["frozen"]["until"] == pytest.approx(clock.time() + 7200)
    assert answer["frozen"]["actor"] == "manual:bob"
    assert frozen_gauge(stage) == 1.0

    await stage.run_for(20)  # v2 fails: the rule fires, the freeze holds
    assert stage.rollbacks_sent() == []
    store = daemon_of(stage).store
    assert store is not None
    (held,) = [e.data for e in await store.events("web", kinds=["rollback_held"])]
    assert held["guard"] == "frozen"
    assert "migration running (by manual:bob)" in held["why"]

    status, answer = await admin.call(
        "POST", "/api/v1/services/web/unfreeze", {"reason": "migration done"}
    )
    assert (status, answer["unfrozen"]) == (200, True)
    assert answer["was"]["reason"] == "migration running"
    assert frozen_gauge(stage) == 0.0
    assert await store.frozen("web", clock.time()) is None
    (unfrozen,) = [e.data for e in await store.events("web", kinds=["unfrozen"])]
    assert (unfrozen["reason"], unfrozen["actor"]) == ("migration done", "manual:admin-api")
    _, again = await admin.call("POST", "/api/v1/services/web/unfreeze", {"reason": "again"})
    assert again["unfrozen"] is False


async def test_a_freeze_until_a_time_and_the_gauge_follows_expiry(
    stage: Stage, admin: Admin, clock: FakeClock
) -> None:
    await released(stage)
    until = clock.time() + 30
    iso = datetime.fromtimestamp(until, UTC).replace(tzinfo=None).isoformat()  # naive: UTC
    status, answer = await admin.call(
        "POST", "/api/v1/services/web/freeze", {"reason": "r", "until": iso}
    )
    assert status == 200
    assert answer["frozen"]["until"] == pytest.approx(until)
    await stage.run_for(31)
    _, body = await admin.call("GET", "/api/v1/status")
    assert body["services"][0]["railway"]["frozen"] is None
    assert frozen_gauge(stage) == 0.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"reason": "r", "until": "soon"}, "until: not a time or a duration: 'soon'"),
        ({"reason": "r", "until": "2000-01-01T00:00:00Z"}, "is not in the future"),
        ({"reason": "r", "until": 7200}, "until: expected a non-empty string (got 7200)"),
        ({"until": "2h"}, "reason: required"),
    ],
)
async def test_bad_freezes_are_400s_naming_the_field(
    stage: Stage, admin: Admin, body: dict[str, Any], message: str
) -> None:
    await released(stage)
    status, answer = await admin.call("POST", "/api/v1/services/web/freeze", body)
    assert status == 400
    assert message in answer["error"]


async def test_services_without_railway_ids_cannot_be_frozen(stage: Stage, admin: Admin) -> None:
    stage.extra_config = DOCS.format(app=stage.app_url)
    await released(stage)
    for action in ("freeze", "unfreeze"):
        status, answer = await admin.call(
            "POST", f"/api/v1/services/docs/{action}", {"reason": "r"}
        )
        assert status == 409
        assert "docs has no Railway ids" in answer["error"]


def ticks(stage: Stage) -> int:
    return sum(1 for r in stage.emu.requests if r.operation_name == "RailguardTick")


async def test_a_webhook_makes_the_poller_look_now_but_not_more_than_that(
    stage: Stage, admin: Admin, clock: FakeClock
) -> None:
    await released(stage)
    before = ticks(stage)
    payload = {
        "type": "DEPLOY",
        "status": "SUCCESS",
        "service": {"id": stage.service, "name": "web"},
        "deployment": {"id": "d-from-the-hook"},
    }
    with capture_logs() as logs:
        status, answer = await admin.call("POST", f"/webhooks/railway/{HOOK_SECRET}", payload)
    assert status == 202
    assert answer["refresh"] == "polling Railway now"
    await until(lambda: ticks(stage) == before + 1, "the early poll")
    (hint,) = [e for e in logs if e["event"] == "railway webhook"]
    assert (hint["type"], hint["service_name"], hint["deployment_id"]) == (
        "DEPLOY",
        "web",
        "d-from-the-hook",
    )
    assert HOOK_SECRET not in repr(logs)

    # A flood within interval / 2 (1s) spends nothing more.
    answers = [
        await admin.call("POST", f"/webhooks/railway/{HOOK_SECRET}", payload) for _ in range(20)
    ]
    assert {a["refresh"] for _, a in answers} == {
        "an early poll ran moments ago: the next one will tell"
    }
    await clock.advance(0)
    assert ticks(stage) == before + 1
    await clock.advance(1)  # half the poll interval later: one more is allowed
    status, answer = await admin.call("POST", f"/webhooks/railway/{HOOK_SECRET}", "not json")
    assert status == 400  # not the JSON object Railway sends: refused, and polls nothing
    assert "body: expected a JSON object" in answer["error"]
    status, answer = await admin.call("POST", f"/webhooks/railway/{HOOK_SECRET}", {})
    assert (status, answer["refresh"]) == (202, "polling Railway now")
    await until(lambda: ticks(stage) == before + 2, "the second early poll")
    assert daemon_of(stage).poller.early_polls == 2  # type: ignore[union-attr]


async def test_webhooks_with_a_bad_secret_or_a_huge_body(stage: Stage, admin: Admin) -> None:
    await released(stage)
    before = ticks(stage)
    for secret in ("wrong", HOOK_SECRET + "x", ""):
        status, text = await admin.call("POST", f"/webhooks/railway/{secret}", {}, token=None)
        assert status == 404
        assert text == "404: Not Found"  # the same as a path that does not exist
    url = f"{admin.url}/webhooks/railway/{HOOK_SECRET}"
    async with admin.session.post(url, data=b"x" * (64 * 1024 + 1)) as response:
        assert response.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(70):
            yield b"y" * 1024

    async with admin.session.post(url, data=chunks()) as response:
        assert response.status == 413
    async with admin.session.post(url, data=b"[1, 2]") as response:
        assert response.status == 400  # not an object: not what Railway sends
        assert "body: expected a JSON object" in (await response.json())["error"]
    async with admin.session.post(url, data=b'{"type": "DEPLOY"}') as response:
        assert response.status == 202
    assert ticks(stage) <= before + 1
