"""Settings: the environment and the TOML config file. The ONLY place the environment is read.

:func:`load_environment` reads the process environment (tokens, PORT, paths);
:func:`load_config` reads one TOML file, expanding ``${VAR}`` references in its strings from
that environment. Every mistake becomes a :class:`~monitor.errors.ConfigError` whose message
names the file, the key path and the offending value.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.alerts.channels import CHANNELS, ChannelSettings
from monitor.apps import AppService, expand_apps
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
from monitor.errors import ConfigError
from monitor.lease import LeaseTerms
from monitor.maintenance import MaintenanceWindow
from monitor.pr_config import PrEnvironmentsConfig
from monitor.redact import redact_url
from monitor.sources.exposition import ExpositionErrorRate, ExpositionLatency, ExpositionMemory
from monitor.sources.health import HealthCheck
from monitor.sources.probe_latency import HealthLatency
from monitor.sources.promql import PromQLErrorRate, PromQLLatency, PromQLMemory
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwayMemory

DEFAULT_API_URL = "https://backboard.railway.com/graphql/v2"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""A config or rule file larger than this is not one a person wrote."""
MAX_BODY_BYTES = 256 * 1024 * 1024
"""The most a source may read of one response (``max_body_bytes``)."""
MAX_ERRORS_SHOWN = 20
WINDOW_WHY = "a longer window keeps a broken release serving for more than a day before acting"


