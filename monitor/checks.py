"""What ``railguard check`` warns about: a valid config that will not do what it says.

Each warning names the file (or the environment variable) and the key, gives the numbers, and
says what to change. They are not config errors: railguard runs with them (``check`` exits 0),
and ``check --strict`` fails on them (exit 1), for a CI that wants none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from monitor.alerts.model import Severity
from monitor.model import format_duration
from monitor.plan import Plan, ServicePlan

PLANS = "Free 100, Hobby 1000, Pro 10000 requests/hour"
SHOWN_SERVICES = 5
"""Services a warning names before it says how many more."""


def warnings(plan: Plan) -> list[str]:
    """Every warning for ``plan``, each one line without the ``warning:`` prefix."""
    checks: tuple[Callable[[Plan], list[str]], ...] = (budget, channels, project_token, lease)
    return [line for check in checks for line in check(plan)]


def _names(services: list[ServicePlan] | tuple[ServicePlan, ...]) -> str:
    names = ", ".join(s.name for s in services[:SHOWN_SERVICES])
    more = len(services) - SHOWN_SERVICES
    return names + (f" and {more} more" if more > 0 else "")


def polling_cost(plan: Plan, poll_interval: float) -> float:
    """Requests/hour routine polling needs at ``poll_interval`` (the plan's other settings),
    for a plan with services on Railway."""
    looks = 0.0
    prs = plan.pr_environments
    if prs is not None:  # never more often than polls (Plan.pr_every)
        looks = 3600.0 / max(prs.every, poll_interval)
    return 3600.0 / poll_interval + looks


def fitting_interval(plan: Plan, per_hour: float) -> int | None:
    """The shortest whole-second poll interval whose polling fits in ``per_hour`` (None:
    none up to railguard's longest, 1h)."""
    for seconds in range(max(1, math.ceil(plan.config.railway.poll_interval)), 3601):
        if polling_cost(plan, float(seconds)) <= per_hour:
            return seconds
    return None


def budget(plan: Plan) -> list[str]:
    """Polling that needs more of Railway's hourly limit than routine polling may spend.

    Over the plan's limit (``railway.requests_per_hour``), or over what the reserve leaves of
    it: either way the budget slows polling down (:mod:`monitor.railway.budget`), so Railway's
    signals arrive less often than ``poll_interval`` says.
    """
    railway = plan.config.railway
    need = plan.railway_requests_per_hour()
    limit = railway.requests_per_hour
    routine = limit * (1 - railway.reserve)
    if need <= routine:
        return []
    cost = f"one request per poll_interval {format_duration(railway.poll_interval)}"
    if plan.pr_environments is not None:
        cost += f" and one per pr_environments look every {format_duration(plan.pr_every())}"
    fit = fitting_interval(plan, routine)
    interval = (
        "no poll_interval up to 1h fits"
        if fit is None
        else f"set railway.poll_interval to at least {format_duration(float(fit))}"
    )
    change = (
        f"{interval}, or take a bigger plan ({PLANS}); polling is one batched request for "
        f"all {len(plan.railway_services)} services on Railway, so fewer services do not help"
    )
    if plan.env.database_url is not None:
        change += (
            "; with DATABASE_URL every replica polls: requests_per_hour is each replica's "
            "share, the plan's limit divided by the replicas"
        )
    slowed = (
        f"railguard slows polling to {routine:g}/hour (about one request every "
        f"{format_duration(math.ceil(3600 / routine))})"
        if routine >= 1
        else "railguard cannot poll at all"
    )
    where = f"{plan.path}: railway"
    if need > limit:
        return [
            f"{where}.requests_per_hour: polling needs {need:g} requests/hour ({cost}), "
            f"{100 * need / limit:.0f}% of the plan's {limit}/hour; {slowed}, keeping "
            f"{limit - routine:g}/hour for rollbacks: {change}"
        ]
    return [
        f"{where}.reserve: polling needs {need:g} requests/hour ({cost}), more than the "
        f"{routine:g}/hour the reserve ({railway.reserve:g}) leaves of the plan's {limit}/hour; "
        f"{slowed}: {change}, or lower railway.reserve"
    ]


def _tiers_in_use(plan: Plan) -> dict[str, list[ServicePlan]]:
    tiers: dict[str, list[ServicePlan]] = {}
    for service in plan.services:
        tiers.setdefault(service.tier, []).append(service)
    prs = plan.pr_environments
    if prs is not None:
        tiers.setdefault(prs.tier, [])
    return tiers


def channels(plan: Plan) -> list[str]:
    """Tiers whose alerts are sent (``immediate`` or ``digest``) but reach no channel."""
    out = []
    for tier, services in _tiers_in_use(plan).items():
        policy = plan.config.tiers[tier]
        if policy.delivery == "off":
            continue
        severity = Severity(policy.severity)
        configured = plan.config.channels
        receivers = [
            c
            for c in configured
            if severity.rank >= c.min_severity.rank and (c.tiers is None or tier in c.tiers)
        ]
        if receivers:
            continue
        who = f"services {_names(services)}" if services else "PR environments"
        why = (
            "no [[channels]] is configured"
            if not configured
            else "every channel's tiers or min_severity leaves them out"
        )
        out.append(
            f"{plan.path}: tiers.{tier}.delivery: {policy.delivery} alerts (severity "
            f"{severity.value}) for {who} reach no channel ({why}): they only go to the log. "
            f'Add a [[channels]] table that takes them, or set delivery = "off"'
        )
    return out


def project_token(plan: Plan) -> list[str]:
    """A project token (one environment's) for services in several environments."""
    if plan.env.railway_project_token is None:
        return []
    by_environment: dict[str, list[ServicePlan]] = {}
    for service in plan.railway_services:
        by_environment.setdefault(service.config.environment_id or "", []).append(service)
    if len(by_environment) < 2:
        return []
    shown = "; ".join(
        f"{plan.redactor.text(environment)}: {_names(services)}"
        for environment, services in by_environment.items()
    )
    both = " (it is used when both are set)" if plan.env.railway_api_token is not None else ""
    return [
        f"environment: RAILWAY_PROJECT_TOKEN: a project token sees one environment{both}, but "
        f"the services on Railway are in {len(by_environment)} environments ({shown}): "
        "Railway refuses those the token cannot see, so their Railway signals are unknown and "
        "their rollbacks held. Use a workspace token in RAILWAY_API_TOKEN instead, or one "
        "railguard per environment, each with that environment's project token"
    ]


def lease(plan: Plan) -> list[str]:
    """With ``DATABASE_URL``: a leader acts for ``ttl - margin`` after a renewal began; with
    fewer than two renewals in that time, one slow or failed renewal (a database busy for a
    moment) makes a healthy leader stand down, and the takeover that follows settles every
    unfinished rollback again."""
    if plan.env.database_url is None:
        return []
    terms = plan.config.lease.terms
    acting = terms.ttl - terms.margin
    if terms.renew_every <= acting / 2:
        return []
    return [
        f"{plan.path}: lease.renew_every {format_duration(terms.renew_every)} leaves a leader "
        f"one renewal in the {format_duration(acting)} it acts for after one began (ttl "
        f"{format_duration(terms.ttl)} less {format_duration(terms.margin)}): one slow renewal "
        f"makes it stand down; renew at most every {format_duration(acting / 2)}, or make "
        "ttl longer"
    ]


def describe_apps(plan: Plan) -> list[str]:
    """The services ``[[apps]]`` expanded to: name, tier, health URL and Railway ids."""
    apps = plan.config.apps
    if not apps:
        return []
    by_name = {s.name: s for s in plan.services}
    lines = [f"apps ({len({a.app for a in apps})}), as the services they expand to:"]
    for record in apps:
        service = by_name[record.service]
        config = service.config
        health = plan.redactor.url(service.health.url) if service.health else "no health check"
        ids = "no Railway ids"
        if config.service_id is not None and config.environment_id is not None:
            ids = (
                f"service_id {plan.redactor.text(config.service_id)}, "
                f"environment_id {plan.redactor.text(config.environment_id)}"
            )
        lines.append(
            f"  {record.app} in {record.environment} -> {record.service} [{service.tier}]: "
            f"{health}, {ids}"
        )
    return lines
