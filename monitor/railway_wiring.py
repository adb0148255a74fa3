"""The daemon's Railway side: the client and budget the poller asks through, and rollbacks.

What startup builds for services with Railway ids (the poller, release tracking, the
executor, the controller) and what they ask the daemon back; apart from daemon.py, which
keeps the lifecycle. Used by daemon.py and pr_environments.py (which retargets the poller).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import aiohttp
import structlog

from monitor.errors import RailguardError
from monitor.model import Phase, format_duration
from monitor.plan import ServicePlan
from monitor.sources.railway import RailwayErrorRate, RailwayLatency, RailwayMemory

if TYPE_CHECKING:  # imported when used: the Railway client brings graphql-core (~5 MB)
    from monitor.daemon import Daemon
    from monitor.railway.client import Deployment
    from monitor.railway.document import Target
    from monitor.railway.poller import RailwayPoller, ServiceSnapshot
    from monitor.store import Store

log = structlog.get_logger("railguard.daemon")


def railway_target(service: ServicePlan) -> Target:
    """The poller's view of a service with Railway ids."""
    from monitor.railway.document import Target

    config = service.config
    assert config.service_id is not None
    assert config.environment_id is not None
    error_rate, memory, latency = config.error_rate, config.memory, config.latency
    railway_latency = latency if isinstance(latency, RailwayLatency) else None
    return Target(
        name=service.name,
        service_id=config.service_id,
        environment_id=config.environment_id,
        error_rate=error_rate if isinstance(error_rate, RailwayErrorRate) else None,
        memory=memory if isinstance(memory, RailwayMemory) else None,
        latency=railway_latency,
        quantiles=service.latency_signals if railway_latency is not None else (),
        deployment=service.wants_deployment,
    )


def railway_poller(daemon: Daemon, session: aiohttp.ClientSession) -> RailwayPoller | None:
    """The poller for the plan's Railway services (None without any); the daemon keeps the
    client and the budget it asks through."""
    services = daemon.plan.railway_services
    if not services:
        return None
    from monitor.railway.budget import RequestBudget
    from monitor.railway.client import RailwayClient
    from monitor.railway.poller import RailwayPoller

    env, railway = daemon.plan.env, daemon.plan.config.railway
    daemon.budget = RequestBudget(
        daemon.clock,
        per_hour=railway.requests_per_hour,
        per_second=railway.requests_per_second,
        reserve=railway.reserve,
        metrics=daemon.metrics,
    )
    client = RailwayClient(
        session,
        url=env.railway_api_url,
        # A project token is scoped to one project: preferred when both are set.
        token=None if env.railway_project_token else env.railway_api_token,
        project_token=env.railway_project_token,
        clock=daemon.clock,
        budget=daemon.budget,
        metrics=daemon.metrics,
    )
    daemon.railway = client
    targets = [railway_target(s) for s in services]
    return RailwayPoller(client, targets, clock=daemon.clock, interval=railway.poll_interval)


async def start_rollbacks(daemon: Daemon, store: Store) -> None:
    """Release tracking, the executor and the controller, on ``store``; then settle what a
    previous run left open, before the first decision."""
    from monitor.baselines import BaselineBook, watched
    from monitor.controller import RollbackController
    from monitor.executor import RollbackExecutor
    from monitor.platform_watch import PlatformWatch
    from monitor.releases import ReleaseTracker

    assert daemon.poller is not None, "built only with Railway services"
    assert daemon.railway is not None
    daemon.tracker = ReleaseTracker(
        store,
        clock=daemon.clock,
        metrics=daemon.metrics,
        troubled=partial(_troubled, daemon),
        acting=daemon.acting,
    )
    services = daemon.plan.railway_services
    daemon.executor = RollbackExecutor(
        services=services,
        store=store,
        client=daemon.railway,
        clock=daemon.clock,
        metrics=daemon.metrics,
        latest=lambda name: daemon._workers[name].latest,
        reconcile_window=daemon.plan.config.railway.reconcile_window,
        acting=daemon.acting,
    )
    poller = daemon.poller

    def snapshot(name: str) -> tuple[float, Sequence[Deployment]] | None:
        latest = poller.latest(name)
        return None if latest is None else (latest.at, latest.deployments)

    def incident(now: float) -> str | None:
        trouble = poller.incident(now)  # fresh and troubled, else None
        return None if trouble is None else trouble.describe()

    daemon.controller = RollbackController(
        services=services,
        store=store,
        executor=daemon.executor,
        clock=daemon.clock,
        metrics=daemon.metrics,
        rule_states=lambda name: daemon._workers[name].states,
        snapshot=snapshot,
        blind=partial(_control, daemon),
        incident=incident,
        acting=daemon.acting,
    )
    daemon.switchboard.tracker = daemon.tracker
    daemon.switchboard.controller = daemon.controller
    if any(watched(s) for s in services):
        book = BaselineBook(store, daemon.tracker, clock=daemon.clock)
        daemon.switchboard.baselines = book
        daemon.executor.reference = book.reference
        for worker in daemon._workers.values():
            worker.baselines = book
    tracker, workers = daemon.tracker, daemon._workers

    async def observe(name: str, snapshot: ServiceSnapshot) -> None:
        if name in workers:  # a PR environment's service may have gone meanwhile
            await tracker.observe(workers[name].plan, snapshot)

    poller.listener = observe
    poller.platform_listener = PlatformWatch(store, daemon.acting).observe
    if daemon.leader is None:  # with a lease, the replica that takes it reconciles first
        await reconcile(daemon)


async def reconcile(daemon: Daemon) -> None:
    """Settle what a previous run (or the last leader) left unfinished."""
    controller, store = daemon.controller, daemon.store
    assert controller is not None
    assert store is not None
    try:
        await controller.reconcile()
    except RailguardError as e:  # Railway unreachable: the store keeps them for later
        log.error("could not reconcile unfinished rollbacks", error=str(e))
        controller.open.update(
            r.service
            for r in await store.rollbacks(unfinished=True)
            if r.service in controller.services
        )


def _troubled(daemon: Daemon, name: str) -> bool:
    """Any rule of the service pending, firing or blind now."""
    states = daemon._workers[name].states.values()
    return any(s.phase is not Phase.INACTIVE or s.blind for s in states)


async def _control(daemon: Daemon, name: str) -> str | None:
    """Can railguard see service ``name`` on Railway? Its last poll answered, recently,
    and Railway answered for this service."""
    poller = daemon.poller
    if poller is None:
        return None
    if poller.last_failure is not None:
        return f"the last Railway poll failed: {poller.last_failure}"
    age = poller.age(daemon.clock.time())
    if age is not None and age > poller.max_age:  # stuck, not merely slowed by the budget
        return f"the last Railway poll answered {format_duration(age)} ago"
    latest = poller.latest(name)
    if latest is not None and latest.problem is not None:
        return f"Railway's answer about this service: {latest.problem}"
    return None
