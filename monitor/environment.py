"""The process environment: what railguard takes from environment variables.

:func:`load_environment` is the one reader of railguard's variables (tokens, PORT, paths);
the config file's ``${VAR}`` references are expanded by :func:`monitor.settings.load_config`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from monitor.configfile import format_validation_error
from monitor.errors import ConfigError
from monitor.redact import scrub_database_url

DEFAULT_API_URL = "https://backboard.railway.com/graphql/v2"


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

    try:
        given = conninfo_to_dict(url)
    except Error as e:
        return scrub_database_url(f"libpq cannot read it: {str(e).strip()}", url)
    for port in str(given.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            return scrub_database_url(f"port {port[:20]!r} is not a port number (1-65535)", url)
    sslmode = given.get("sslmode")
    if sslmode is not None and sslmode not in _SSL_MODES:
        return scrub_database_url(
            f"sslmode {str(sslmode)[:20]!r} is none of {', '.join(_SSL_MODES)}", url
        )
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
        # A secret's value is never quoted back, not even a malformed one: left out of what
        # the message may quote, it reads as not written.
        quotable = {k: v for k, v in values.items() if k not in _secret_aliases()}
        raise ConfigError(format_validation_error("environment", e, quotable)) from e


def _secret_aliases() -> set[str]:
    return {
        str(f.validation_alias)
        for f in Environment.model_fields.values()
        if f.annotation in (SecretStr, SecretStr | None)
    }
