"""The admin API under ``/api/v1/``, mounted by the server (the webhook: monitor/webhook.py).

Admin API (JSON, ``Authorization: Bearer $RAILGUARD_ADMIN_TOKEN``; disabled without a token)::

    GET  /api/v1/status                      status() plus releases, freezes, rollbacks, events
    POST /api/v1/services/{name}/rollback    {"reason", "to"?, "confirm": "CONFIRM"} -> 202
    GET  /api/v1/rollbacks/{id}              one rollback's progress
    POST /api/v1/services/{name}/freeze      {"reason", "until"?: ISO time or "2h"}
    POST /api/v1/services/{name}/unfreeze    {"reason"}

Errors are ``{"error": "..."}``: 400 bad body (names the field), 401 bad token, 403 API
disabled, 404 unknown service or rollback, 409 refused (the message says why).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import structlog
from aiohttp import web

from monitor.clock import Clock
from monitor.configtypes import DurationTooLong, parse_duration, shown
from monitor.errors import RailguardError
from monitor.events import EventKind, FreezeEvent, write_event
from monitor.plan import Plan, ServicePlan, has_railway_ids
from monitor.tasks import Background
from monitor.telemetry import Metrics

if TYPE_CHECKING:
    from monitor.executor import RollbackExecutor
    from monitor.railway.client import Deployment
    from monitor.railway.poller import RailwayPoller
    from monitor.store import FreezeRecord, RollbackRecord, Store

log = structlog.get_logger("railguard.admin")

CONFIRM = "CONFIRM"
MAX_TEXT = 1000
MAX_BODY_BYTES = 64 * 1024
"""An admin request's body is a few short fields: anything larger is refused (413)."""
MAX_ROLLBACK_ID = 2**63 - 1  # SQLite's largest integer: no rollback has a larger id
INTENT_WAIT = 15.0  # seconds a rollback request waits for the executor to write its intent
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Administered(Protocol):
    """What the admin API asks of the daemon."""

    @property
    def plan(self) -> Plan: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def store(self) -> Store | None: ...
    @property
    def executor(self) -> RollbackExecutor | None: ...
    @property
    def poller(self) -> RailwayPoller | None: ...

    def status(self) -> dict[str, object]:
        """Every service's state, JSON-ready."""
        ...


class Problem(Exception):
    """An admin request that cannot be served: answered ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """The admin API's error answer."""
    return web.json_response({"error": message}, status=status, headers=headers)


def rollback_json(r: RollbackRecord, *, full: bool = False) -> dict[str, Any]:
    """A rollback as the API shows it (``full``: every column, with the evidence)."""
    out: dict[str, Any] = {
        "id": r.id,
        "service": r.service,
        "state": r.state,
        "finished": r.finished,
        "from": r.from_deployment,
        "to": r.to_deployment,
        "trigger": r.trigger,
        "actor": r.actor,
        "reason": r.reason,
        "decided_at": r.decided_at,
        "finished_at": r.finished_at,
        "error": r.error,
    }
    if full:
        out |= {
            "rule": r.rule,
            "dry_run": r.dry_run,
            "new_deployment": r.new_deployment,
            "sent_at": r.sent_at,
            "deploying_at": r.deploying_at,
            "live_at": r.live_at,
            "recovered_at": r.recovered_at,
            "evidence": r.evidence,
        }
    return out


def deployment_json(d: Deployment) -> dict[str, Any]:
    """A Railway deployment as the API shows it."""
    return {"id": d.id, "status": d.status, "created_at": d.created_at, "meta": dict(d.meta)}


def freeze_json(f: FreezeRecord | None) -> dict[str, Any] | None:
    """A freeze as the API shows it."""
    if f is None:
        return None
    return {"reason": f.reason, "actor": f.actor, "at": f.at, "until": f.until}


LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()


