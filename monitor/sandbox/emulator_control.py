"""The emulator's control API under ``/_emulator/``: not Railway's, for tests and the demo.

JSON in, JSON out, camelCase keys like Railway's. A bad body answers 400 and a missing
project/service/deployment 404, both as ``{"errors": [{"field": ..., "message": ...}]}``.
Times (``createdAt``, ``at``) are Unix seconds or ISO 8601 (naive means UTC); ``at``
defaults to now on the emulator's clock. A POST that succeeds answers 201.

    GET    state                 the whole world
    POST   projects              {name, id?}
    POST   environments          {projectId, name, id?, ephemeral=false} (true: a PR environment)
    DELETE environments/{id}     a PR closed: the environment goes, with its deployments
    POST   services              {projectId, name, id?}
    POST   deployments           {serviceId, environmentId, status=SUCCESS, active?,
                                  canRollback=true, meta={}, createdAt?, staticUrl?,
                                  replicas=1, id?}
    PATCH  deployments/{id}      {status?, canRollback?}  (SLEEPING: a serverless sleep, which
                                 the sandbox's app follows; the request that wakes the app
                                 makes it SUCCESS again)
    POST   retention             {hours} images are kept this long after their deployment was
                                 created (null: for ever, the default); older deployments'
                                 canRollback is false (see emulator_images)
    POST   crash-loops           {deploymentId, period=5, maxRestarts=10 (null: for ever)}
                                 the live deployment's process exits every period seconds
    DELETE crash-loops/{deploymentId}  ends its crash loop (200 whether or not one ran)
    POST   memory                {deploymentId, usageGb, limitGb, at?}
    POST   metrics               {deploymentId, measurement, value, at?}
    POST   http                  {serviceId, environmentId, statusCode, count, at?, latencyMs=50}
    POST   traffic               {serviceId, environmentId, rps, errorRatio=0, errorStatus=500, at?,
                                  latencyMs=50, latencySigma=0.5} (log-normal request durations)
    GET    faults / POST faults  {latency, errorStatus, errorCount, errorRatio, dropCount,
                                  dropAfterCount, faultOperations, rateLimit, rateWindow,
                                  deployOutcome, resetUnit} (POST: only keys given)
    POST   tokens                {token?} an account token, or {token?, projectId, environmentId}
    GET    platform / POST       Railway's own status (emulator_platform); POST {stable, error}
    POST   platform/incident     {message, status=INVESTIGATING, url?, id?, at?}; DELETE: closed
    POST   platform/maintenance  {message, status=INPROGRESS, url?, id?, at?}; DELETE: ended
    GET    requests / DELETE     the request and mutation log (DELETE clears it)

A deployment is active by default when its status is SUCCESS; making one active REMOVEs the
one it replaces, as Railway does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from monitor.sandbox.emulator_model import (
    DEFAULT_LATENCY_MS,
    DEFAULT_LATENCY_SIGMA,
    EmulatorError,
    EmulatorNotFound,
)

if TYPE_CHECKING:
    from monitor.sandbox.railway_emulator import RailwayEmulator

B = TypeVar("B", bound="Body")
DAY_MS = 86_400_000.0
Time = float | datetime


class Body(BaseModel):
    """Base of the control API's bodies: camelCase keys, unknown keys refused."""

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, validate_assignment=True
    )


class Faults(Body):
    """Faults the emulator injects into ``/graphql/v2``; change them at any time.

    ``drop_count`` drops a request before anything runs: Railway never saw it.
    ``drop_after_count`` runs it first (a mutation is applied and logged as such), then drops
    the answer: the client cannot tell which of the two happened, as with a real timeout.
    ``fault_operations`` aims the error and drop faults (the counts and ``error_ratio``) at
    requests whose GraphQL operation name is listed, e.g. ``["DeploymentRollback"]``; other
    requests pass untouched and use up no count. None aims them at every request. Latency
    and the rate limit always apply to every request.
    """

    latency: float = Field(0.0, ge=0, description="seconds added before answering (on the clock)")
    error_status: int = Field(503, ge=429, le=599, description="429 or a 5xx")
    error_count: int = Field(0, ge=0, description="the next N requests get error_status")
    error_ratio: float = Field(0.0, ge=0, le=1, description="then this share of requests does")
    drop_count: int = Field(0, ge=0, description="the next N requests close unanswered, unrun")
    drop_after_count: int = Field(
        0, ge=0, description="the next N requests run, mutations applied, then close unanswered"
    )
    fault_operations: list[str] | None = Field(
        None, min_length=1, description="operation names the error and drop faults hit (None: all)"
    )
    rate_limit: int = Field(1000, ge=1, description="requests per window per token (Hobby)")
    rate_window: float = Field(3600.0, gt=0, description="seconds")
    deploy_outcome: Literal["SUCCESS", "FAILED", "CRASHED"] = "SUCCESS"
    reset_unit: Literal["unix", "seconds", "unix_ms"] = Field(
        "unix", description="X-RateLimit-Reset as Unix seconds, seconds until, or Unix ms"
    )


