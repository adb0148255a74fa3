"""The effective plan: config + environment + rules, resolved per service and checked.

``railguard check`` prints it; ``railguard run`` executes it. Everything that can be wrong
with a configuration is found here, before the daemon starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from monitor.alerts.channels import channel_name
from monitor.environment import Environment
from monitor.errors import ConfigError
from monitor.maintenance import MaintenanceWindow, for_service
from monitor.model import LATENCY_SIGNALS, Rule, Signal, format_duration
from monitor.pr_config import PrEnvironmentsConfig
from monitor.redact import Redactor
from monitor.rules import LoadedRule, dry_run
from monitor.settings import (
    Config,
    RailwayConfig,
    ServiceConfig,
    TierPolicy,
)
from monitor.sources.health import HealthCheck
from monitor.sources.promql import QUANTILE
from monitor.sources.tables import SIGNAL_TABLES


@dataclass(frozen=True, slots=True)
class SkippedRule:
    """A rule of the service's tier that cannot apply to this service, and why."""

    name: str
    why: str


DECISION_WAIT = 30.0  # past a service's longest `for` and two intervals (ServicePlan.decision_wait)


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """One service with its tier policy and its resolved rules."""

    config: ServiceConfig
    policy: TierPolicy
    rules: tuple[Rule, ...]
    skipped: tuple[SkippedRule, ...] = ()
    maintenance: tuple[MaintenanceWindow, ...] = ()
    """The config's maintenance windows that cover this service."""

    @property
    def name(self) -> str:
        """The service's name in railguard (labels, logs, CLI)."""
        return self.config.name

    @property
    def tier(self) -> str:
        """The tier the service belongs to."""
        return self.config.tier

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        return self.config.interval

    @property
    def decision_wait(self) -> float:
        """How long a rule firing may wait for the controller's decision (its alert in the
        router, a resumed intent for whole evidence): the longest ``for``, two intervals
        and 30 s. A decision not made by then is not coming from that firing."""
        longest = max((rule.for_ for rule in self.rules), default=0.0)
        return longest + 2 * self.interval + DECISION_WAIT

    @property
    def health(self) -> HealthCheck | None:
        """The health check, if the service has one."""
        return self.config.health_check

    @property
    def signals(self) -> frozenset[Signal]:
        """The signals its rules need."""
        return frozenset(rule.signal for rule in self.rules)

    @property
    def latency_signals(self) -> tuple[Signal, ...]:
        """The latency quantiles its rules watch (p95 alone when only the table asks)."""
        if self.config.latency is None:
            return ()
        wanted = tuple(s for s in LATENCY_SIGNALS if s in self.signals)
        return wanted or (Signal.LATENCY_P95,)

    @property
    def wants_deployment(self) -> bool:
        """Whether a rule watches Railway's deployment status (the poller's Target.deployment)."""
        return Signal.DEPLOYMENT in self.signals


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the daemon will do, resolved and checked."""

    path: Path
    config: Config
    env: Environment
    services: tuple[ServicePlan, ...]
    rules: Mapping[str, LoadedRule]
    redactor: Redactor = field(default_factory=Redactor)
    """How whatever describes the plan shows its URLs and messages (secrets hidden)."""

    @property
    def project_id(self) -> str | None:
        """The Railway project (``railway.project_id``, else ``RAILWAY_PROJECT_ID``)."""
        return self.config.railway.project_id or self.env.railway_project_id

    @property
    def pr_environments(self) -> PrEnvironmentsConfig | None:
        """``[pr_environments]`` when enabled."""
        prs = self.config.pr_environments
        return prs if prs is not None and prs.enabled else None

    def pr_every(self) -> float:
        """Seconds between two looks for PR environments (never more often than polls)."""
        prs = self.pr_environments
        return 0.0 if prs is None else max(prs.every, self.config.railway.poll_interval)

    @property
    def railway_services(self) -> tuple[ServicePlan, ...]:
        """The services railguard asks Railway about (those with both Railway ids)."""
        return tuple(s for s in self.services if has_railway_ids(s.config))

    def railway_requests_per_hour(self) -> float:
        """Routine polling's cost: one batched request per poll for all Railway services."""
        if not self.railway_services:
            return 0.0
        looks = 3600.0 / self.pr_every() if self.pr_environments is not None else 0.0
        return 3600.0 / self.config.railway.poll_interval + looks

    def run_problems(self) -> list[str]:
        """What `check` may pass but `run` cannot start without (secrets absent here)."""
        env = self.env
        if self.railway_services and not (env.railway_api_token or env.railway_project_token):
            names = ", ".join(s.name for s in self.railway_services[:3])
            return [
                f"services {names} are on Railway, but neither RAILWAY_API_TOKEN nor "
                "RAILWAY_PROJECT_TOKEN is set"
            ]
        if self.pr_environments is not None and not env.railway_api_token:
            return [
                "pr_environments needs RAILWAY_API_TOKEN: a project token sees one environment, "
                "not the project's PR environments"
            ]
        return []

    def describe(self) -> str:
        """The plan for people, as ``railguard check`` prints it (no secret in it)."""
        shown = self.redactor.url
        lines = [f"config: {self.path}"]
        files = sorted({str(r.path) for r in self.rules.values()})
        lines.append(f"rule files: {', '.join(files)}")
        lines.append("tiers:")
        for name, policy in sorted(self.config.tiers.items()):
            rollback = "auto-rollback" if policy.auto_rollback else "no rollback"
            if policy.auto_rollback and policy.rebuild:
                timeout = format_duration(policy.rebuild_timeout)
                rollback += f" (or a rebuild within {timeout} when no image is left)"
            delivery: str = policy.delivery
            if delivery == "digest":
                delivery = f"digest at {policy.digest_at} UTC"
            lines.append(
                f"  {name}: {rollback}, severity {policy.severity}, alerts {delivery}, "
                f"bake {format_duration(policy.bake)}, rules {', '.join(policy.rules) or '-'}"
            )
        lines.append(f"services ({len(self.services)}):")
        for service in self.services:
            health = shown(service.health.url) if service.health else "no health check"
            lines.append(
                f"  {service.name} [{service.tier}] every {format_duration(service.interval)}"
                f": {health}"
            )
            if service.health is not None and service.health.release is not None:
                where = service.health.release.describe()
                lines.append(f"    release check: the answering deployment in the {where}")
            for table in SIGNAL_TABLES:
                source = getattr(service.config, table)
                if source is not None:
                    url = getattr(source, "url", None)
                    where = f" {shown(url)}" if isinstance(url, str) else ""
                    what = table
                    if table == "latency":
                        what = "latency " + "/".join(
                            s.value.removeprefix("latency_") for s in service.latency_signals
                        )
                    lines.append(f"    {what} from {source.source}{where}")
            for rule in service.rules:
                extra = "" if rule.tolerance >= 1 else f", tolerance {rule.tolerance:g}"
                lines.append(
                    f"    {rule.name}: {rule.describe()} (max_gap "
                    f"{format_duration(rule.max_gap)}{extra})"
                )
            lines += [f"    {skip.name}: skipped: {skip.why}" for skip in service.skipped]
        lines += self._describe_pr_environments()
        channels = self.config.channels
        if not channels:
            lines.append("channels: none configured (alerts go to the log)")
        else:
            lines.append(f"channels ({len(channels)}):")
            for index, channel in enumerate(channels):
                tiers = ", ".join(channel.tiers) if channel.tiers else "all tiers"
                to = _channel_url(channel)
                lines.append(
                    f"  {channel_name(channel, index)}: {channel.type}, "  # type: ignore[attr-defined]
                    f"{channel.min_severity.value} and above, {tiers}"
                    + ("" if to is None else f", to {shown(to)}")
                )
        if self.config.status_url is not None:
            lines.append(f"status page: {shown(self.config.status_url)}")
        railway = self.config.railway
        per_hour = self.railway_requests_per_hour()
        reserve = railway.requests_per_hour * railway.reserve
        lines.append(
            f"railway: {shown(self.env.railway_api_url)}, polling {per_hour:g} requests/hour "
            f"of {railway.requests_per_hour} ({100 * per_hour / railway.requests_per_hour:.0f}%)"
            f", {reserve:g}/hour kept for rollbacks"
        )
        if self.env.database_url is not None:
            terms = self.config.lease.terms
            lines.append(
                f"high availability: a leader lease in DATABASE_URL, ttl "
                f"{format_duration(terms.ttl)}, renewed every {format_duration(terms.renew_every)}"
                f" (a dead leader is replaced within {format_duration(terms.takeover_within)})"
            )
        lines += [f"warning: {problem}" for problem in self.run_problems()]
        return "\n".join(lines)

    def _describe_pr_environments(self) -> list[str]:
        prs = self.pr_environments
        if prs is None:
            return []
        lines = [
            f"pr environments: the project {self.project_id}'s, looked for every "
            f"{format_duration(self.pr_every())}, guarded as tier {prs.tier}:"
        ]
        for pr in prs.services:
            health = (
                "no health check" if pr.health_url is None else self.redactor.url(pr.health_url)
            )
            lines.append(f"  {pr.from_} -> {pr.from_}.<environment>: {health}")
        return lines