def parse_until(text: str, now: float) -> float:
    """``"2h"`` (from now) or an ISO time (UTC unless it says otherwise) -> Unix seconds."""
    try:
        until = now + parse_duration(text)
    except DurationTooLong:
        raise Problem(
            400, f"until: {shown(text)} is too far away (use no until: frozen until unfrozen)"
        ) from None
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise Problem(
                400,
                f"until: not a time or a duration: {shown(text)} (an ISO time such as "
                '"2030-01-01T12:00:00Z", or a duration such as "2h")',
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        until = moment.timestamp()
    if until <= now:
        raise Problem(400, f"until: {shown(text)} is not in the future")
    if not until < LATEST:
        raise Problem(
            400, f"until: {shown(text)} is too far away (use no until: frozen until unfrozen)"
        )
    return until


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request's body, refused with a 413 as soon as it is known to exceed ``limit``."""
    if (request.content_length or 0) > limit:
        raise Problem(413, f"body: larger than {limit} bytes")
    raw = bytearray()
    while chunk := await request.content.readany():
        raw += chunk
        if len(raw) > limit:  # no Content-Length, or a false one: counted as it comes
            raise Problem(413, f"body: larger than {limit} bytes")
    return bytes(raw)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(request: web.Request, raw: bytes) -> Any:
    """Strict JSON from a request body: UTF-8, no NaN or Infinity, not absurdly nested.

    Raises :class:`Problem` (400, or 415 for a charset other than UTF-8) naming what is wrong.
    """
    charset = (request.charset or "utf-8").lower().replace("_", "-")
    if charset not in ("utf-8", "utf8"):
        raise Problem(415, f"Content-Type: charset {shown(charset)} is not supported: send UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Problem(400, f"body: not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise Problem(400, "body: JSON nested too deeply") from None
    except ValueError as e:
        raise Problem(400, f"body: not valid JSON ({shown(str(e))})") from None


async def read_body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request's JSON object; unknown fields and non-objects are 400s."""
    raw = await read_limited(request, MAX_BODY_BYTES)
    body = parse_json(request, raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise Problem(400, f"body: expected a JSON object (got a JSON {type(body).__name__})")
    unknown = sorted(set(body) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise Problem(400, f"{shown(unknown[0])[1:-1]}: unknown field (known: {known})")
    return body


def _utf8(text: str) -> bool:
    """Whether ``text`` can be stored and logged (JSON's ``\\ud800`` escapes cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_field(body: Mapping[str, Any], key: str) -> str | None:
    """An optional non-empty string field, stripped."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Problem(400, f"{key}: expected a non-empty string (got {shown(value)})")
    if len(value) > MAX_TEXT:
        raise Problem(400, f"{key}: longer than {MAX_TEXT} characters")
    if not _utf8(value):
        raise Problem(400, f"{key}: not valid Unicode (a lone surrogate such as \\ud800)")
    return value.strip()


def required_text(body: Mapping[str, Any], key: str) -> str:
    """A required non-empty string field, stripped."""
    value = text_field(body, key)
    if value is None:
        raise Problem(400, f"{key}: required (a non-empty string)")
    return value


def actor_of(request: web.Request) -> str:
    """Who asked, for the audit log: ``manual:<X-Railguard-Actor or admin-api>``."""
    raw = request.headers.get("X-Railguard-Actor", "")
    name = "".join(c for c in raw if c.isprintable()).strip()[:64]
    return f"manual:{name or 'admin-api'}"


class AdminAPI:
    """The admin routes and the webhook for one daemon."""

    def __init__(self, daemon: Administered) -> None:
        env = daemon.plan.env
        self.daemon = daemon
        self._token = env.admin_token.get_secret_value().encode() if env.admin_token else None
        self._tasks = Background("manual rollback")

    def mount(self, app: web.Application) -> None:
        """Add ``/api/v1/`` (its own auth middleware) to ``app``."""
        api = web.Application(middlewares=[self._guard])
        api.router.add_get("/status", self.status)
        api.router.add_post("/services/{name}/rollback", self.rollback)
        api.router.add_get("/rollbacks/{id}", self.rollback_progress)
        api.router.add_post("/services/{name}/freeze", self.freeze)
        api.router.add_post("/services/{name}/unfreeze", self.unfreeze)
        app.add_subapp("/api/v1", api)
        app.on_shutdown.append(self._shutdown)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None:
            return error(403, "the admin API is disabled: set RAILGUARD_ADMIN_TOKEN")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        presented = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token):
            # The header is never logged: a wrong token is often a right one for elsewhere.
            log.warning("admin API: unauthorized", path=request.path, remote=request.remote)
            return error(401, "a valid bearer token is needed", {"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except Problem as e:
            return error(e.status, e.message)
        except web.HTTPException as e:  # no such route, or not this method: JSON like the rest
            if e.status < 400:
                raise
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return error(e.status, f"{shown(request.path)}: {e.reason.lower()}", allow)

    async def _shutdown(self, _app: web.Application) -> None:
        # Unfinished rollbacks are reconciled at the next start, like automatic ones.
        await self._tasks.cancel()

    # -- helpers -------------------------------------------------------------------------

    def _service(self, name: str) -> ServicePlan:
        plan, executor = self.daemon.plan, self.daemon.executor
        service = next((s for s in plan.services if s.name == name), None)
        if service is None and executor is not None:  # a PR environment's, while it lives
            service = executor.services.get(name)
        if service is None:
            raise Problem(404, f"no service named {shown(name)}")
        if not has_railway_ids(service.config):
            raise Problem(
                409,
                f"{name} has no Railway ids (service_id, environment_id): railguard only "
                "watches it, it cannot roll it back or freeze it",
            )
        return service

    def _store(self) -> Store:
        if self.daemon.store is None:
            raise Problem(503, "railguard is not started yet")
        return self.daemon.store

    # -- routes --------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        """The daemon's status, each Railway service with its releases and decisions."""
        daemon = self.daemon
        status = daemon.status()
        railway = {s.name: s for s in daemon.plan.railway_services}
        if daemon.executor is not None:  # PR environments' services too
            railway |= daemon.executor.services
        now = daemon.clock.time()
        for entry in cast(list[dict[str, Any]], status.get("services", [])):
            service = railway.get(entry["name"])
            entry["railway"] = None if service is None else await self._releases(service, now)
        return web.json_response(status)

    async def _releases(self, service: ServicePlan, now: float) -> dict[str, Any]:
        store, name = self._store(), service.name
        snapshot = self.daemon.poller.latest(name) if self.daemon.poller else None
        active = snapshot.active if snapshot is not None else None
        frozen = await store.frozen(name, now)
        # The gauge follows expiry too, which nothing else would notice.
        self.daemon.metrics.frozen.labels(name, service.tier).set(int(frozen is not None))
        from monitor.releases import Verdicts  # loaded already: Railway services exist

        records = await store.deployments(name, limit=200)
        verdicts = Verdicts.of(records)
        good = [d.id for d in records if verdicts.known_good(d)]
        return {
            "active": None if active is None else deployment_json(active),
            "known_good": good,
            "frozen": freeze_json(frozen),
            "rollbacks": [rollback_json(r) for r in await store.rollbacks(name, limit=5)],
            "events": [
                {"kind": e.kind, "at": e.at, "data": e.data}
                for e in await store.events(name, limit=10)
            ],
        }

    async def rollback(self, request: web.Request) -> web.Response:
        """Start a manual rollback: 202 once its intent is written, 200 if already over."""
        service = self._service(request.match_info["name"])
        body = await read_body(request, frozenset({"reason", "to", "confirm"}))
        if body.get("confirm") != CONFIRM:
            got = shown(body.get("confirm"))
            raise Problem(400, f'confirm: must be exactly "CONFIRM" (got {got})')
        reason, to = required_text(body, "reason"), text_field(body, "to")
        store, executor = self._store(), self.daemon.executor
        if executor is None:
            raise Problem(503, "railguard is not started yet")
        running = await store.rollbacks(service.name, unfinished=True, limit=1)
        if running:
            raise Problem(
                409,
                f"rollback #{running[0].id} of {service.name} is {running[0].state}: "
                "wait for it to finish",
            )
        newest = await store.rollbacks(service.name, limit=1)
        after = newest[0].id if newest else 0
        actor = actor_of(request)
        log.warning("manual rollback requested", service=service.name, actor=actor, to=to)
        task = self._tasks.spawn(executor.rollback(service.name, reason=reason, actor=actor, to=to))
        record = await self._intent(task, service.name, after, actor)
        if record is None:  # the executor is still busy deciding another rollback
            busy = f"queued behind other work on {service.name}: see railguard status"
            return web.json_response(
                {"rollback": None, "state": "queued", "message": busy}, status=202
            )
        answer = {"rollback": record.id, "state": record.state, "record": rollback_json(record)}
        return web.json_response(answer, status=200 if record.finished else 202)

    async def _intent(
        self, task: asyncio.Task[RollbackRecord], name: str, after: int, actor: str
    ) -> RollbackRecord | None:
        """The rollback ``task`` recorded, as soon as it exists (None if it takes too long)."""
        from monitor.executor import RollbackRefused  # loaded already: an executor exists

        store, clock = self._store(), self.daemon.clock
        deadline = clock.monotonic() + INTENT_WAIT
        while not task.done():
            for r in await store.rollbacks(name, limit=5):
                if r.id > after and r.trigger == "manual" and r.actor == actor:
                    return r
            if clock.monotonic() > deadline:
                return None
            # Waiting for the executor's I/O (Railway, the store), not for time to pass.
            await asyncio.sleep(0.01)
        try:
            return task.result()
        except RollbackRefused as e:
            raise Problem(409, str(e)) from None
        except RailguardError as e:
            raise Problem(502, f"the rollback could not start: {e}") from None

    async def rollback_progress(self, request: web.Request) -> web.Response:
        """One rollback, every column."""
        text = request.match_info["id"]
        if not (text.isascii() and text.isdigit()):  # "١٢٣" is digits to isdigit() alone
            raise Problem(400, f"id: not a rollback number: {shown(text)}")
        number = int(text[:30])  # longer is too large anyway, and int() of a huge text is slow
        if len(text) > 30 or number > MAX_ROLLBACK_ID:
            raise Problem(404, f"no rollback #{shown(text)[1:-1]}: too large to be a rollback id")
        record = await self._store().rollback(number)
        if record is None:
            raise Problem(404, f"no rollback #{number}")
        return web.json_response(rollback_json(record, full=True))

    async def freeze(self, request: web.Request) -> web.Response:
        """Hold automatic rollback of a service back, until a time or until unfrozen."""
        service = self._service(request.match_info["name"])
        body = await read_body(request, frozenset({"reason", "until"}))
        reason, until_text = required_text(body, "reason"), text_field(body, "until")
        store, now, actor = self._store(), self.daemon.clock.time(), actor_of(request)
        until = None if until_text is None else parse_until(until_text, now)
        record = await store.freeze(service.name, reason, actor, now, until)
        event = FreezeEvent(kind=EventKind.FROZEN, reason=reason, actor=actor, until=until)
        await write_event(store, service.name, event, now)
        self.daemon.metrics.frozen.labels(service.name, service.tier).set(1)
        log.warning("automatic rollback frozen", service=service.name, **event.to_dict())
        return web.json_response({"service": service.name, "frozen": freeze_json(record)})

    async def unfreeze(self, request: web.Request) -> web.Response:
        """Lift a service's freeze (answers ``"unfrozen": false`` if there was none)."""
        service = self._service(request.match_info["name"])
        body = await read_body(request, frozenset({"reason"}))
        reason = required_text(body, "reason")
        store, now, actor = self._store(), self.daemon.clock.time(), actor_of(request)
        removed = await store.unfreeze(service.name)
        self.daemon.metrics.frozen.labels(service.name, service.tier).set(0)
        if removed is not None:
            was = freeze_json(removed)
            event = FreezeEvent(kind=EventKind.UNFROZEN, reason=reason, actor=actor, was=was)
            await write_event(store, service.name, event, now)
            log.warning("automatic rollback unfrozen", service=service.name, actor=actor)
        answer = {"service": service.name, "unfrozen": removed is not None}
        return web.json_response(answer | {"was": freeze_json(removed)})