class NameBody(Body):
    """A project to create."""

    name: str = Field(min_length=1)
    id: str | None = None


class ChildBody(NameBody):
    """An environment or service to create in a project."""

    project_id: str


class EnvironmentBody(ChildBody):
    """An environment to create; ``ephemeral``: a PR environment."""

    ephemeral: bool = False


class DeploymentBody(Body):
    """A deployment to record."""

    service_id: str
    environment_id: str
    status: str = "SUCCESS"
    active: bool | None = None
    can_rollback: bool = True
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: Time | None = None
    static_url: str | None = None
    replicas: int = Field(1, ge=1)
    id: str | None = None


class DeploymentPatch(Body):
    """Changes to a deployment."""

    status: str | None = None
    can_rollback: bool | None = None


class RetentionBody(Body):
    """How long images are kept (hours; None: for ever)."""

    hours: float | None = Field(gt=0, allow_inf_nan=False)


class CrashLoopBody(Body):
    """A live deployment's process exiting every ``period`` seconds (see EmulatorModel)."""

    deployment_id: str
    period: float = Field(5.0, gt=0, allow_inf_nan=False)
    max_restarts: int | None = Field(10, ge=0, description="None: restarted for ever")


class MemoryBody(Body):
    """Memory usage and limit of a deployment from a time on."""

    deployment_id: str
    usage_gb: float = Field(ge=0)
    limit_gb: float = Field(gt=0)
    at: Time | None = None


class MetricBody(Body):
    """Any measurement of a deployment from a time on."""

    deployment_id: str
    measurement: str
    value: float
    at: Time | None = None


class HttpBody(Body):
    """Requests a service answered with one status code."""

    service_id: str
    environment_id: str
    status_code: int = Field(ge=100, le=599)
    count: float = Field(ge=0)
    at: Time | None = None
    latency_ms: float = Field(DEFAULT_LATENCY_MS, gt=0, le=DAY_MS)


class TrafficBody(Body):
    """Steady traffic to a service from a time on."""

    service_id: str
    environment_id: str
    rps: float = Field(ge=0)
    error_ratio: float = Field(0.0, ge=0, le=1)
    error_status: int = Field(500, ge=500, le=599)
    at: Time | None = None
    latency_ms: float = Field(DEFAULT_LATENCY_MS, gt=0, le=DAY_MS, description="median")
    latency_sigma: float = Field(DEFAULT_LATENCY_SIGMA, ge=0, le=5, description="log spread")


class PlatformBody(Body):
    """Railway's own state (emulator_platform.Platform); only the keys given change."""

    stable: bool | None = None
    error: str | None = Field(None, min_length=1)


class NoticeBody(Body):
    """An incident or a maintenance on Railway's status page."""

    message: str = Field(min_length=1)
    status: str | None = None
    url: str | None = None
    id: str | None = Field(None, min_length=1)
    at: Time | None = None


class TokenBody(Body):
    """An account token, or a project token when projectId and environmentId are given."""

    token: str | None = Field(None, min_length=1)
    project_id: str | None = None
    environment_id: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TokenBody:
        if (self.project_id is None) != (self.environment_id is None):
            missing = "environmentId" if self.environment_id is None else "projectId"
            raise ValueError(
                f"a project token needs projectId and environmentId; {missing} missing"
            )
        return self


def unix(at: Time | None) -> float | None:
    """A control API time (Unix seconds or ISO 8601, naive = UTC) as Unix seconds."""
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return at


