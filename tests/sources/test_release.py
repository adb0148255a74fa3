"""The release check: the echo read from a real answer, and each answer attributed to the
deployment that sent it (an answer from any but the active one is UNKNOWN, never a breach)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from monitor.clock import SystemClock
from monitor.model import Sample, Signal
from monitor.sources.health import HealthCheck, HealthSource
from monitor.sources.release import ReleaseAware, ReleaseCheck, answered_by

HEADER = "X-Railway-Deployment-Id"
DEP = "3f8c1a52-6c1e-4a57-9d0b-5f0e2c7b9a11"
SHA = "0123456789abcdef0123456789abcdef01234567"

# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "set header or json_path (one of them)"),
        ({"header": HEADER, "json_path": "deployment"}, "set header or json_path (one of"),
        ({"header": "X Deployment"}, "not an HTTP header name (write the name the app"),
        ({"header": ""}, "not an HTTP header name"),
        ({"header": "X-" + "a" * 200}, "not an HTTP header name"),
        ({"json_path": "railway..id"}, 'not a json path (dotted keys, e.g. "railway.'),
        ({"json_path": ""}, "not a json path"),
        ({"header": 42}, "Input should be a valid string"),
        ({"headers": HEADER}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_release_check_is_refused_naming_the_value(
    data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ReleaseCheck.model_validate(data, context={"environ": {}})


def test_a_head_probe_has_no_body_to_echo_in() -> None:
    with pytest.raises(ValidationError, match=r"release\.json_path needs GET"):
        HealthCheck.model_validate(
            {"url": "http://x/", "method": "HEAD", "release": {"json_path": "deployment"}},
            context={"environ": {}},
        )
    check = HealthCheck.model_validate(
        {"url": "http://x/", "method": "HEAD", "release": {"header": HEADER}},
        context={"environ": {}},
    )
    assert check.release is not None
    assert check.release.describe() == f"header {HEADER}"


# -- reading the echo -------------------------------------------------------------------------


def _target() -> web.Application:
    """Routes answering with an echo in every shape a real app (or a broken one) sends."""

    async def header(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, headers={HEADER: request.query.get("v", DEP)})

    async def twice(request: web.Request) -> web.Response:
        response = web.Response()
        response.headers.add(HEADER, DEP)
        response.headers.add(HEADER, "other")
        return response

    async def none(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def document(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "200"))
        return web.json_response({"status": "ok", "railway": {"deployment": DEP}}, status=status)

    async def raw(request: web.Request) -> web.Response:
        return web.Response(body=request.query["body"].encode())

    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=b"[" * 60000)

    app = web.Application()
    app.router.add_get("/header", header)
    app.router.add_get("/twice", twice)
    app.router.add_get("/none", none)
    app.router.add_get("/json", document)
    app.router.add_get("/raw", raw)
    app.router.add_get("/deep", deep)
    return app


Probe = Callable[..., Awaitable[Sample]]


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    async with TestServer(_target(), host="127.0.0.1") as server, aiohttp.ClientSession() as s:

        async def run(path: str, **settings: Any) -> Sample:
            check = HealthCheck(url=str(server.make_url(path)), **settings)
            (sample,) = await HealthSource(check, s, SystemClock()).collect(100.0)
            return sample

        yield run


BY_HEADER = {"release": ReleaseCheck(header=HEADER)}
BY_JSON = {"release": ReleaseCheck(json_path="railway.deployment")}


@pytest.mark.parametrize(
    ("path", "settings", "value", "echoed", "unattributed"),
    [
        ("/header", BY_HEADER, 1.0, DEP, None),
        (f"/header?v={SHA}", BY_HEADER, 1.0, SHA, None),
        ("/header?status=500", BY_HEADER, 0.0, DEP, None),  # a failing answer says who, too
        ("/header?v=%20", BY_HEADER, 1.0, None, f"{HEADER} header is not a deployment id"),
        ("/header?v=a%20b", BY_HEADER, 1.0, None, "is not a deployment id or a commit: 'a b'"),
        ("/header?v=" + "x" * 300, BY_HEADER, 1.0, None, "is not a deployment id or a commit"),
        ("/twice", BY_HEADER, 1.0, None, f"{HEADER} header sent 2 times with different"),
        ("/none", BY_HEADER, 1.0, None, f"no {HEADER} header in the answer"),
        ("/json", BY_JSON, 1.0, DEP, None),
        ("/json?status=503", BY_JSON, 0.0, DEP, None),  # the body is read for the echo
        ("/none", BY_JSON, 1.0, None, "json path railway.deployment not found in the answer"),
        ('/raw?body={"railway": {"deployment": 7}}', BY_JSON, 1.0, None, "is not a string: 7"),
        ('/raw?body={"railway": []}', BY_JSON, 1.0, None, "not found in the answer (no 'de"),
        (
            '/raw?body={"d": ["dep-x"]}',
            {"release": ReleaseCheck(json_path="d.0")},
            1.0,
            "dep-x",
            None,
        ),
        ('/raw?body={"d": []}', {"release": ReleaseCheck(json_path="d.0")}, 1.0, None, "(no '0')"),
        ('/raw?body={"d": [1]}', {"release": ReleaseCheck(json_path="d.²")}, 1.0, None, "(no '²')"),
        ("/raw?body=oops", BY_JSON, 1.0, None, "body is not valid JSON"),
        ("/deep", BY_JSON, 1.0, None, "body is not valid JSON (nested too deeply)"),
        ("/json", {**BY_JSON, "max_body_bytes": 10}, 1.0, None, "over max_body_bytes 10"),
        ("/json", {**BY_JSON, "json_path": "nope"}, 0.0, DEP, None),  # one body, two readings
    ],
)
async def test_the_echo_is_read_or_the_sample_says_why_not(
    probe: Probe,
    path: str,
    settings: dict[str, Any],
    value: float,
    echoed: str | None,
    unattributed: str | None,
) -> None:
    sample = await probe(path, **settings)
    assert sample.value == value, sample.reason
    assert sample.detail["echoed"] == echoed
    if unattributed is None:
        assert "unattributed" not in sample.detail
    else:
        assert unattributed in sample.detail["unattributed"]


async def test_a_deeply_nested_body_is_a_failing_json_condition_not_a_crash(probe: Probe) -> None:
    sample = await probe("/deep", json_path="status")
    assert (sample.value, sample.reason) == (0.0, "body is not valid JSON (nested too deeply)")


async def test_no_answer_is_unattributed() -> None:
    async with aiohttp.ClientSession() as session:
        check = HealthCheck(url="http://127.0.0.1:9/health", release=ReleaseCheck(header=HEADER))
        (sample,) = await HealthSource(check, session, SystemClock()).collect(100.0)
    assert sample.value == 0.0
    assert sample.detail["echoed"] is None
    assert "no complete answer" in sample.detail["unattributed"]


async def test_without_a_release_check_there_is_no_echo(probe: Probe) -> None:
    sample = await probe("/header")
    assert "echoed" not in sample.detail
    assert "unattributed" not in sample.detail


# -- attribution ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dep:
    id: str
    created_at: float
    release: str
    commit: str = ""

    @property
    def meta(self) -> Mapping[str, Any]:
        return {"release": self.release, **({"commitHash": self.commit} if self.commit else {})}


OLD = Dep("dep-old", 100.0, "v1", "a" * 40)
NEW = Dep("dep-new", 200.0, "v2", "b" * 40)
NEXT = Dep("dep-next", 300.0, "v3", "c" * 40)


@dataclass(frozen=True)
class View:
    deployments: tuple[Dep, ...]
    active: Dep | None


@dataclass
class Railway:
    """The poller's latest view of service "web", and the early polls asked of it."""

    view: View | None = None
    refreshes: int = 0

    def latest(self, name: str) -> View | None:
        assert name == "web"
        return self.view

    def refresh(self) -> bool:
        self.refreshes += 1
        return True


