"""The Railway emulator's in-memory world: projects, services, deployments and their signals.

Everything here is plain data plus the deployment lifecycle (a rollback or redeploy walks a new
deployment through its statuses on the injected Clock). GraphQL lives in emulator_resolvers,
HTTP in railway_emulator.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from monitor.clock import Clock
from monitor.railway.schema import load_schema
from monitor.railway.statuses import LIVE
from monitor.sandbox.emulator_images import HOUR, ImageRetention
from monitor.sandbox.emulator_instances import CrashLoop, CrashLoops, Instance, reset_instances

# A new deployment's statuses before it settles, with how long each lasts (seconds).
DEFAULT_ROLLOUT: tuple[tuple[str, float], ...] = (
    ("INITIALIZING", 2.0),
    ("BUILDING", 10.0),
    ("DEPLOYING", 8.0),
)
T = TypeVar("T")


class EmulatorError(Exception):
    """A request to the model is not allowed; ``field`` names the offending input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class EmulatorNotFound(EmulatorError):
    """A request to the model names something that does not exist."""


@dataclass
class Project:
    """A Railway project."""

    id: str
    name: str
    created_at: float


@dataclass
class Environment:
    """An environment of a project (production, staging, a PR preview...)."""

    id: str
    project_id: str
    name: str
    created_at: float
    ephemeral: bool = False  # a PR environment: Railway creates and deletes it with the PR


@dataclass
class Service:
    """A service of a project; it has one instance per environment."""

    id: str
    project_id: str
    name: str
    created_at: float


def iso(ts: float) -> str:
    """Railway's DateTime form: UTC with milliseconds and a Z."""
    text = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


@dataclass
class Deployment:
    """One deployment of a service in an environment."""

    id: str
    project_id: str
    environment_id: str
    service_id: str
    status: str
    created_at: float
    updated_at: float
    seq: int
    can_rollback: bool = True
    meta: dict[str, Any] = field(default_factory=dict)
    static_url: str | None = None
    removed_at: float | None = None
    restarts: int = 0
    replicas: int = 1
    instances: list[Instance] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        reset_instances(self)


# How long requests take unless told (emulator_latency: a log-normal median and spread).
DEFAULT_LATENCY_MS = 50.0
DEFAULT_LATENCY_SIGMA = 0.5


@dataclass(frozen=True)
class Traffic:
    """Steady traffic to a service from ``start`` on, until the next Traffic replaces it.

    Its requests take log-normal times: median ``latency_ms``, spread ``latency_sigma``."""

    start: float
    rps: float
    error_ratio: float
    error_status: int
    latency_ms: float = DEFAULT_LATENCY_MS
    latency_sigma: float = DEFAULT_LATENCY_SIGMA


@dataclass(frozen=True)
class HttpCount:
    """``count`` requests answered with ``status`` at time ``at``, each in ``latency_ms``."""

    at: float
    status: int
    count: float
    latency_ms: float = DEFAULT_LATENCY_MS


def enum_values(name: str) -> frozenset[str]:
    """The values of one of the schema's enums (so the model accepts what Railway has)."""
    enum = load_schema().get_type(name)
    return frozenset(getattr(enum, "values", {}))


