"""The services of one PR environment, planned from their templates (``[pr_environments]``)."""

from __future__ import annotations

from typing import Any

from monitor.errors import ConfigError
from monitor.plan import Plan, ServicePlan, has_railway_ids, plan_service
from monitor.pr_config import EXAMPLE, PrService, fill
from monitor.pr_config import service_name as pr_service_name
from monitor.railway.environments import PrEnvironment
from monitor.settings import ServiceConfig
from monitor.sources.health import HealthCheck


def _pr_service(
    template: ServiceConfig, pr: PrService, tier: str, env: PrEnvironment
) -> ServiceConfig:
    """A template's service in one PR environment: its Railway service (services are
    per project, instances per environment), its checks, on the PR environment's id."""
    check = None
    if pr.health_url is not None:
        url = fill(
            pr.health_url, environment=env.name, environment_id=env.id, service=template.name
        )
        health = template.health_check
        check = HealthCheck(url=url) if health is None else health.model_copy(update={"url": url})

    def railway(source: Any) -> Any:  # the app's own exposition or PromQL: the base's, not its
        return source if getattr(source, "source", None) == "railway" else None

    latency = railway(template.latency)
    if check is not None and getattr(template.latency, "source", None) == "health":
        latency = template.latency  # the PR's own probes, timed

    return template.model_copy(
        update={
            "name": pr_service_name(template.name, env.name),
            "tier": tier,
            "environment_id": env.id,
            "health_url": None,
            "health": check,
            "error_rate": railway(template.error_rate),
            "memory": railway(template.memory),
            "latency": latency,
        }
    )


def pr_service_plans(plan: Plan, env: PrEnvironment) -> tuple[ServicePlan, ...]:
    """The services railguard guards in PR environment ``env`` (``[pr_environments]``)."""
    prs = plan.config.pr_environments
    if prs is None or not prs.enabled:
        return ()
    by_name = {s.name: s for s in plan.config.services}
    out = []
    for i, pr in enumerate(prs.services):
        here = f"{plan.path}: pr_environments.services[{i}]"
        template = by_name.get(pr.from_)
        if template is None:
            raise ConfigError(
                f"{here}.from: no configured service named {pr.from_!r} "
                f"(services: {', '.join(sorted(by_name)[:10])})"
            )
        if not has_railway_ids(template):
            raise ConfigError(
                f"{here}.from: service {pr.from_!r} has no service_id and environment_id: "
                "a PR environment is found on Railway, and so is the service in it"
            )
        config = _pr_service(template, pr, prs.tier, env)
        policy_rules = plan.config.tiers[prs.tier].rules
        config = config.model_copy(
            update={"rules": {k: v for k, v in config.rules.items() if k in policy_rules}}
        )
        out.append(plan_service(here, config, plan.config, plan.rules))
    return tuple(out)


def check_pr_environments(plan: Plan) -> None:
    """``[pr_environments]``: a project to look in, a tier, and services that can be planned
    in any PR environment (tried on an example one, so mistakes show at start)."""
    prs = plan.config.pr_environments
    if prs is None or not prs.enabled:
        return
    where = f"{plan.path}: pr_environments"
    if plan.project_id is None:
        raise ConfigError(
            f"{where}: needs railway.project_id (or RAILWAY_PROJECT_ID): the project whose "
            "PR environments railguard guards"
        )
    if prs.tier not in plan.config.tiers:
        raise ConfigError(
            f"{where}.tier: no tier named {prs.tier!r} "
            f"(tiers: {', '.join(sorted(plan.config.tiers))})"
        )
    pr_service_plans(plan, PrEnvironment(EXAMPLE["environment_id"], EXAMPLE["environment"]))
