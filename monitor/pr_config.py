"""The ``[pr_environments]`` table: which services railguard guards in each PR environment.

Railway gives every pull request its own ephemeral environment; railguard finds them in the
project (``railway.project_id``) and guards each with a tier policy ("preview" by default),
using configured services as templates, so a new PR needs no config change.
"""

from __future__ import annotations

import re
import string
from typing import Annotated
from urllib.parse import quote

from pydantic import Field, field_validator

from monitor.configtypes import HOUR, Duration, Strict, Text, _http_url, shown, within

PLACEHOLDERS = frozenset({"environment", "environment_id", "service"})
EXAMPLE = {"environment": "web-pr-1", "environment_id": "example-environment-id", "service": "web"}
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def fill(template: str, *, environment: str, environment_id: str, service: str) -> str:
    """A URL template with ``{environment}``, ``{environment_id}`` and ``{service}`` filled
    in (each percent-quoted: a PR environment's name comes from Railway, not from you)."""
    values = {"environment": environment, "environment_id": environment_id, "service": service}
    return template.format_map({k: quote(v, safe="-._~") for k, v in values.items()})


def _url_template(value: str) -> str:
    try:
        names = {field for _, field, _, _ in string.Formatter().parse(value) if field is not None}
    except ValueError as e:
        raise ValueError(f"not a URL template: {e} (write {{environment}}, {{service}})") from e
    unknown = sorted(names - PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} (known: "
            f"{', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))})"
        )
    try:
        _http_url(fill(value, **EXAMPLE))
    except ValueError as e:
        raise ValueError(f"{e}, once its placeholders are filled in") from e
    return value


def service_name(template: str, environment: str) -> str:
    """The name railguard gives a template's service in a PR environment: ``web.web-pr-7``."""
    return f"{template}.{_NOT_IN_NAME.sub('-', environment).strip('.-')}"[:100]


class PrService(Strict):
    """One configured service to guard in every PR environment."""

    from_: str = Field(alias="from", min_length=1, max_length=100)
    """The configured service whose Railway service_id, interval, health check settings,
    Railway-sourced signals and rule overrides it copies."""
    health_url: Text | None = None
    """Where the service answers in a PR environment: a template."""

    @field_validator("health_url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return None if value is None else _url_template(value)


class PrEnvironmentsConfig(Strict):
    """Guard every PR environment of the project (``railway.project_id``)."""

    enabled: bool = True
    tier: str = "preview"
    every: Annotated[
        Duration,
        within(10.0, HOUR, why_lo="each look is a request to Railway"),
    ] = 60.0
    """How often railguard asks Railway for the project's PR environments (never more often
    than it polls: ``railway.poll_interval``)."""
    services: tuple[PrService, ...]

    @field_validator("services")
    @classmethod
    def _services(cls, services: tuple[PrService, ...]) -> tuple[PrService, ...]:
        if not services:
            raise ValueError("no services: name at least one configured service with from = ...")
        names = [s.from_ for s in services]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"service {shown(name)} is listed twice")
        return services