class EmulatorModel:
    """The emulated Railway account: state, its Python API, and deployment lifecycles."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int = 0,
        rollout: Sequence[tuple[str, float]] = DEFAULT_ROLLOUT,
    ) -> None:
        self.clock = clock
        self.rollout = tuple(rollout)
        self._rng = random.Random(seed)
        self._seq = 0
        self.projects: dict[str, Project] = {}
        self.environments: dict[str, Environment] = {}
        self.services: dict[str, Service] = {}
        self.deployments: dict[str, Deployment] = {}
        self.active: dict[tuple[str, str], str] = {}
        self.series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.http: dict[tuple[str, str], list[HttpCount]] = {}
        self.traffic: dict[tuple[str, str], list[Traffic]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._crash_loops = CrashLoops(clock, self._spawn, lambda d: self._set_status(d, "CRASHED"))
        # Called with the deployment that starts serving (the sandbox's apps follow it).
        self.on_activate: list[Callable[[Deployment], None]] = []
        # Called with a deployment Railway puts to sleep (the sandbox's apps sleep with it).
        self.on_sleep: list[Callable[[Deployment], None]] = []
        self.images = ImageRetention(clock)  # canRollback: how long images are kept
        # RAILWAY_DEPLOYMENT_OVERLAP_SECONDS per service id: how long a replaced deployment
        # keeps running (SUCCESS) after its replacement went live, before it is REMOVED.
        self.overlap: dict[str, float] = {}
        self._statuses = enum_values("DeploymentStatus")
        self._measurements = enum_values("MetricMeasurement")

    def new_id(self) -> str:
        """A UUID, reproducible from the seed so test failures replay."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- building the world ------------------------------------------------------------------

    def add_project(self, name: str, *, id: str | None = None) -> Project:
        """Create a project."""
        project = Project(id or self.new_id(), name, self.clock.time())
        self.projects[project.id] = project
        return project

    def add_environment(
        self, project_id: str, name: str, *, id: str | None = None, ephemeral: bool = False
    ) -> Environment:
        """Create an environment in a project (``ephemeral``: a PR environment)."""
        self.project(project_id)
        env = Environment(id or self.new_id(), project_id, name, self.clock.time(), ephemeral)
        self.environments[env.id] = env
        return env

    def delete_environment(self, environment_id: str) -> Environment:
        """Delete an environment with its deployments (a PR closed): asked about, Railway
        answers "Environment not found" from then on."""
        env = self.environment(environment_id)
        del self.environments[env.id]
        for deployment in [d for d in self.deployments.values() if d.environment_id == env.id]:
            self._crash_loops.stop(deployment)
            del self.deployments[deployment.id]
            self.active.pop((deployment.service_id, env.id), None)
        return env

    def add_service(self, project_id: str, name: str, *, id: str | None = None) -> Service:
        """Create a service in a project."""
        self.project(project_id)
        service = Service(id or self.new_id(), project_id, name, self.clock.time())
        self.services[service.id] = service
        return service

    def add_deployment(
        self,
        service_id: str,
        environment_id: str,
        *,
        status: str = "SUCCESS",
        active: bool | None = None,
        can_rollback: bool = True,
        meta: Mapping[str, Any] | None = None,
        created_at: float | None = None,
        static_url: str | None = None,
        replicas: int = 1,
        id: str | None = None,
    ) -> Deployment:
        """Record a deployment; by default a SUCCESS one becomes the active one."""
        service = self.service(service_id)
        env = self.environment(environment_id)
        if env.project_id != service.project_id:
            raise EmulatorError(
                f"environment {env.id} is not in the service's project", "environmentId"
            )
        self._check_status(status)
        if replicas < 1:
            raise EmulatorError("replicas must be at least 1", "replicas")
        when = self.clock.time() if created_at is None else created_at
        self._seq += 1
        deployment = Deployment(
            id=id or self.new_id(),
            project_id=service.project_id,
            environment_id=env.id,
            service_id=service.id,
            status=status,
            created_at=when,
            updated_at=when,
            seq=self._seq,
            can_rollback=can_rollback,
            meta=dict(meta or {}),
            static_url=static_url or f"{service.name}-{env.name}.up.railway.app",
            replicas=replicas,
        )
        self.deployments[deployment.id] = deployment
        if active if active is not None else status == "SUCCESS":
            self._activate(deployment, at=when)
        return deployment

    def set_deployment(
        self, deployment_id: str, *, status: str | None = None, can_rollback: bool | None = None
    ) -> Deployment:
        """Change a deployment's status (made CRASHED it stays active) or can_rollback."""
        deployment = self.deployment(deployment_id)
        if status is not None:
            self._check_status(status)
            self._set_status(deployment, status)
        if can_rollback is not None:
            deployment.can_rollback = can_rollback
        return deployment

    def set_image_retention(self, hours: float | None) -> ImageRetention:
        """Keep images ``hours`` after their deployment was created (None: for ever); an older
        deployment's ``canRollback`` is false (see emulator_images)."""
        if hours is not None and not (hours > 0 and math.isfinite(hours)):
            raise EmulatorError("hours must be a positive number (or null: for ever)", "hours")
        self.images.retention = None if hours is None else hours * HOUR
        return self.images

    def set_metric(
        self, deployment_id: str, measurement: str, value: float, *, at: float | None = None
    ) -> None:
        """A deployment's ``measurement`` is ``value`` from ``at`` (default now) on."""
        self.deployment(deployment_id)
        if measurement not in self._measurements:
            raise EmulatorError(f"unknown measurement {measurement!r}", "measurement")
        points = self.series.setdefault((deployment_id, measurement), [])
        bisect.insort(points, (self.clock.time() if at is None else at, value))

    def set_memory(
        self, deployment_id: str, usage_gb: float, limit_gb: float, *, at: float | None = None
    ) -> None:
        """Memory usage and limit of a deployment, from ``at`` (default now) on."""
        self.set_metric(deployment_id, "MEMORY_USAGE_GB", usage_gb, at=at)
        self.set_metric(deployment_id, "MEMORY_LIMIT_GB", limit_gb, at=at)

    def record_http(
        self,
        service_id: str,
        environment_id: str,
        status: int,
        count: float,
        *,
        at: float | None = None,
        latency_ms: float = DEFAULT_LATENCY_MS,
    ) -> None:
        """Record ``count`` requests answered with ``status`` at ``at`` (default now)."""
        self._instance_key(service_id, environment_id)
        _check_latency(latency_ms, 0.0)
        when = self.clock.time() if at is None else at
        self.http.setdefault((service_id, environment_id), []).append(
            HttpCount(when, status, count, latency_ms)
        )

    def set_traffic(
        self,
        service_id: str,
        environment_id: str,
        rps: float,
        *,
        error_ratio: float = 0.0,
        error_status: int = 500,
        at: float | None = None,
        latency_ms: float = DEFAULT_LATENCY_MS,
        latency_sigma: float = DEFAULT_LATENCY_SIGMA,
    ) -> None:
        """From ``at`` (default now) on the service serves ``rps``, a share of them failing,
        each request taking a log-normal time (median ``latency_ms``, spread ``latency_sigma``)."""
        self._instance_key(service_id, environment_id)
        if rps < 0:
            raise EmulatorError("rps must not be negative", "rps")
        if not 0.0 <= error_ratio <= 1.0:
            raise EmulatorError("errorRatio must be between 0 and 1", "errorRatio")
        _check_latency(latency_ms, latency_sigma)
        start = self.clock.time() if at is None else at
        segments = self.traffic.setdefault((service_id, environment_id), [])
        segment = Traffic(start, rps, error_ratio, error_status, latency_ms, latency_sigma)
        bisect.insort(segments, segment, key=_start)

    # -- lookups -----------------------------------------------------------------------------

    def project(self, project_id: str) -> Project:
        """The project, or EmulatorError naming ``projectId``."""
        return _get(self.projects, project_id, "Project", "projectId")

    def environment(self, environment_id: str) -> Environment:
        """The environment, or EmulatorError naming ``environmentId``."""
        return _get(self.environments, environment_id, "Environment", "environmentId")

    def service(self, service_id: str) -> Service:
        """The service, or EmulatorError naming ``serviceId``."""
        return _get(self.services, service_id, "Service", "serviceId")

    def deployment(self, deployment_id: str) -> Deployment:
        """The deployment, or EmulatorError naming ``deploymentId``."""
        return _get(self.deployments, deployment_id, "Deployment", "deploymentId")

    def newest_first(self) -> list[Deployment]:
        """Every deployment, newest first (Railway's order)."""
        return sorted(self.deployments.values(), key=lambda d: (d.created_at, d.seq), reverse=True)

    def metric_value(self, deployment: Deployment, measurement: str, ts: float) -> float | None:
        """The measurement's value at ``ts``; None before it was set or once removed."""
        if deployment.removed_at is not None and ts >= deployment.removed_at:
            return None
        points = self.series.get((deployment.id, measurement), [])
        i = bisect.bisect_right(points, (ts, float("inf")))
        return points[i - 1][1] if i else None

    # -- lifecycle ---------------------------------------------------------------------------

    def start_deployment(self, source: Deployment, *, rollback: bool) -> Deployment:
        """A new deployment of ``source``'s release, rolling out on the clock."""
        # A rollback reuses the built image, so it skips the build.
        return self.deploy(
            source.service_id,
            source.environment_id,
            meta=source.meta,
            static_url=source.static_url,
            replicas=source.replicas,
            build=not rollback,
        )

    def deploy(
        self,
        service_id: str,
        environment_id: str,
        *,
        meta: Mapping[str, Any] | None = None,
        static_url: str | None = None,
        replicas: int = 1,
        build: bool = True,
    ) -> Deployment:
        """A new deployment (a push, say) that rolls out through ``rollout`` on the clock."""
        phases = [p for p in self.rollout if build or p[0] != "BUILDING"]
        new = self.add_deployment(
            service_id,
            environment_id,
            status=phases[0][0] if phases else self.rollout_outcome(),
            active=False,
            meta=meta,
            static_url=static_url,
            replicas=replicas,
        )
        self._spawn(self._roll_out(new, phases))
        return new

    def restart(self, deployment: Deployment) -> None:
        """Restart a deployment's instances in place (same deployment, same id)."""
        if deployment.status not in LIVE:
            raise EmulatorError(f"Cannot restart a deployment that is {deployment.status}")
        deployment.restarts += 1
        self._set_status(deployment, "SUCCESS")

    def sleep(self, deployment_id: str) -> Deployment:
        """Put a serving deployment to sleep, as Railway does a serverless service that has
        sent nothing for 10 minutes: SLEEPING, its instances STOPPED, still the active one."""
        deployment = self.deployment(deployment_id)
        if deployment.status != "SUCCESS":
            message = f"Deployment is {deployment.status}: only a serving one can sleep"
            raise EmulatorError(message, "deploymentId")
        self._set_status(deployment, "SLEEPING")
        return deployment

    def wake(self, deployment_id: str) -> Deployment:
        """A request reached a sleeping deployment: it runs again (SUCCESS). The request itself
        may still fail while the app starts (the sample app's ``cold_start``)."""
        deployment = self.deployment(deployment_id)
        if deployment.status == "SLEEPING":
            self._set_status(deployment, "SUCCESS")
        return deployment

    def remove(self, deployment: Deployment) -> None:
        """Stop a deployment; it stays in history as REMOVED."""
        self._set_status(deployment, "REMOVED")
        key = (deployment.service_id, deployment.environment_id)
        if self.active.get(key) == deployment.id:
            del self.active[key]

    def rollout_outcome(self) -> str:
        """The status a new deployment settles in (the HTTP emulator makes it a fault)."""
        return "SUCCESS"

    def crash_loop(
        self, deployment_id: str, *, period: float = 5.0, max_restarts: int | None = 10
    ) -> Deployment:
        """From now on the live deployment's process exits every ``period`` seconds.

        It is restarted ``max_restarts`` times (None: for ever), then left CRASHED and active;
        leaving SUCCESS ends the loop. See emulator_instances.
        """
        deployment = self.deployment(deployment_id)
        if not (period > 0 and math.isfinite(period)):
            raise EmulatorError("period must be a positive number of seconds", "period")
        if max_restarts is not None and max_restarts < 0:
            raise EmulatorError("maxRestarts must not be negative", "maxRestarts")
        if deployment.status != "SUCCESS":
            message = f"Deployment is {deployment.status}: only a live one can crash-loop"
            raise EmulatorError(message, "deploymentId")
        self._crash_loops.start(deployment, CrashLoop(deployment.id, period, max_restarts))
        return deployment

    def stop_crash_loop(self, deployment_id: str) -> Deployment:
        """End the deployment's crash loop, if any: a SUCCESS one's instances run again."""
        deployment = self.deployment(deployment_id)
        self._crash_loops.stop(deployment)
        return deployment

    @property
    def crash_loops(self) -> list[CrashLoop]:
        """The crash loops in progress."""
        return self._crash_loops.running

    async def aclose(self) -> None:
        """Cancel rollouts and crash loops still in progress."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _roll_out(self, deployment: Deployment, phases: Sequence[tuple[str, float]]) -> None:
        for status, seconds in phases:
            self._set_status(deployment, status)
            await self.clock.sleep(seconds)
        outcome = self.rollout_outcome()
        self._set_status(deployment, outcome)
        if outcome == "SUCCESS":
            self._activate(deployment, at=self.clock.time())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task that aclose() cancels."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _activate(self, deployment: Deployment, *, at: float) -> None:
        key = (deployment.service_id, deployment.environment_id)
        previous = self.active.get(key)
        self.active[key] = deployment.id
        if previous is not None and previous != deployment.id:
            old = self.deployments[previous]
            overlap = self.overlap.get(deployment.service_id, 0.0)
            if overlap > 0 and old.status == "SUCCESS":
                self._spawn(self._retire(old, overlap))
            else:
                self._set_status(old, "REMOVED", at=at)
        for listener in self.on_activate:
            listener(deployment)

    async def _retire(self, old: Deployment, overlap: float) -> None:
        """The overlap: the replaced deployment serves on, then is REMOVED (unless something
        else happened to it meanwhile: it crashed, or a rollback made it active again)."""
        await self.clock.sleep(overlap)
        key = (old.service_id, old.environment_id)
        if old.status == "SUCCESS" and self.active.get(key) != old.id:
            self._set_status(old, "REMOVED")

    def _set_status(self, deployment: Deployment, status: str, *, at: float | None = None) -> None:
        when = self.clock.time() if at is None else at
        deployment.status = status
        deployment.updated_at = when
        if status == "REMOVED" and deployment.removed_at is None:
            deployment.removed_at = when
        if status != "SUCCESS":
            # Restarts need a live process: a deployment replaced, crashed or asleep has none.
            self._crash_loops.stop(deployment)
        reset_instances(deployment)
        if status == "SLEEPING":
            for listener in self.on_sleep:
                listener(deployment)

    def _check_status(self, status: str) -> None:
        if status not in self._statuses:
            raise EmulatorError(f"unknown deployment status {status!r}", "status")

    def _instance_key(self, service_id: str, environment_id: str) -> tuple[str, str]:
        service = self.service(service_id)
        if self.environment(environment_id).project_id != service.project_id:
            raise EmulatorError("environment is not in the service's project", "environmentId")
        return service_id, environment_id


def _start(traffic: Traffic) -> float:
    return traffic.start


def _check_latency(latency_ms: float, sigma: float) -> None:
    if not 0 < latency_ms <= 86_400_000:
        raise EmulatorError("latencyMs must be above 0 and at most a day", "latencyMs")
    if not 0 <= sigma <= 5:
        raise EmulatorError("latencySigma must be between 0 and 5", "latencySigma")


def _get(table: Mapping[str, T], key: str, kind: str, field_name: str) -> T:
    try:
        return table[key]
    except KeyError:
        raise EmulatorNotFound(f"{kind} not found", field_name) from None