class Environment(BaseSettings):
    """What railguard takes from environment variables (secrets come only from here)."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what load_environment passes: it reads the environment itself (and checks
        it), so an explicit mapping is the whole environment, not one laid over the
        process's."""
        return (init_settings,)

    config: Path | None = Field(None, validation_alias="RAILGUARD_CONFIG")
    railway_api_token: SecretStr | None = Field(None, validation_alias="RAILWAY_API_TOKEN")
    railway_project_token: SecretStr | None = Field(None, validation_alias="RAILWAY_PROJECT_TOKEN")
    railway_api_url: str = Field(DEFAULT_API_URL, validation_alias="RAILWAY_API_URL")
    railway_project_id: str | None = Field(None, validation_alias="RAILWAY_PROJECT_ID")
    host: str = Field("0.0.0.0", validation_alias="RAILGUARD_HOST")
    port: int = Field(8080, ge=0, le=65535, validation_alias="PORT")
    state: Path | None = Field(None, validation_alias="RAILGUARD_STATE")
    admin_token: SecretStr | None = Field(None, validation_alias="RAILGUARD_ADMIN_TOKEN")
    webhook_secret: SecretStr | None = Field(None, validation_alias="RAILGUARD_WEBHOOK_SECRET")
    read_token: SecretStr | None = Field(None, validation_alias="RAILGUARD_READ_TOKEN")
    database_url: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    railway_replica_id: str | None = Field(None, validation_alias="RAILWAY_REPLICA_ID")
    # The leader lease's terms, over the file's [lease] (durations such as "10s").
    lease_ttl: str | None = Field(None, validation_alias="RAILGUARD_LEASE_TTL")
    lease_renew_every: str | None = Field(None, validation_alias="RAILGUARD_LEASE_RENEW_EVERY")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias="RAILGUARD_LOG_FORMAT"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="RAILGUARD_LOG_LEVEL"
    )

    @field_validator("read_token")
    @classmethod
    def _read_token(cls, value: SecretStr | None) -> SecretStr | None:
        """A token that can be presented: set but empty, ``Authorization: Bearer`` with
        nothing after it would read every page. Stripped: a header cannot carry a pasted
        secret's newline."""
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("set but empty: give a token, or unset it to leave the pages open")
        try:  # a byte that is no UTF-8 comes as a lone surrogate (os.environ's surrogateescape)
            token.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid UTF-8 (a byte in it is no character)") from None
        return SecretStr(token)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        """A PostgreSQL URL or nothing: another scheme is a mistake, said at startup."""
        # Stripped: a pasted secret's newline would otherwise end the database's name.
        url = "" if value is None else value.get_secret_value().strip()
        if not url:
            return None
        try:  # a byte that is no UTF-8 comes as a lone surrogate (os.environ's surrogateescape)
            url.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("not valid UTF-8 (a byte in it is no character)") from None
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in ("postgres", "postgresql"):
            # Only a scheme is shown: before a "://" further in, "user:password@host" may be.
            shown = scheme[:20] if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else ""
            raise ValueError(
                "a PostgreSQL URL is needed, postgresql://user:password@host:port/database "
                f"(scheme {shown!r})"
            )
        problem = _conninfo_problem(url)
        if problem:
            raise ValueError(problem)
        return SecretStr(url)


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _conninfo_problem(url: str) -> str | None:
    """What libpq would refuse in ``url`` only when it connects (a stray ``%``, an unknown
    parameter, a port that is no number), said at startup and by ``check`` instead; never
    with the password, which libpq's message quotes."""
    # Imported here: psycopg is needed only with a DATABASE_URL.
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    from monitor.store.pg import scrub

    try:
        given = conninfo_to_dict(url)
    except Error as e:
        return scrub(f"libpq cannot read it: {str(e).strip()}", url)
    for port in str(given.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return scrub(f"port {port[:20]!r} is not a port number (1-65535)", url)
    sslmode = given.get("sslmode")
    if sslmode is not None and sslmode not in _SSL_MODES:
        return scrub(f"sslmode {str(sslmode)[:20]!r} is none of {', '.join(_SSL_MODES)}", url)
    return None


def _aliases() -> set[str]:
    return {str(f.validation_alias) for f in Environment.model_fields.values()}


TEST_PREFIX = "RAILGUARD_TEST_"  # the test suite's own variables (README, Development)


def load_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """Read the environment; an unknown ``RAILGUARD_*`` variable is a mistake, not ignored.

    ``RAILGUARD_TEST_*`` belongs to railguard's own test suite (where its artifacts go,
    which PostgreSQL it uses): the daemons the tests start inherit it, and ignore it."""
    environ = os.environ if environ is None else environ
    known = _aliases()
    unknown = sorted(
        k
        for k in environ
        if k.startswith("RAILGUARD_") and not k.startswith(TEST_PREFIX) and k not in known
    )
    if unknown:
        # Only the name: the value may well be a secret set under a mistyped name.
        raise ConfigError(
            f"environment: unknown variable {unknown[0][:100]} "
            f"(known: {', '.join(sorted(k for k in known if k.startswith('RAILGUARD_')))})"
        )
    values = {k: v for k, v in environ.items() if k in known}
    try:
        return Environment.model_validate(values)
    except ValidationError as e:
        # A secret's value is never quoted back, not even a malformed one.
        quotable = {k: _MISSING if k in _secret_aliases() else v for k, v in values.items()}
        raise ConfigError(format_validation_error("environment", e, quotable)) from e


def _secret_aliases() -> set[str]:
    return {
        str(f.validation_alias)
        for f in Environment.model_fields.values()
        if f.annotation in (SecretStr, SecretStr | None)
    }


# -- the config file ------------------------------------------------------------------------


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


# A signal's source is chosen by its `source` key; each type is its own strict model.
ErrorRateSource = Annotated[
    ExpositionErrorRate | RailwayErrorRate | PromQLErrorRate, Field(discriminator="source")
]
MemorySource = Annotated[
    ExpositionMemory | RailwayMemory | PromQLMemory, Field(discriminator="source")
]
# One table for every latency quantile: the rules say which quantiles (latency_p95, ...).
LatencySource = Annotated[
    ExpositionLatency | RailwayLatency | PromQLLatency | HealthLatency,
    Field(discriminator="source"),
]
SOURCE_TYPES = frozenset({"exposition", "railway", "promql", "health"})
SIGNAL_TABLES = ("error_rate", "memory", "latency")
"""The service's keys that choose a signal's source."""


def _tags(union: Any) -> tuple[str, ...]:
    """The ``source`` values a discriminated union of source models takes."""
    members = get_args(get_args(union)[0]) or (get_args(union)[0],)
    return tuple(sorted(get_args(m.model_fields["source"].annotation)[0] for m in members))


TABLE_SOURCES = {
    "error_rate": _tags(ErrorRateSource),
    "memory": _tags(MemorySource),
    "latency": _tags(LatencySource),
}


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


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file; a missing file or a syntax error is a ConfigError naming it.

    Only a regular file of at most :data:`MAX_CONFIG_BYTES` of UTF-8 is read.
    """
    try:
        with path.open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{path}: cannot read: not a regular file")
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except ValueError as e:  # a NUL in the path
        raise ConfigError(f"{path}: cannot read: not a file name") from e
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}: not valid UTF-8 (line {line}, byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None


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


def format_location(loc: Sequence[int | str]) -> str:
    """``("services", 0, "health", "timeout")`` -> ``services[0].health.timeout``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _user_location(loc: Sequence[int | str]) -> list[int | str]:
    """The key path as the user wrote it, without pydantic's union tags and wrappers."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and part.startswith("function-"):
            continue
        if part in SOURCE_TYPES and out and out[-1] in SIGNAL_TABLES:
            continue
        if part in CHANNELS and len(out) >= 2 and out[-2] == "channels":
            continue
        out.append(part)
    return out


_MISSING = object()


def _raw_at(raw: Any, loc: Sequence[int | str]) -> Any:
    """The value at ``loc`` as written in the file (``_MISSING`` if the path is not there)."""
    for part in loc:
        in_table = isinstance(raw, Mapping) and isinstance(part, str) and part in raw
        in_array = isinstance(raw, list | tuple) and isinstance(part, int) and 0 <= part < len(raw)
        if not (in_table or in_array):
            return _MISSING
        raw = raw[part]
    return raw


def _quotable(value: Any) -> bool:
    """Whether a value from the file may be quoted: a scalar, or an array of scalars.

    Tables are not: they may hold a secret written literally (refused, and never echoed).
    """
    if isinstance(value, Mapping):
        return False
    if isinstance(value, list | tuple):
        return not any(isinstance(v, Mapping | list | tuple) for v in value)
    return True


def format_validation_error(
    source: str,
    error: ValidationError,
    raw: Mapping[str, Any] | None = None,
    relocate: Callable[[Sequence[int | str]], list[int | str]] | None = None,
) -> str:
    """One line per mistake: ``FILE: key.path: what is wrong (got VALUE)``.

    With ``raw`` (what was read, before ``${VAR}`` expansion) the value quoted is the one
    written there, never what the environment filled in: that may be a secret. ``relocate``
    turns a key path in what was validated into the one the file wrote (``[[apps]]``).
    """
    lines: list[str] = []
    items = error.errors(include_url=False)
    for item in items[:MAX_ERRORS_SHOWN]:
        loc = _user_location(item["loc"])
        if relocate is not None:
            loc = relocate(loc)
        key = format_location(loc)
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] in ("union_tag_not_found", "union_tag_invalid"):
            ctx = item.get("ctx", {})
            tag_key = str(ctx.get("discriminator", "'source'")).strip("'")
            known = sorted(SOURCE_TYPES if tag_key == "source" else CHANNELS)
            if tag_key == "source" and loc and loc[-1] in TABLE_SOURCES:
                known = list(TABLE_SOURCES[str(loc[-1])])  # what this table takes
            tag = ctx.get("tag")
            message = (
                f"unknown {tag_key} {tag!r}" if tag is not None else f"missing key {tag_key!r}"
            )
            message += f" (one of: {', '.join(known)})"
        else:
            message = item["msg"].removeprefix("Value error, ")
        got = item.get("input") if raw is None else _raw_at(raw, loc)
        hidden = (
            item["type"] in ("missing", "secret_literal") or got is _MISSING or not _quotable(got)
        )
        # A URL written with a literal password or token is quoted without them.
        quoted = (
            "" if hidden else f" (got {shown(redact_url(got) if isinstance(got, str) else got)})"
        )
        line = f"{source}: {key}: {message}{quoted}"
        if line not in lines:  # an app's key is checked once per environment it reaches
            lines.append(line)
    if len(items) > MAX_ERRORS_SHOWN:
        lines.append(f"{source}: ... and {len(items) - MAX_ERRORS_SHOWN} more mistakes")
    return "\n".join(lines)
