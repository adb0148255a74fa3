"""The ``[[apps]]`` table: one app in several Railway environments, written once.

An app is one Railway service (one ``service_id`` in a project) deployed in several
environments, each with its own tier and URL. railguard guards it as one service per
environment, named ``<app>-<environment>``, exactly as if each had been written as a
``[[services]]`` table: the expansion works on the file's tables before validation, so every
key goes through the same checks as a hand-written service, and a mistake is reported at the
key the file wrote (``apps[0].environments.staging.url``), not at a service it never wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.configtypes import shown
from monitor.errors import ConfigError
from monitor.sources.health import HealthCheck

Location = tuple[int | str, ...]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""What a service's name may be (as :class:`monitor.settings.ServiceConfig` says)."""
DEFAULT_HEALTH_PATH = "/health"
SHARED_KEYS = frozenset({"interval", "health", "error_rate", "memory", "latency", "rules"})
"""Service keys an app sets for all its environments and an environment may override."""
APP_KEYS = SHARED_KEYS | {"name", "service_id", "health_path", "environments"}
ENVIRONMENT_KEYS = SHARED_KEYS | {"name", "tier", "url", "environment_id", "health_path"}
SIGNAL_TABLES = ("error_rate", "memory", "latency")


@dataclass(frozen=True, slots=True)
class AppService:
    """One service an ``[[apps]]`` table expanded to."""

    app: str
    environment: str
    service: str
    """The service's name (``<app>-<environment>`` unless the environment sets ``name``)."""
    loc: Location
    """The environment's table in the file: ``("apps", 0, "environments", "staging")``."""
    origins: Mapping[Location, Location] = field(default_factory=dict, compare=False)
    """A key path in the service -> the path the file wrote it at."""

    @property
    def where(self) -> str:
        """The environment's table as messages name it: ``apps[0].environments.staging``."""
        return _format(self.loc)

    def locate(self, key: Sequence[int | str]) -> str:
        """A key of the service as messages name it: where the file wrote it
        (``rules.error-rate`` -> ``apps[0].rules.error-rate`` when the app's table set it)."""
        return _format(_relocate(self.origins, tuple(key)) if self.origins else (*self.loc, *key))


@dataclass(frozen=True, slots=True)
class Expansion:
    """The file's tables with ``[[apps]]`` turned into services, and where each key came from."""

    raw: dict[str, Any]
    """The file's tables, ``apps`` expanded into ``services`` (after the written ones)."""
    apps: tuple[AppService, ...]
    origins: tuple[dict[Location, Location], ...]
    """Per expanded service: a key path in it -> the path the file wrote it at."""
    written: int
    """How many ``[[services]]`` the file wrote (the expanded ones follow them)."""

    def relocate(self, loc: Sequence[int | str]) -> list[int | str]:
        """A key path in the expanded tables -> where the file wrote it."""
        if len(loc) < 2 or loc[0] != "services" or not isinstance(loc[1], int):
            return list(loc)
        index = loc[1] - self.written
        if not 0 <= index < len(self.origins):
            return list(loc)
        return list(_relocate(self.origins[index], tuple(loc[2:])))


def _relocate(origins: Mapping[Location, Location], rest: Location) -> Location:
    """A key path in an expanded service -> where the file wrote it."""
    for length in (2, 1):  # the longest path written somewhere: health.timeout, health
        origin = origins.get(rest[:length]) if len(rest) >= length else None
        if origin is not None:
            return (*origin, *rest[length:])
    return (*origins[()], *rest)  # the environment's table


def _fail(path: Path, loc: Location, message: str, value: Any = None) -> ConfigError:
    got = "" if value is None else f" (got {shown(value)})"
    return ConfigError(f"{path}: {_format(loc)}: {message}{got}")