@dataclass
class Answers:
    """A health source whose next answer is set by the test."""

    value: float = 1.0
    echoed: str | None = NEW.id
    signals: frozenset[Signal] = frozenset({Signal.HEALTH})
    more: list[Sample] = field(default_factory=list)

    async def collect(self, at: float) -> list[Sample]:
        detail: dict[str, Any] = {"status": 200 if self.value else 500, "echoed": self.echoed}
        if self.echoed is None:
            detail["unattributed"] = f"no {HEADER} header in the answer"
        reason = "" if self.value else "status 500 (expected 2xx)"
        return [Sample(Signal.HEALTH, at, self.value, reason, detail), *self.more]


def aware(answers: Answers, active: Dep = NEW) -> tuple[ReleaseAware, Railway]:
    """The wrapped source, with Railway listing v3, v2 and v1, and ``active`` (v2) active."""
    railway = Railway(View((NEXT, NEW, OLD), active))
    return ReleaseAware(answers, railway, "web"), railway


async def test_the_active_deployments_answer_is_attributed_to_it() -> None:
    source, railway = aware(Answers(value=0.0))
    (sample,) = await source.collect(1.0)
    assert (sample.value, sample.reason) == (0.0, "status 500 (expected 2xx)")
    assert sample.detail["deployment"] == NEW.id
    assert (sample.detail["commit"], sample.detail["release"]) == (NEW.commit, "v2")
    assert railway.refreshes == 0
    assert answered_by(sample, NEW.id)
    assert not answered_by(sample, OLD.id)