def _channel_url(channel: Any) -> str | None:
    """Where a channel sends, if it is one URL (a secret one too: it is shown redacted)."""
    url = getattr(channel, "url", None)
    if isinstance(url, SecretStr):
        return url.get_secret_value()
    return url if isinstance(url, str) else None


def has_railway_ids(service: ServiceConfig) -> bool:
    """Whether railguard can ask Railway about the service (both of its ids are set)."""
    return bool(service.service_id and service.environment_id)


def source_type(service: ServiceConfig, signal: Signal) -> str | None:
    """Which source feeds ``signal`` for the service (None: none configured)."""
    if signal is Signal.HEALTH:
        return "health" if service.health_check is not None else None
    if signal is Signal.DEPLOYMENT:  # automatic: Railway knows every service it runs
        return "railway" if has_railway_ids(service) else None
    table = signal.table
    config = None if table is None else getattr(service, table)
    return None if config is None else str(config.source)


NO_RAILWAY_IDS = (
    "the deployment signal comes from Railway and needs the service's service_id and environment_id"
)


NO_RELEASES = (
    "a baseline is a known-good release's own record, and releases come from Railway: it needs "
    "the service's service_id and environment_id"
)


# Sources whose samples say no request count: a baseline rule on them could never record a
# release nor compare with one (monitor/baseline.py), and would rest idle for ever.
_UNCOUNTED: dict[Signal, tuple[str, ...]] = {Signal.ERROR_RATE: ("promql",)}


