"""The Railway emulator's GraphQL resolvers: Railway's root fields over the in-memory model.

graphql-core validates and executes each request against the real schema; :func:`resolve_field`
answers the Query and Mutation fields from :class:`EmulatorModel` with the node shapes of
emulator_nodes, and graphql-core's default resolver reads the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import graphql

from monitor.sandbox.emulator_images import rebuild_of
from monitor.sandbox.emulator_latency import duration_samples
from monitor.sandbox.emulator_model import Deployment, EmulatorError, Environment, Service
from monitor.sandbox.emulator_nodes import (
    NOT_AUTHORIZED,
    MutationRecord,
    RequestContext,
    Scope,
    common,
    connection,
    deployment_node,
    environment_node,
    parse_time,
    project_node,
    service_node,
)

MAX_POINTS = 10_000
DEFAULT_STEP = 60
_GROUP_TAGS: dict[str, tuple[str, Callable[[Deployment], str]]] = {
    "DEPLOYMENT_ID": ("deploymentId", lambda d: d.id),
    "SERVICE_ID": ("serviceId", lambda d: d.service_id),
    "ENVIRONMENT_ID": ("environmentId", lambda d: d.environment_id),
    "PROJECT_ID": ("projectId", lambda d: d.project_id),
}
_TAG_FIELDS = [
    "deploymentId",
    "deploymentInstanceId",
    "environmentId",
    "pluginId",
    "projectId",
    "region",
    "serviceId",
    "volumeId",
    "volumeInstanceId",
]


Handler = Callable[[RequestContext, dict[str, Any]], Any]


def resolve_field(source: Any, info: graphql.GraphQLResolveInfo, **args: Any) -> Any:
    """graphql-core field resolver: root fields go to the handlers, the rest reads dicts."""
    parent = info.parent_type.name
    table = QUERIES if parent == "Query" else MUTATIONS if parent == "Mutation" else None
    if table is None:
        return graphql.default_field_resolver(source, info, **args)
    handler = table.get(info.field_name)
    if handler is None:
        raise graphql.GraphQLError(f"{parent}.{info.field_name} is not emulated")
    ctx: RequestContext = info.context
    try:
        result = handler(ctx, args)
    except (graphql.GraphQLError, EmulatorError) as error:
        message = error.message
        if parent == "Mutation":
            ctx.mutations.append(_record(ctx, info.field_name, args, message))
        raise graphql.GraphQLError(message) from error
    if parent == "Mutation":
        ctx.mutations.append(_record(ctx, info.field_name, args, None))
    return result


def _record(
    ctx: RequestContext, name: str, args: dict[str, Any], error: str | None
) -> MutationRecord:
    return MutationRecord(ctx.model.clock.time(), name, dict(args), error is None, error)


# -- visibility --------------------------------------------------------------------------------


def _visible_deployment(ctx: RequestContext, deployment_id: str) -> Deployment:
    scope = ctx.authorized()
    d = ctx.model.deployments.get(deployment_id)
    if d is None:
        raise graphql.GraphQLError("Deployment not found")
    if not scope.allows(d.project_id, d.environment_id):
        raise graphql.GraphQLError(NOT_AUTHORIZED)
    return d


def _check_filters(ctx: RequestContext, filters: dict[str, Any]) -> Scope:
    """Refuse filters naming a project, environment or service outside the token's scope."""
    scope = ctx.authorized()
    model = ctx.model
    checks: list[tuple[str, str | None]] = []
    if (pid := filters.get("projectId")) is not None:
        checks.append((pid, None))
    if (eid := filters.get("environmentId")) in model.environments:
        checks.append((model.environments[eid].project_id, eid))
    if (sid := filters.get("serviceId")) in model.services:
        checks.append((model.services[sid].project_id, None))
    if not all(scope.allows(p, e) for p, e in checks):
        raise graphql.GraphQLError(NOT_AUTHORIZED)
    return scope


def _instance(ctx: RequestContext, args: dict[str, Any]) -> tuple[Service, Environment]:
    """The service and environment named by ``serviceId`` and ``environmentId``."""
    _check_filters(ctx, args)
    service = ctx.model.service(args["serviceId"])
    env = ctx.model.environment(args["environmentId"])
    if env.project_id != service.project_id:
        raise graphql.GraphQLError("ServiceInstance not found")
    return service, env


def _matches(d: Deployment, filters: dict[str, Any]) -> bool:
    wanted = {
        "projectId": d.project_id,
        "environmentId": d.environment_id,
        "serviceId": d.service_id,
    }
    return all(filters.get(k) in (None, v) for k, v in wanted.items())


# -- queries -----------------------------------------------------------------------------------