def camel(obj: Any) -> dict[str, Any]:
    """A model dataclass as JSON with camelCase keys."""
    return {to_camel(k): v for k, v in dataclasses.asdict(obj).items()}


def _errors(status: int, errors: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"errors": errors}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OK = {"ok": True}


def _endpoint(body_type: type[B], action: Callable[[B, web.Request], Any]) -> Handler:
    """A handler validating the JSON body as ``body_type`` before calling ``action``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.json() if request.can_read_body else {}
        except ValueError:
            return _errors(400, [{"field": None, "message": "body must be JSON"}])
        try:
            body = body_type.model_validate(raw)
        except ValidationError as error:
            problems = [
                {"field": ".".join(map(str, e["loc"])) or None, "message": e["msg"]}
                for e in error.errors()
            ]
            return _errors(400, problems)
        try:
            result = action(body, request)
        except EmulatorNotFound as error:
            return _errors(404, [{"field": error.field, "message": error.message}])
        except EmulatorError as error:
            return _errors(400, [{"field": error.field, "message": error.message}])
        return web.json_response(result, status=201 if request.method == "POST" else 200)

    return handle


def _reader(read: Callable[[], Any]) -> Handler:
    async def handle(_request: web.Request) -> web.StreamResponse:
        return web.json_response(read())

    return handle


def control_routes(emu: RailwayEmulator) -> list[web.RouteDef]:
    """The routes of the control API for ``emu``."""

    def add_project(b: NameBody, _: web.Request) -> dict[str, Any]:
        return camel(emu.add_project(b.name, id=b.id))

    def add_environment(b: EnvironmentBody, _: web.Request) -> dict[str, Any]:
        return camel(emu.add_environment(b.project_id, b.name, id=b.id, ephemeral=b.ephemeral))

    def delete_environment(_b: Body, request: web.Request) -> dict[str, Any]:
        return camel(emu.delete_environment(request.match_info["id"]))

    def add_service(b: ChildBody, _: web.Request) -> dict[str, Any]:
        return camel(emu.add_service(b.project_id, b.name, id=b.id))

    def add_deployment(b: DeploymentBody, _: web.Request) -> dict[str, Any]:
        d = emu.add_deployment(
            b.service_id,
            b.environment_id,
            status=b.status,
            active=b.active,
            can_rollback=b.can_rollback,
            meta=b.meta,
            created_at=unix(b.created_at),
            static_url=b.static_url,
            replicas=b.replicas,
            id=b.id,
        )
        return camel(d)

    def patch_deployment(b: DeploymentPatch, request: web.Request) -> dict[str, Any]:
        deployment_id = request.match_info["id"]
        return camel(
            emu.set_deployment(deployment_id, status=b.status, can_rollback=b.can_rollback)
        )

    def set_retention(b: RetentionBody, _: web.Request) -> dict[str, Any]:
        return {"hours": emu.set_image_retention(b.hours).hours}

    def start_crash_loop(b: CrashLoopBody, _: web.Request) -> dict[str, Any]:
        d = emu.crash_loop(b.deployment_id, period=b.period, max_restarts=b.max_restarts)
        return camel(d)

    def stop_crash_loop(_b: Body, request: web.Request) -> dict[str, Any]:
        return camel(emu.stop_crash_loop(request.match_info["deploymentId"]))

    def set_memory(b: MemoryBody, _: web.Request) -> dict[str, Any]:
        emu.set_memory(b.deployment_id, b.usage_gb, b.limit_gb, at=unix(b.at))
        return OK

    def set_metric(b: MetricBody, _: web.Request) -> dict[str, Any]:
        emu.set_metric(b.deployment_id, b.measurement, b.value, at=unix(b.at))
        return OK

    def record_http(b: HttpBody, _: web.Request) -> dict[str, Any]:
        emu.record_http(
            b.service_id,
            b.environment_id,
            b.status_code,
            b.count,
            at=unix(b.at),
            latency_ms=b.latency_ms,
        )
        return OK

    def set_traffic(b: TrafficBody, _: web.Request) -> dict[str, Any]:
        emu.set_traffic(
            b.service_id,
            b.environment_id,
            b.rps,
            error_ratio=b.error_ratio,
            error_status=b.error_status,
            at=unix(b.at),
            latency_ms=b.latency_ms,
            latency_sigma=b.latency_sigma,
        )
        return OK

    def set_faults(b: _FaultsPatch, _: web.Request) -> dict[str, Any]:
        return emu.set_faults(**b.model_dump(exclude_unset=True)).model_dump(by_alias=True)

    def add_token(b: TokenBody, _: web.Request) -> dict[str, Any]:
        if b.project_id is None or b.environment_id is None:
            return {"token": emu.add_token(b.token), "scope": "account"}
        token = emu.add_project_token(b.project_id, b.environment_id, token=b.token)
        return {"token": token, "scope": "project"}

    def set_platform(b: PlatformBody, _: web.Request) -> dict[str, Any]:
        for key, value in b.model_dump(exclude_unset=True).items():
            setattr(emu.platform, key, value)
        return emu.platform.state()

    def open_incident(b: NoticeBody, _: web.Request) -> dict[str, Any]:
        status = b.status or "INVESTIGATING"
        emu.platform.open_incident(b.message, status=status, url=b.url, id=b.id, at=unix(b.at))
        return emu.platform.state()

    def start_maintenance(b: NoticeBody, _: web.Request) -> dict[str, Any]:
        status = b.status or "INPROGRESS"
        emu.platform.start_maintenance(b.message, status=status, url=b.url, id=b.id, at=unix(b.at))
        return emu.platform.state()

    def ending(end: Callable[[], None]) -> Callable[[Body, web.Request], dict[str, Any]]:
        def action(_b: Body, _r: web.Request) -> dict[str, Any]:
            end()
            return emu.platform.state()

        return action

    def log() -> dict[str, Any]:
        return {
            "requests": [camel(r) for r in emu.requests],
            "mutations": [camel(m) for m in emu.mutations],
        }

    async def clear_log(_request: web.Request) -> web.StreamResponse:
        emu.requests.clear()
        emu.mutations.clear()
        return web.json_response(log())

    root = "/_emulator"
    return [
        web.get(f"{root}/state", _reader(emu.state)),
        web.post(f"{root}/projects", _endpoint(NameBody, add_project)),
        web.post(f"{root}/environments", _endpoint(EnvironmentBody, add_environment)),
        web.delete(f"{root}/environments/{{id}}", _endpoint(Body, delete_environment)),
        web.post(f"{root}/services", _endpoint(ChildBody, add_service)),
        web.post(f"{root}/deployments", _endpoint(DeploymentBody, add_deployment)),
        web.patch(f"{root}/deployments/{{id}}", _endpoint(DeploymentPatch, patch_deployment)),
        web.post(f"{root}/retention", _endpoint(RetentionBody, set_retention)),
        web.post(f"{root}/crash-loops", _endpoint(CrashLoopBody, start_crash_loop)),
        web.delete(f"{root}/crash-loops/{{deploymentId}}", _endpoint(Body, stop_crash_loop)),
        web.post(f"{root}/memory", _endpoint(MemoryBody, set_memory)),
        web.post(f"{root}/metrics", _endpoint(MetricBody, set_metric)),
        web.post(f"{root}/http", _endpoint(HttpBody, record_http)),
        web.post(f"{root}/traffic", _endpoint(TrafficBody, set_traffic)),
        web.get(f"{root}/faults", _reader(lambda: emu.faults.model_dump(by_alias=True))),
        web.post(f"{root}/faults", _endpoint(_FaultsPatch, set_faults)),
        web.post(f"{root}/tokens", _endpoint(TokenBody, add_token)),
        web.get(f"{root}/platform", _reader(emu.platform.state)),
        web.post(f"{root}/platform", _endpoint(PlatformBody, set_platform)),
        web.post(f"{root}/platform/incident", _endpoint(NoticeBody, open_incident)),
        web.delete(
            f"{root}/platform/incident", _endpoint(Body, ending(emu.platform.close_incident))
        ),
        web.post(f"{root}/platform/maintenance", _endpoint(NoticeBody, start_maintenance)),
        web.delete(
            f"{root}/platform/maintenance", _endpoint(Body, ending(emu.platform.end_maintenance))
        ),
        web.get(f"{root}/requests", _reader(log)),
        web.delete(f"{root}/requests", clear_log),
    ]


class _FaultsPatch(Faults):
    """A partial update of the faults: only the keys given change."""