def _format(loc: Location) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _table(path: Path, loc: Location, value: Any, known: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        # An array may hold tables, and a table a secret written in it: quote only a scalar.
        raise _fail(path, loc, "must be a table", None if isinstance(value, list) else value)
    for key in value:
        if key not in known:
            raise _fail(path, (*loc, key), f"unknown key (known: {', '.join(sorted(known))})")
    return value


def _text(path: Path, loc: Location, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(path, loc, "must be a string", value)
    return value


def _health_path(path: Path, loc: Location, value: Any) -> str:
    text = _text(path, loc, value)
    if not text.startswith("/") or any(c.isspace() for c in text) or len(text) > 1000:
        raise _fail(path, loc, 'must be a path on the environment\'s url, such as "/health"', text)
    return text


def _join(url: str, path: str) -> str:
    return url.rstrip("/") + path


def expand_apps(raw: Mapping[str, Any], path: Path) -> Expansion:
    """Expand the file's ``[[apps]]`` into services; a mistake is a ConfigError naming the key.

    Only the tables' shape is checked here (what the expansion relies on); the values are
    checked with the services they become.
    """
    out = {k: v for k, v in raw.items() if k != "apps"}
    written = raw.get("services", [])
    count = len(written) if isinstance(written, list) else 0
    apps = raw.get("apps")
    if apps is None:
        return Expansion(out, (), (), count)
    if not isinstance(apps, list):
        raise _fail(path, ("apps",), "must be an array of tables: write [[apps]]", apps)
    taken = {
        s["name"]: f"services[{i}]"
        for i, s in enumerate(written if isinstance(written, list) else [])
        if isinstance(s, Mapping) and isinstance(s.get("name"), str)
    }
    services: list[dict[str, Any]] = []
    made: list[AppService] = []
    origins: list[dict[Location, Location]] = []
    for index, app in enumerate(apps):
        for service, record, origin in _expand_app(path, index, app):
            if record.service in taken:
                raise _fail(
                    path,
                    (*record.loc, "name"),
                    f"the service name {shown(record.service)} this environment gets is also "
                    f"{taken[record.service]}'s: give one of them another name (an environment "
                    "table's name = ... sets its service's name)",
                )
            taken[record.service] = record.where
            services.append(service)
            made.append(record)
            origins.append(origin)
    if not isinstance(written, list):
        return Expansion(out, tuple(made), tuple(origins), 0)  # validation names the mistake
    out["services"] = [*written, *services]
    return Expansion(out, tuple(made), tuple(origins), count)


def _expand_app(
    path: Path, index: int, value: Any
) -> list[tuple[dict[str, Any], AppService, dict[Location, Location]]]:
    here: Location = ("apps", index)
    app = _table(path, here, value, APP_KEYS)
    if "name" not in app:
        raise _fail(path, (*here, "name"), "required key is missing")
    name = _text(path, (*here, "name"), app["name"])
    environments = app.get("environments")
    if not isinstance(environments, Mapping) or not environments:
        raise _fail(
            path,
            (*here, "environments"),
            "an app needs its environments: add a table [apps.environments.NAME] with its "
            "tier and url for each",
        )
    if "health_path" in app:
        _health_path(path, (*here, "health_path"), app["health_path"])
    if "health" in app:
        _table(path, (*here, "health"), app["health"], HEALTH_KEYS)
    return [
        _expand_environment(path, here, app, name, environment, table)
        for environment, table in environments.items()
    ]


HEALTH_KEYS = frozenset(HealthCheck.model_fields) - {"url"}
"""The health check's keys an app or environment may set: its URL is the environment's."""


def _expand_environment(
    path: Path,
    app_loc: Location,
    app: Mapping[str, Any],
    app_name: str,
    environment: str,
    value: Any,
) -> tuple[dict[str, Any], AppService, dict[Location, Location]]:
    here: Location = (*app_loc, "environments", environment)
    env = _table(path, here, value, ENVIRONMENT_KEYS)
    if "tier" not in env:
        raise _fail(path, (*here, "tier"), "required key is missing")
    name = f"{app_name}-{environment}"
    name_at: Location = (*app_loc, "name")
    if "name" in env:
        name, name_at = _text(path, (*here, "name"), env["name"]), (*here, "name")
    if not NAME.match(name) or len(name) > 100:
        raise _fail(
            path,
            name_at if "name" in env else here,
            f"the service name {shown(name)} is not one (at most 100 letters, digits, '.', '_' and "
            "'-', starting with a letter or digit): set name = ... in the environment's table",
        )
    service: dict[str, Any] = {"name": name, "tier": env["tier"]}
    origin: dict[Location, Location] = {(): here, ("name",): name_at, ("tier",): (*here, "tier")}
    if "service_id" in app:
        service["service_id"] = app["service_id"]
        origin[("service_id",)] = (*app_loc, "service_id")
    if "environment_id" in env:
        service["environment_id"] = env["environment_id"]
        origin[("environment_id",)] = (*here, "environment_id")
    for key in ("interval", *SIGNAL_TABLES):
        if key in env:
            service[key], origin[(key,)] = env[key], (*here, key)
        elif key in app:
            service[key], origin[(key,)] = app[key], (*app_loc, key)
    url = _text(path, (*here, "url"), env["url"]) if "url" in env else None
    for key in SIGNAL_TABLES:  # an exposition's url may be a path on the environment's url
        table = service.get(key)
        target = table.get("url") if isinstance(table, Mapping) else None
        if isinstance(target, str) and target.startswith("/"):
            if url is None:
                raise _fail(
                    path,
                    (*origin[(key,)], "url"),
                    "a path needs the environment's url: add url = ... to its table",
                    target,
                )
            service[key] = {**table, "url": _join(url, target)}  # type: ignore[dict-item]
    _merge_rules(service, origin, app, env, app_loc, here)
    _health(path, service, origin, app, env, app_loc, here, url)
    record = AppService(app_name, environment, name, here, origin)
    return service, record, origin


def _merge_rules(
    service: dict[str, Any],
    origin: dict[Location, Location],
    app: Mapping[str, Any],
    env: Mapping[str, Any],
    app_loc: Location,
    here: Location,
) -> None:
    """Rule overrides: the app's, with the environment's over them rule by rule."""
    rules: dict[str, Any] = {}
    for table, loc in ((app.get("rules"), app_loc), (env.get("rules"), here)):
        if table is None:
            continue
        if not isinstance(table, Mapping):
            service["rules"], origin[("rules",)] = table, (*loc, "rules")
            return  # validation names the mistake
        origin[("rules",)] = (*loc, "rules")
        for rule, override in table.items():
            rules[rule], origin[("rules", rule)] = override, (*loc, "rules", rule)
    if rules or "rules" in app or "rules" in env:
        service["rules"] = rules


def _health(
    path: Path,
    service: dict[str, Any],
    origin: dict[Location, Location],
    app: Mapping[str, Any],
    env: Mapping[str, Any],
    app_loc: Location,
    here: Location,
    url: str | None,
) -> None:
    """The health check: the environment's url + health_path, with the app's and the
    environment's ``health`` settings (the environment's over the app's, key by key)."""
    if "health" in env:
        _table(path, (*here, "health"), env["health"], HEALTH_KEYS)
    settings: dict[str, Any] = {}
    written: Location = (*here, "url")  # where a mistake in the whole check is reported
    for table, loc in ((app.get("health"), app_loc), (env.get("health"), here)):
        if isinstance(table, Mapping):
            written = (*loc, "health")
            for key, value in table.items():
                settings[key], origin[("health", key)] = value, (*loc, "health", key)
    if url is None:
        if settings or "health_path" in env:
            raise _fail(
                path,
                (*here, "url"),
                "the health check needs the environment's url to probe: add url = ...",
            )
        return
    health_path = DEFAULT_HEALTH_PATH
    if "health_path" in env:
        health_path = _health_path(path, (*here, "health_path"), env["health_path"])
    elif "health_path" in app:
        health_path = app["health_path"]
    full = _join(url, health_path)
    if settings:
        service["health"] = {"url": full, **settings}
        origin[("health",)] = written
        origin[("health", "url")] = (*here, "url")
    else:
        service["health_url"] = full
        origin[("health_url",)] = (*here, "url")