@pytest.mark.parametrize("echo", [NEW.commit, NEW.commit[:7], NEW.commit.upper()])
async def test_a_commit_echo_is_attributed_to_the_active_deployment_of_that_commit(
    echo: str,
) -> None:
    source, _ = aware(Answers(echoed=echo))
    (sample,) = await source.collect(1.0)
    assert (sample.value, sample.detail["deployment"]) == (1.0, NEW.id)


@pytest.mark.parametrize(
    ("echo", "active", "reason"),
    [
        # Too short to be taken for a commit: it could be the prefix of anything.
        (NEW.commit[:6], NEW, "answered by 'bbbbbb', which is neither the active deployment"),
        # An image deploy has no commit: the one that matches is another deployment's.
        (NEW.commit, Dep("dep-image", 250.0, ""), "by commit bbbbbbb (v2), not the active"),
    ],
)
async def test_a_commit_echo_that_cannot_be_matched_is_unknown(
    echo: str, active: Dep, reason: str
) -> None:
    source, _ = aware(Answers(echoed=echo), active)
    (sample,) = await source.collect(1.0)
    assert sample.value is None
    assert reason in sample.reason


async def test_the_replaced_deployments_failing_answer_is_unknown_not_a_breach() -> None:
    source, railway = aware(Answers(value=0.0, echoed=OLD.id))
    first, second = await source.collect(1.0), await source.collect(2.0)
    (sample,) = first
    assert sample.value is None
    assert sample.reason == (
        "answered by deployment dep-old (v1), not the active deployment dep-new (v2) "
        "(overlap: the deployment it replaced still answers)"
    )
    assert (sample.detail["deployment"], sample.detail["active"]) == (OLD.id, NEW.id)
    assert sample.detail["status"] == 500  # what it answered is kept as evidence
    assert second[0].value is None
    assert railway.refreshes == 1  # one early poll, not one per answer
    assert not answered_by(sample, OLD.id)


async def test_the_replaced_releases_commit_is_unknown_too() -> None:
    source, _ = aware(Answers(echoed=OLD.commit[:10]))
    (sample,) = await source.collect(1.0)
    assert sample.value is None
    assert sample.reason.startswith("answered by commit aaaaaaa (v1), not the active deployment")


async def test_an_echo_railway_never_listed_is_unknown_and_asks_for_a_poll() -> None:
    source, railway = aware(Answers(echoed="dep-unheard-of"))
    (sample,) = await source.collect(1.0)
    assert sample.value is None
    assert "answered by 'dep-unheard-of', which is neither the active deployment" in sample.reason
    assert railway.refreshes == 1


async def test_a_newer_deployment_answering_means_the_view_is_behind() -> None:
    answers = Answers(echoed=NEXT.id)
    source, railway = aware(answers)
    (newer,) = await source.collect(1.0)
    assert newer.value is None
    assert "(newer than the active one at the last poll)" in newer.reason
    answers.echoed = NEW.id  # the deployment Railway's last poll calls active answers again
    (stale,) = await source.collect(2.0)
    assert stale.value is None
    assert "but the newer dep-next (v3) answers too" in stale.reason
    assert railway.refreshes == 1
    assert railway.view is not None
    railway.view = View(railway.view.deployments, NEXT)  # the next poll sees dep-next live
    answers.echoed = NEXT.id
    (attributed,) = await source.collect(3.0)
    assert (attributed.value, attributed.detail["deployment"]) == (1.0, NEXT.id)


async def test_before_the_first_poll_the_answer_is_unattributed_and_judged() -> None:
    source, railway = aware(Answers(value=0.0, echoed=OLD.id))
    railway.view = None
    (sample,) = await source.collect(1.0)
    assert sample.value == 0.0
    assert sample.detail["unattributed"] == "Railway's active deployment is not known yet"
    assert not answered_by(sample, NEW.id)


async def test_an_answer_without_an_echo_passes_as_it_is() -> None:
    answers = Answers(value=0.0, echoed=None)
    source, _ = aware(answers)
    (sample,) = await source.collect(1.0)
    assert sample.value == 0.0
    assert "deployment" not in sample.detail
    assert not answered_by(sample, NEW.id)


async def test_other_signals_pass_untouched() -> None:
    rate = Sample(Signal.ERROR_RATE, 1.0, 0.5)
    answers = Answers(echoed=OLD.id, signals=frozenset({Signal.HEALTH, Signal.ERROR_RATE}))
    answers.more.append(rate)
    source, _ = aware(answers)
    assert source.signals == answers.signals
    health, other = await source.collect(1.0)
    assert health.value is None
    assert other is rate
