"""Settings: the TOML config file's models, and :func:`load_config` that reads it.

:func:`load_config` reads one TOML file (configfile.py), expanding ``${VAR}`` references in
its strings from the environment (the variables railguard itself takes: environment.py).
Every mistake becomes a :class:`~monitor.errors.ConfigError` whose message names the file,
the key path and the offending value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.alerts.channels import ChannelSettings
from monitor.apps import AppService, expand_apps
from monitor.configfile import format_validation_error, read_toml
from monitor.configtypes import (
    DAY,
    HOUR,
    MINUTE,
    Duration,
    Expansions,
    HttpUrl,
    Strict,
    Text,
    Threshold,
    shown,
    within,
)
from monitor.environment import Environment
from monitor.errors import ConfigError
from monitor.lease import LeaseTerms
from monitor.maintenance import MaintenanceWindow
from monitor.pr_config import PrEnvironmentsConfig
from monitor.sources.health import HealthCheck
from monitor.sources.probe_latency import HealthLatency
from monitor.sources.tables import ErrorRateSource, LatencySource, MemorySource

MAX_BODY_BYTES = 256 * 1024 * 1024
"""The most a source may read of one response (``max_body_bytes``)."""
WINDOW_WHY = "a longer window keeps a broken release serving for more than a day before acting"


def _clock_time(value: str) -> str:
    hours, sep, minutes = value.partition(":")
    digits = (hours + minutes).isascii() and hours.isdigit() and minutes.isdigit()
    if not (sep and digits and len(hours) <= 2 and len(minutes) == 2):
        raise ValueError(f'not a time of day: {shown(value)} (write "HH:MM", UTC)')
    if not (0 <= int(hours) <= 23 and 0 <= int(minutes) <= 59):
        raise ValueError(f"not a time of day: {shown(value)}")
    return f"{int(hours):02d}:{minutes}"


ClockTime = Annotated[str, AfterValidator(_clock_time)]


class RailwayConfig(Strict):
    """How railguard talks to Railway's API."""

    project_id: Text | None = None
    requests_per_hour: int = Field(1000, gt=0, le=1_000_000)
    requests_per_second: float = Field(10.0, gt=0, le=1000)
    poll_interval: Annotated[
        Duration,
        within(
            1.0, HOUR, why_lo="Railway's numbers do not change faster, and each poll is a request"
        ),
    ] = 30.0
    reserve: float = Field(0.2, ge=0, lt=1)
    """The fraction of the hourly budget routine polling never spends (kept for rollbacks)."""
    reconcile_window: Annotated[
        Duration,
        within(
            1.0, 10 * 60.0, why_lo="Railway needs a moment to list a deployment it just created"
        ),
    ] = 20.0
    """How long a rollback mutation whose answer was lost may still show up on Railway as a
    new deployment: it is sent again only after this, and only if none did."""


class TierPolicy(Strict):
    """What a tier gets: its rules, whether it rolls back, how loudly it alerts."""

    auto_rollback: bool = False
    severity: Literal["critical", "warning", "info"] = "warning"
    delivery: Literal["immediate", "digest", "off"] = "off"
    digest_at: ClockTime = "09:00"
    rules: tuple[str, ...] = ("health-failing",)
    bake: Annotated[Duration, within(0.0, 7 * DAY)] = 600.0
    rollback_timeout: Annotated[
        Duration, within(1.0, HOUR, why_lo="no deployment is up and verified sooner")
    ] = 120.0
    grace: Annotated[Duration, within(0.0, DAY)] = 60.0
    """No automatic rollback this soon after the current deployment went live."""
    cooldown: Annotated[Duration, within(0.0, 7 * DAY)] = 900.0
    """No second automatic rollback this soon after the last one (the loop breaker's window)."""
    max_rollbacks_per_day: int = Field(3, ge=0, le=100)
    dry_run: bool = False
    """Decide and record rollbacks, but never send one."""
    notify_verified: bool = False
    """Tell the channels when a deployment is verified healthy (bake passed)."""
    remind_every: Annotated[Duration, within(0.0, 7 * DAY)] = 3600.0
    """Repeat an open incident's last message this often ("0s": never)."""
    rebuild: bool = False
    """With no rollback image left (Railway's retention), deploy the newest known-good
    release's commit again (a build: minutes, not a 2-minute rollback). Off: escalate."""
    rebuild_timeout: Annotated[
        Duration,
        within(60.0, HOUR, why_lo="no build is up and verified sooner"),
    ] = 600.0
    """How long a rebuild may take to build, go live and recover."""

    @field_validator("rebuild", mode="before")
    @classmethod
    def _a_real_boolean(cls, value: Any) -> Any:
        # It sends a deploy to Railway: "yes", "off" or 1 must not be guessed at.
        if not isinstance(value, bool):
            raise ValueError("must be true or false (a TOML boolean, without quotes)")
        return value


DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "production": {
        "auto_rollback": True,
        "severity": "critical",
        "delivery": "immediate",
        "rules": ["health-failing", "error-rate", "memory-high", "deployment-crashed"],
        "notify_verified": True,
    },
    "staging": {
        "auto_rollback": True,
        "severity": "warning",
        "delivery": "digest",
        "rules": ["health-failing", "error-rate", "deployment-crashed"],
    },
    "preview": {
        "auto_rollback": False,
        "severity": "info",
        "delivery": "off",
        "rules": ["health-failing"],
    },
}


class RuleOverride(Strict):
    """A service's changes to one of its tier's rules."""

    for_: Annotated[Duration, within(0.0, DAY, why_hi=WINDOW_WHY)] | None = Field(None, alias="for")
    threshold: Threshold | None = None
    max_gap: Annotated[Duration, within(0.0, DAY, above=True)] | None = None
    tolerance: float | None = Field(None, gt=0, le=1)


class ServiceConfig(Strict):
    """One service railguard guards."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    tier: str
    service_id: Text | None = None
    environment_id: Text | None = None
    health_url: HttpUrl | None = None
    health: HealthCheck | None = None
    interval: Annotated[
        Duration,
        within(
            1.0,
            HOUR,
            why_lo="probing a service more often than once a second is load, not monitoring",
            why_hi="a service looked at less than hourly is not watched",
        ),
    ] = 15.0
    error_rate: ErrorRateSource | None = None
    memory: MemorySource | None = None
    latency: LatencySource | None = None
    rules: dict[str, RuleOverride] = {}

    @field_validator("health", "error_rate", "memory", "latency")
    @classmethod
    def _body_limit(cls, value: Any) -> Any:
        limit = getattr(value, "max_body_bytes", None)
        if isinstance(limit, int) and not 1 <= limit <= MAX_BODY_BYTES:
            raise ValueError(
                f"max_body_bytes: must be between 1 and {MAX_BODY_BYTES} (got {shown(limit)})"
            )
        return value

    @field_validator("latency")
    @classmethod
    def _probe_latency(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, HealthLatency):
            return value
        data = info.data  # the fields before this one that passed (a failed one has its error)
        if data.keys() >= {"health", "health_url"} and data["health"] is data["health_url"] is None:
            raise ValueError(
                "source 'health' times the health probe, but the service has no health check: "
                "add health_url (or [services.health]), or take latency from another source"
            )
        interval = data.get("interval")
        problem = value.too_short(interval) if isinstance(interval, float) else ""
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ServiceConfig:
        if self.health_url is not None and self.health is not None:
            raise ValueError("set either health_url or health.url, not both")
        if (self.service_id is None) != (self.environment_id is None):
            raise ValueError(
                "service_id and environment_id go together: a Railway service is one "
                "service in one environment"
            )
        check = self.health_check
        if check is not None and check.release is not None and self.service_id is None:
            raise ValueError(
                "health.release needs service_id and environment_id: an answer is compared "
                "with the deployment Railway has active"
            )
        return self

    @property
    def health_check(self) -> HealthCheck | None:
        """The health check, whichever way it was written."""
        if self.health_url is not None:
            return HealthCheck(url=self.health_url)
        return self.health


class DaemonConfig(Strict):
    """How the daemon schedules its work."""

    max_concurrent_probes: int = Field(100, gt=0, le=10_000)
    shutdown_timeout: Annotated[Duration, within(0.0, 10 * MINUTE)] = 5.0
    stagger: bool = True


class LeaseConfig(Strict):
    """The leader lease (several replicas sharing PostgreSQL through ``DATABASE_URL``)."""

    ttl: Annotated[Duration, within(1.0, 10 * MINUTE)] = 10.0
    """How long a lease lasts unless renewed: a dead leader is replaced within ttl + renewal."""
    renew_every: Annotated[Duration, within(0.1, 10 * MINUTE)] = 3.0
    """How often the leader renews it (and a standby looks whether it is free)."""

    @field_validator("renew_every")
    @classmethod
    def _safe(cls, renew_every: float, info: ValidationInfo) -> float:
        ttl = info.data.get("ttl")
        if isinstance(ttl, float):
            problem = lease_terms(ttl, renew_every).problem()
            if problem:
                raise ValueError(problem)
        return renew_every

    @property
    def terms(self) -> LeaseTerms:
        """The terms the lease is held on."""
        return lease_terms(self.ttl, self.renew_every)


def lease_terms(ttl: float, renew_every: float) -> LeaseTerms:
    """The terms for a ttl and a renewal: a leader stops acting 2s (a fifth of a short ttl)
    before its lease could expire."""
    return LeaseTerms(ttl=ttl, renew_every=renew_every, margin=min(2.0, ttl / 5))


LEASE_VARIABLES = {"ttl": "RAILGUARD_LEASE_TTL", "renew_every": "RAILGUARD_LEASE_RENEW_EVERY"}


def _lease_from_environment(config: Config, env: Environment) -> Config:
    """The file's [lease] with the environment's values over it (errors name the variable)."""
    given = {"ttl": env.lease_ttl, "renew_every": env.lease_renew_every}
    overrides = {key: value for key, value in given.items() if value is not None}
    if not overrides:
        return config
    values: dict[str, Any] = {**config.lease.model_dump(), **overrides}
    try:
        lease = LeaseConfig.model_validate(values)
    except ValidationError as e:
        lines = []
        for item in e.errors(include_url=False):
            key = str(item["loc"][0]) if item["loc"] else "renew_every"
            if key not in overrides:  # the check across both keys, on a value set here
                key = next(iter(overrides))
            message = item["msg"].removeprefix("Value error, ")
            got = shown(overrides[key])
            lines.append(
                f"environment: {LEASE_VARIABLES[key]}: {message}"
                + ("" if got in message else f" (got {got})")
            )
        raise ConfigError("\n".join(lines)) from e
    return config.model_copy(update={"lease": lease})


def _file_name(value: str) -> str:
    if not value or "\x00" in value or len(value) > 4096:
        raise ValueError("not a file name")
    return value


class Config(Strict):
    """The whole config file."""

    rule_files: tuple[Annotated[Text, AfterValidator(_file_name)], ...] | None = None
    railway: RailwayConfig = RailwayConfig()
    daemon: DaemonConfig = DaemonConfig()
    lease: LeaseConfig = LeaseConfig()
    tiers: dict[str, TierPolicy] = {}
    services: tuple[ServiceConfig, ...]
    channels: tuple[ChannelSettings, ...] = ()
    status_url: Text | None = None
    """railguard's public /status URL, linked from notifications."""
    pr_environments: PrEnvironmentsConfig | None = None
    maintenance: tuple[MaintenanceWindow, ...] = ()
    """Scheduled freezes of automatic rollback (monitor/maintenance.py)."""
    _apps: tuple[AppService, ...] = PrivateAttr(default=())

    @property
    def apps(self) -> tuple[AppService, ...]:
        """The services ``[[apps]]`` expanded to (they follow the written ``[[services]]``)."""
        return self._apps

    def where(self, index: int, *key: str) -> str:
        """How messages name the ``index``-th service, or its ``key``: where the file wrote
        it (an ``[[apps]]`` key may be the app's own, for all its environments)."""
        app = index - (len(self.services) - len(self._apps))
        if app >= 0:
            return self._apps[app].locate(key) if key else self._apps[app].where
        return ".".join((f"services[{index}]", *key))

    @field_validator("services")
    @classmethod
    def _services(cls, services: tuple[ServiceConfig, ...]) -> tuple[ServiceConfig, ...]:
        if not services:
            raise ValueError("no services: add at least one [[services]] or [[apps]] table")
        seen: set[str] = set()
        for service in services:
            if service.name in seen:
                raise ValueError(f"two services are named {service.name!r}")
            seen.add(service.name)
        return services

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: tuple[ChannelSettings, ...]) -> tuple[ChannelSettings, ...]:
        names = [c.name for c in channels if c.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("two channels have the same name")
        return channels


def _with_default_tiers(raw: dict[str, Any]) -> dict[str, Any]:
    tiers = raw.get("tiers", {})
    if not isinstance(tiers, dict):
        return raw  # validation names the mistake
    merged: dict[str, Any] = {name: dict(values) for name, values in DEFAULT_TIERS.items()}
    for name, values in tiers.items():
        if isinstance(values, dict):
            merged[name] = {**merged.get(name, {}), **values}
        else:
            merged[name] = values
    return {**raw, "tiers": merged}


def load_config(
    path: Path,
    env: Environment,
    environ: Mapping[str, str] | None = None,
    expansions: Expansions | None = None,
) -> Config:
    """Read and validate the config file at ``path``; ``expansions`` collects what its
    ``${VAR}`` references were expanded to (for redaction)."""
    written = _with_default_tiers(read_toml(path))
    apps = expand_apps(written, path)
    environ = os.environ if environ is None else environ
    context: dict[str, Any] = {"environ": environ, "expansions": expansions}
    try:
        config = Config.model_validate(apps.raw, context=context)
    except ValidationError as e:
        raise ConfigError(
            format_validation_error(str(path), e, written, relocate=apps.relocate)
        ) from e
    config._apps = apps.apps
    return _lease_from_environment(config, env)
