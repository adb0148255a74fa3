"""The Railway emulator's GraphQL objects: the request context and the schema's node shapes.

Nodes are plain dicts read by graphql-core's default resolver; a field that takes arguments
(a nested connection, say) is a callable taking ``(info, **args)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import graphql

from monitor.sandbox.emulator_model import (
    Deployment,
    EmulatorModel,
    Environment,
    Project,
    Service,
    iso,
)

if TYPE_CHECKING:
    from monitor.sandbox.emulator_platform import Platform

T = TypeVar("T")
NOT_AUTHORIZED = "Not Authorized"


@dataclass(frozen=True)
class Scope:
    """What a token may see: the whole account, or one project's environment."""

    project_id: str | None = None
    environment_id: str | None = None

    def allows(self, project_id: str, environment_id: str | None = None) -> bool:
        """Whether this token may see ``project_id`` (and ``environment_id`` when given)."""
        if self.project_id is None:
            return True
        if project_id != self.project_id:
            return False
        return environment_id is None or environment_id == self.environment_id


@dataclass(frozen=True)
class MutationRecord:
    """A mutation that reached a resolver, with what came of it."""

    at: float
    name: str
    arguments: dict[str, Any]
    ok: bool
    error: str | None = None


@dataclass
class RequestContext:
    """Per-request state handed to every resolver as ``info.context``."""

    model: EmulatorModel
    scope: Scope | None
    mutations: list[MutationRecord] = field(default_factory=list)
    platform: Platform | None = None  # Railway's own status (None: stable, nothing to say)

    def authorized(self) -> Scope:
        """The caller's scope, or Railway's "Not Authorized" error."""
        if self.scope is None:
            raise graphql.GraphQLError(NOT_AUTHORIZED)
        return self.scope


def parse_time(value: Any, name: str) -> float:
    """A DateTime argument as Unix seconds (the schema's scalar itself accepts anything)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise graphql.GraphQLError(f"Invalid DateTime for {name}: {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def deployment_node(ctx: RequestContext, d: Deployment) -> dict[str, Any]:
    """A Deployment object as the schema shapes it (instances as the model keeps them)."""
    model = ctx.model
    return {
        "id": d.id,
        "status": d.status,
        "createdAt": iso(d.created_at),
        "updatedAt": iso(d.updated_at),
        "statusUpdatedAt": iso(d.updated_at),
        "canRollback": model.images.kept(d),
        "canRedeploy": True,
        "deploymentStopped": d.status == "REMOVED",
        "suggestAddServiceDomain": False,
        "staticUrl": d.static_url,
        "url": f"https://{d.static_url}" if d.static_url else None,
        "meta": d.meta,
        "serviceId": d.service_id,
        "environmentId": d.environment_id,
        "projectId": d.project_id,
        "instances": [{"id": i.id, "status": i.status} for i in d.instances],
        "sockets": [],
        "service": lambda *_, **__: service_node(ctx, model.services[d.service_id]),
        "environment": lambda *_, **__: environment_node(ctx, model.environments[d.environment_id]),
    }


def project_node(ctx: RequestContext, p: Project) -> dict[str, Any]:
    """A Project object."""
    scope = ctx.authorized()
    envs = [e for e in ctx.model.environments.values() if e.project_id == p.id]
    services = [s for s in ctx.model.services.values() if s.project_id == p.id]
    return common(p.id, p.created_at) | {
        "name": p.name,
        "description": None,
        "isPublic": False,
        "isTempProject": False,
        "prDeploys": False,
        "botPrEnvironments": False,
        "focusedPrEnvironments": False,
        "environments": _environments(ctx, envs, scope),
        "services": _lazy_connection(ctx, services, service_node),
        "deployments": _deployments_of(ctx, lambda d: d.project_id == p.id),
    }


def environment_node(ctx: RequestContext, e: Environment) -> dict[str, Any]:
    """An Environment object."""
    return common(e.id, e.created_at) | {
        "name": e.name,
        "projectId": e.project_id,
        "isEphemeral": e.ephemeral,
        "canAccess": True,
        "deployments": _deployments_of(ctx, lambda d: d.environment_id == e.id),
    }


def service_node(ctx: RequestContext, s: Service) -> dict[str, Any]:
    """A Service object."""
    return common(s.id, s.created_at) | {
        "name": s.name,
        "projectId": s.project_id,
        "icon": None,
        "isRestricted": False,
        "featureFlags": [],
        "project": lambda *_, **__: project_node(ctx, ctx.model.projects[s.project_id]),
        "deployments": _deployments_of(ctx, lambda d: d.service_id == s.id),
    }


def common(id: str, created_at: float) -> dict[str, Any]:
    """Fields every top-level object has."""
    return {"id": id, "createdAt": iso(created_at), "updatedAt": iso(created_at), "deletedAt": None}


def _environments(ctx: RequestContext, envs: list[Environment], scope: Scope) -> Any:
    """A project's environments, honouring ``isEphemeral`` (true: only PR environments)."""

    def resolve(_info: Any, **args: Any) -> dict[str, Any]:
        wanted = args.pop("isEphemeral", None)
        args.pop("sort", None)
        nodes = [
            environment_node(ctx, e)
            for e in envs
            if scope.allows(e.project_id, e.id) and wanted in (None, e.ephemeral)
        ]
        return connection(nodes, args)

    return resolve


def _deployments_of(ctx: RequestContext, keep: Callable[[Deployment], bool]) -> Any:
    scope = ctx.authorized()
    return _lazy_connection(
        ctx,
        [d for d in ctx.model.newest_first() if keep(d)],
        deployment_node,
        lambda d: scope.allows(d.project_id, d.environment_id),
    )


def _lazy_connection(
    ctx: RequestContext,
    items: list[T],
    to_node: Callable[[RequestContext, T], dict[str, Any]],
    visible: Callable[[T], bool] = lambda _: True,
) -> Callable[..., dict[str, Any]]:
    def resolve(_info: Any, **args: Any) -> dict[str, Any]:
        return connection([to_node(ctx, item) for item in items if visible(item)], args)

    return resolve


def connection(nodes: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    """A Relay connection over ``nodes`` (cursor = node id), honouring first/after/last/before."""
    ids = [n["id"] for n in nodes]
    start, end = 0, len(nodes)
    for name in ("after", "before"):
        cursor = args.get(name)
        if cursor is not None and cursor not in ids:
            raise graphql.GraphQLError(f"Invalid cursor for {name}: {cursor!r}")
    if args.get("after") is not None:
        start = ids.index(args["after"]) + 1
    if args.get("before") is not None:
        end = max(start, ids.index(args["before"]))
    for name in ("first", "last"):
        if (args.get(name) or 0) < 0:
            raise graphql.GraphQLError(f"{name} must not be negative")
    if args.get("first") is not None:
        end = min(end, start + args["first"])
    if args.get("last") is not None:
        start = max(start, end - args["last"])
    window = nodes[start:end]
    return {
        "edges": [{"cursor": n["id"], "node": n} for n in window],
        "pageInfo": {
            "startCursor": window[0]["id"] if window else None,
            "endCursor": window[-1]["id"] if window else None,
            "hasNextPage": end < len(nodes),
            "hasPreviousPage": start > 0,
        },
    }