def q_deployments(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``deployments(input: DeploymentListInput!, first, after, last, before)``, newest first."""
    filters = args["input"]
    scope = _check_filters(ctx, filters)
    status = filters.get("status") or {}
    include, exclude = status.get("in"), status.get("notIn")
    nodes = [
        deployment_node(ctx, d)
        for d in ctx.model.newest_first()
        if scope.allows(d.project_id, d.environment_id)
        and _matches(d, filters)
        and (include is None or d.status in include)
        and (exclude is None or d.status not in exclude)
    ]
    return connection(nodes, args)


def q_deployment(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``deployment(id)``."""
    return deployment_node(ctx, _visible_deployment(ctx, args["id"]))


def q_project(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``project(id)``."""
    _check_filters(ctx, {"projectId": args["id"]})
    return project_node(ctx, ctx.model.project(args["id"]))


def q_environment(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``environment(id, projectId)``."""
    _check_filters(ctx, {"environmentId": args["id"]})
    return environment_node(ctx, ctx.model.environment(args["id"]))


def q_service(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``service(id)``."""
    _check_filters(ctx, {"serviceId": args["id"]})
    return service_node(ctx, ctx.model.service(args["id"]))


def q_service_instance(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``serviceInstance(environmentId, serviceId)``: latest and active deployments."""
    model = ctx.model
    service, env = _instance(ctx, args)
    mine = [d for d in model.newest_first() if _matches(d, args)]
    active_id = model.active.get((service.id, env.id))
    return common(f"{service.id}:{env.id}", service.created_at) | {
        "serviceId": service.id,
        "environmentId": env.id,
        "serviceName": service.name,
        "latestDeployment": deployment_node(ctx, mine[0]) if mine else None,
        "activeDeployments": [deployment_node(ctx, d) for d in mine if d.id == active_id],
        "numReplicas": next((d.replicas for d in mine if d.id == active_id), 1),
        "service": lambda *_, **__: service_node(ctx, service),
    }


def q_metrics(ctx: RequestContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """``metrics(...)``: values sampled every ``sampleRateSeconds``, summed per group."""
    scope = _check_filters(ctx, args)
    start, end, step = _window(ctx, args, "sampleRateSeconds", inclusive=True)
    group_by = args.get("groupBy") or []
    unsupported = [tag for tag in group_by if tag not in _GROUP_TAGS]
    if unsupported:
        raise graphql.GraphQLError(f"groupBy {', '.join(unsupported)} is not emulated")
    if args.get("volumeId") or args.get("volumeInstanceExternalId"):
        return []
    deployments = [
        d
        for d in ctx.model.deployments.values()
        if scope.allows(d.project_id, d.environment_id) and _matches(d, args)
    ]
    stamps = range(math.ceil(start / step) * step, math.floor(end) + 1, step)
    results = []
    for measurement in args["measurements"]:
        groups: dict[tuple[str, ...], dict[int, float]] = {}
        for d in deployments:
            key = tuple(_GROUP_TAGS[tag][1](d) for tag in group_by)
            for ts in stamps:
                value = ctx.model.metric_value(d, measurement, ts)
                if value is not None:
                    sums = groups.setdefault(key, {})
                    sums[ts] = sums.get(ts, 0.0) + value
        for key, sums in groups.items():
            tags: dict[str, Any] = dict.fromkeys(_TAG_FIELDS) | {
                k: args.get(k) for k in ("projectId", "environmentId", "serviceId")
            }
            tags |= {_GROUP_TAGS[tag][0]: value for tag, value in zip(group_by, key, strict=True)}
            values = [{"ts": ts, "value": v} for ts, v in sorted(sums.items())]
            results.append({"measurement": measurement, "tags": tags, "values": values})
    return results


def q_http_by_status(ctx: RequestContext, args: dict[str, Any]) -> list[dict[str, Any]]:
    """``httpMetricsGroupedByStatus``: requests per status code per ``stepSeconds`` bucket.

    A status code that saw any request in the window gets a sample for every bucket (zeros
    included), so a client can divide errors by the total without guessing at gaps.
    """
    model = ctx.model
    service, env = _instance(ctx, args)
    start, end, step = _window(ctx, args, "stepSeconds", inclusive=False)
    first = math.floor(start / step) * step
    buckets = range(first, math.ceil(end), step)
    stop = first + len(buckets) * step
    counts: dict[int, dict[int, float]] = {}

    def add(status: int, bucket: int, count: float) -> None:
        if count > 0:
            per = counts.setdefault(status, {})
            per[bucket] = per.get(bucket, 0.0) + count

    for event in model.http.get((service.id, env.id), []):
        if first <= event.at < stop:
            add(event.status, first + int((event.at - first) // step) * step, event.count)
    segments = model.traffic.get((service.id, env.id), [])
    now = model.clock.time()
    for i, seg in enumerate(segments):
        seg_end = min(segments[i + 1].start if i + 1 < len(segments) else now, now)
        for bucket in buckets:
            overlap = min(bucket + step, seg_end) - max(bucket, seg.start)
            total = seg.rps * max(0.0, overlap)
            add(seg.error_status, bucket, total * seg.error_ratio)
            add(200, bucket, total * (1 - seg.error_ratio))
    return [
        {
            "statusCode": status,
            "samples": [{"ts": b, "value": counts[status].get(b, 0.0)} for b in buckets],
        }
        for status in sorted(counts)
    ]


def q_http_duration(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``httpDurationMetrics``: request-duration quantiles in ms per ``stepSeconds`` bucket,
    of the same requests httpMetricsGroupedByStatus counts (emulator_latency); ``method`` and
    ``path`` are not modelled (every request matches)."""
    model = ctx.model
    service, env = _instance(ctx, args)
    start, end, step = _window(ctx, args, "stepSeconds", inclusive=False)
    first = math.floor(start / step) * step
    key = (service.id, env.id)
    samples = duration_samples(
        model.traffic.get(key, []),
        model.http.get(key, []),
        range(first, math.ceil(end), step),
        step,
        model.clock.time(),
        args.get("statusCode"),
    )
    return {"samples": samples}


def _window(
    ctx: RequestContext, args: dict[str, Any], step_arg: str, *, inclusive: bool
) -> tuple[float, float, int]:
    start = parse_time(args["startDate"], "startDate")
    end_arg = args.get("endDate")
    end = ctx.model.clock.time() if end_arg is None else parse_time(end_arg, "endDate")
    step = args.get(step_arg)
    step = DEFAULT_STEP if step is None else step
    if step <= 0:
        raise graphql.GraphQLError(f"{step_arg} must be positive")
    if (end - start) / step + int(inclusive) > MAX_POINTS:
        raise graphql.GraphQLError(f"Too many data points: raise {step_arg} or narrow the window")
    return start, end, step


def q_platform_status(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``platformStatus``: Railway's own incidents and maintenance (asked by anyone)."""
    if ctx.platform is None:
        return {"isStable": True, "incident": None, "maintenance": None}
    return ctx.platform.answer()


# -- mutations ---------------------------------------------------------------------------------


def m_rollback(ctx: RequestContext, args: dict[str, Any]) -> bool:
    """``deploymentRollback(id)``: redeploy the release of an OLD deployment."""
    d = _visible_deployment(ctx, args["id"])
    if not ctx.model.images.kept(d):
        raise graphql.GraphQLError("Deployment cannot be rolled back")
    ctx.model.start_deployment(d, rollback=True)
    return True


def m_redeploy(ctx: RequestContext, args: dict[str, Any]) -> dict[str, Any]:
    """``deploymentRedeploy(id, usePreviousImageTag)``: the new Deployment."""
    d = _visible_deployment(ctx, args["id"])
    new = ctx.model.start_deployment(d, rollback=bool(args.get("usePreviousImageTag")))
    return deployment_node(ctx, new)


def m_deploy_v2(ctx: RequestContext, args: dict[str, Any]) -> str:
    """``serviceInstanceDeployV2(environmentId, serviceId, commitSha)``: build and deploy a
    commit (the latest without one); the new deployment's id (see emulator_images)."""
    model = ctx.model
    service, env = _instance(ctx, args)
    build = rebuild_of(
        model.newest_first(), service.id, env.id, args.get("commitSha"), now=model.clock.time()
    )
    if build is None:
        raise graphql.GraphQLError("No commit to deploy: the service has no source")
    new = model.deploy(
        service.id, env.id, meta=build.meta, static_url=build.static_url, replicas=build.replicas
    )
    return new.id


def m_restart(ctx: RequestContext, args: dict[str, Any]) -> bool:
    """``deploymentRestart(id)``."""
    ctx.model.restart(_visible_deployment(ctx, args["id"]))
    return True


def m_remove(ctx: RequestContext, args: dict[str, Any]) -> bool:
    """``deploymentRemove(id)``."""
    ctx.model.remove(_visible_deployment(ctx, args["id"]))
    return True


QUERIES: dict[str, Handler] = {
    "deployments": q_deployments,
    "deployment": q_deployment,
    "project": q_project,
    "environment": q_environment,
    "service": q_service,
    "serviceInstance": q_service_instance,
    "metrics": q_metrics,
    "httpMetricsGroupedByStatus": q_http_by_status,
    "httpDurationMetrics": q_http_duration,
    "platformStatus": q_platform_status,
}
MUTATIONS: dict[str, Handler] = {
    "deploymentRollback": m_rollback,
    "deploymentRedeploy": m_redeploy,
    "deploymentRestart": m_restart,
    "deploymentRemove": m_remove,
    "serviceInstanceDeployV2": m_deploy_v2,
}