def _cadence(service: ServiceConfig, signal: Signal, railway: RailwayConfig) -> float:
    # Railway's numbers arrive once per poll, however often the service ticks.
    if source_type(service, signal) == "railway":
        return max(service.interval, railway.poll_interval)
    return service.interval


def plan_service(
    here: str,
    service: ServiceConfig,
    config: Config,
    rules: Mapping[str, LoadedRule],
    at: Callable[..., str] | None = None,
) -> ServicePlan:
    """``here`` names the service in messages; ``at`` one of its keys, where the file wrote
    it (default: under ``here``)."""

    def written(*path: str) -> str:
        return at(*path) if at is not None else ".".join((here, *path))

    policy = config.tiers.get(service.tier)
    if policy is None:
        raise ConfigError(
            f"{here}.tier: no tier named {service.tier!r} "
            f"(tiers: {', '.join(sorted(config.tiers))})"
        )
    for name in service.rules:
        if name not in policy.rules:
            raise ConfigError(
                f"{written('rules', name)}: tier {service.tier!r} does not use rule {name!r} "
                f"(its rules: {', '.join(policy.rules) or 'none'})"
            )
    uses_railway = [
        table
        for table in SIGNAL_TABLES
        if getattr(getattr(service, table), "source", None) == "railway"
    ]
    if uses_railway and not (service.service_id and service.environment_id):
        raise ConfigError(
            f"{here} ({service.name}): {' and '.join(uses_railway)} from source 'railway' "
            "need the service's service_id and environment_id"
        )
    resolved = []
    skipped = []
    for name in policy.rules:
        spec = rules[name].spec
        if spec.signal is Signal.DEPLOYMENT and not has_railway_ids(service):
            # Not a mistake: without Railway ids there is nothing to watch, nor to roll back.
            skipped.append(SkippedRule(name, NO_RAILWAY_IDS))
            continue
        if spec.baseline is not None and not has_railway_ids(service):
            skipped.append(SkippedRule(name, NO_RELEASES))
            continue
        cadence = _cadence(service, spec.signal, config.railway)
        try:
            rule = spec.resolve(cadence, service.rules.get(name))
        except ValueError as e:  # the override's threshold does not fit the rule's signal
            where = written("rules", name, "threshold")
            raise ConfigError(f"{where} ({service.name}): {e}") from e
        if source_type(service, rule.signal) is None:
            key = "health_url" if rule.signal is Signal.HEALTH else str(rule.signal.table)
            raise ConfigError(
                f"{here} ({service.name}): rule {name!r} of tier {service.tier!r} needs the "
                f"{rule.signal.value} signal, but the service has no {key!r}: add it, or "
                f"take the rule out of tiers.{service.tier}.rules"
            )
        source = source_type(service, rule.signal)
        if rule.baseline is not None and source in _UNCOUNTED.get(rule.signal, ()):
            table = written(str(rule.signal.table))
            raise ConfigError(
                f"{table} ({service.name}): rule {name!r} compares request "
                f"counts with a release's record, but {rule.signal.value} from source "
                f"{source!r} counts no requests (use source 'railway' or 'exposition'), or "
                f"take the rule out of tiers.{service.tier}.rules"
            )
        problem = dry_run(rule, cadence)
        if problem:
            raise ConfigError(f"{written('rules', name)} ({service.name}): {problem}")
        resolved.append(rule)
    plan = ServicePlan(
        config=service,
        policy=policy,
        rules=tuple(resolved),
        skipped=tuple(skipped),
        maintenance=for_service(config.maintenance, service.name, service.tier),
    )
    _check_latency_query(here, plan)
    return plan


def _check_latency_query(here: str, plan: ServicePlan) -> None:
    """A written latency query serves several quantiles only with ``{quantile}`` in it."""
    query = getattr(plan.config.latency, "query", None)
    wanted = plan.latency_signals
    if isinstance(query, str) and QUANTILE not in query and len(wanted) > 1:
        names = ", ".join(s.value for s in wanted)
        raise ConfigError(
            f"{here}.latency.query ({plan.name}): its rules want {names}, but the query has no "
            f"{QUANTILE} to put each quantile in: write histogram_quantile({QUANTILE}, ...)"
        )
