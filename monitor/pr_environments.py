"""PR environments: find the project's ephemeral environments on Railway and guard each.

A loop under the supervisor asks Railway for the project's PR environments (one small request
every ``pr_environments.every``, never more often than the poll). An environment that
appears gets the services ``[pr_environments]`` names, planned from their templates with the
PR tier's policy: workers ticking them, the poller asking about them, the controller and the
executor knowing them. One that Railway no longer lists is dropped: its workers stopped, its
rule states deleted from the store, its metric series removed, and an event says so. An
answer railguard cannot read in full (an error, garbage, a partial page) changes nothing:
only Railway answering without an environment drops it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from monitor.errors import RailguardError
from monitor.events import (
    EventKind,
    PrEnvironmentEvent,
    PrEnvironmentKind,
    from_record,
    write_event,
)
from monitor.plan import ServicePlan
from monitor.pr_config import service_name as pr_service_name
from monitor.pr_plan import pr_service_plans
from monitor.railway.environments import DOCUMENT, PrEnvironment, read_environments
from monitor.railway_wiring import railway_target
from monitor.telemetry import Metrics

if TYPE_CHECKING:
    from monitor.daemon import Daemon
    from monitor.supervisor import Supervisor

log = structlog.get_logger("railguard.pr_environments")
LEFT_BEHIND_EVENTS = 1000  # how far back a start looks for PR environments guarded before


def forget_service(metrics: Metrics, name: str) -> int:
    """Remove every metric series labelled ``service=name``; returns how many."""
    return metrics.forget_service(name)


class PrEnvironments:
    """The guarded PR environments of the project, kept in step with Railway."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        assert daemon.plan.project_id is not None, "checked by the plan"
        assert daemon.railway is not None, "started with the poller"
        self.project_id = daemon.plan.project_id
        self.client = daemon.railway
        self.every = daemon.plan.pr_every()
        self.guarded: dict[str, tuple[PrEnvironment, tuple[ServicePlan, ...]]] = {}
        self.looks = 0
        self.last_problem: str | None = None  # why the last look changed nothing, if it did
        self.last_beat: float | None = None
        self._settled = False  # whether a whole listing has answered since the start
        self._unguarded: set[str] = set()  # listed, but a service has its services' name

    def start(self, supervisor: Supervisor) -> None:
        """Run :meth:`run` under the supervisor."""
        supervisor.start(
            "pr-environments",
            self.run,
            alive=lambda: self.last_beat,
            stall_after=3 * self.every + 150.0,
        )

    async def run(self) -> None:
        """Look on a drift-free cadence until cancelled."""
        clock = self.daemon.clock
        next_at = clock.monotonic()
        while True:
            self.last_beat = clock.monotonic()
            await self.look()
            next_at += self.every
            behind = clock.monotonic() - next_at
            if behind > 0:
                next_at += math.ceil(behind / self.every) * self.every
            await clock.sleep(next_at - clock.monotonic())

    async def look(self) -> None:
        """Ask Railway once; guard what appeared, drop what it no longer lists."""
        try:
            await self._look()
        finally:
            self.looks += 1  # looks finished (answered or not): what a test can wait for

    async def _look(self) -> None:
        try:
            data = await self.client.execute(DOCUMENT, {"project": self.project_id})
            listing = read_environments(data)
        except RailguardError as e:
            if self.last_problem is None:
                log.warning("could not list PR environments; guarding what was", error=str(e))
            self.last_problem = str(e)
            return
        self.last_problem = None
        listed = {env.id: env for env in listing.environments}
        for id, env in listed.items():
            if id not in self.guarded and not self._configured(id):
                await self._guard(env)
        if not listing.complete:  # a page only: the rest may still exist
            return
        for id in [id for id in self.guarded if id not in listed]:
            await self._drop(*self.guarded.pop(id))
        if not self._settled:
            self._settled = True
            await self._left_behind(listed)

    def _configured(self, environment_id: str) -> bool:
        """Whether a configured service already guards that environment (by hand)."""
        return any(s.config.environment_id == environment_id for s in self.daemon.plan.services)

    async def _guard(self, env: PrEnvironment) -> None:
        daemon = self.daemon
        try:
            plans = pr_service_plans(daemon.plan, env)
        except RailguardError as e:  # checked at start on an example: not expected
            log.error("cannot guard PR environment", environment=env.name, error=str(e))
            return
        taken = [p.name for p in plans if p.name in daemon._workers]
        if taken:
            if env.id not in self._unguarded:  # said once, not at every look
                self._unguarded.add(env.id)
                log.warning(
                    "PR environment not guarded: a service already has its name",
                    environment=env.name,
                    names=taken,
                )
            return
        self._unguarded.discard(env.id)
        self.guarded[env.id] = (env, plans)
        workers = [daemon.worker(p) for p in plans]
        if daemon.store is not None:
            try:
                await daemon.restore_rule_states(workers)  # railguard restarted during the PR
            except RailguardError as e:  # a busy store: the rules start afresh
                log.warning("could not restore rule states", environment=env.name, error=str(e))
        for worker, service in zip(workers, plans, strict=True):
            daemon._workers[service.name] = worker
            for table in self._service_maps(router=True):
                table[service.name] = service
        self._retarget()
        assert daemon.scheduler is not None
        for worker in workers:
            daemon.scheduler.add(worker)
        self._count()
        for service in plans:
            log.info("guarding PR environment", environment=env.name, service=service.name)
            await self._event(EventKind.PR_ENVIRONMENT_GUARDED, env, service)

    async def _drop(self, env: PrEnvironment, plans: tuple[ServicePlan, ...]) -> None:
        daemon = self.daemon
        self._retarget()
        for service in plans:
            if daemon.scheduler is not None:
                await daemon.scheduler.remove(service.name)
            daemon._workers.pop(service.name, None)
            for table in self._service_maps(router=False):
                table.pop(service.name, None)
            await self._delete_rule_states(service.name, [r.name for r in service.rules])
            forget_service(daemon.metrics, service.name)
            if daemon.switchboard.baselines is not None:
                daemon.switchboard.baselines.forget(service.name)
            log.info("dropped PR environment", environment=env.name, service=service.name)
            await self._event(EventKind.PR_ENVIRONMENT_DROPPED, env, service)
        self._count()

    async def _left_behind(self, listed: Mapping[str, PrEnvironment]) -> None:
        """PR environments an earlier run guarded that closed while railguard was down (the
        first whole listing after a start is the first word on them): their rule states
        are deleted and their end recorded, as if seen going."""
        store = self.daemon.store
        if store is None:
            return
        kinds = [EventKind.PR_ENVIRONMENT_GUARDED.value, EventKind.PR_ENVIRONMENT_DROPPED.value]
        try:
            events = await store.events(kinds=kinds, limit=LEFT_BEHIND_EVENTS)
        except RailguardError as e:
            log.warning("could not read which PR environments were guarded", error=str(e))
            return
        newest: dict[str, PrEnvironmentEvent] = {}
        for record in events:  # newest first: a service's last word on it wins
            typed = from_record(record)
            if record.service is not None and isinstance(typed, PrEnvironmentEvent):
                newest.setdefault(record.service, typed)
        for name, last in newest.items():
            gone = last.environment_id not in listed and last.environment_id not in self.guarded
            if last.kind is EventKind.PR_ENVIRONMENT_GUARDED and gone:
                # Every rule railguard knows: the tier's rules may have changed since.
                await self._delete_rule_states(name, list(self.daemon.plan.rules))
                env = PrEnvironment(last.environment_id, last.environment)
                log.info("dropped PR environment closed while railguard was down", service=name)
                await self._record(EventKind.PR_ENVIRONMENT_DROPPED, env, name, last.template)

    async def _delete_rule_states(self, service: str, rules: Sequence[str]) -> None:
        store = self.daemon.store
        if store is None:
            return
        for rule in rules:
            try:
                await store.delete_rule_state(service, rule)
            except RailguardError as e:
                log.warning("could not delete a rule state", service=service, error=str(e))

    def _service_maps(self, *, router: bool) -> list[dict[str, ServicePlan]]:
        """The controller's and the executor's services, and the router's (which keeps a
        dropped service's: its last events still route by its tier)."""
        daemon = self.daemon
        maps = [x.services for x in (daemon.controller, daemon.executor) if x is not None]
        if router and daemon.router is not None:
            maps.append(daemon.router.services)
        return maps

    def _retarget(self) -> None:
        poller = self.daemon.poller
        assert poller is not None
        services = [*self.daemon.plan.railway_services]
        services += [s for _, plans in self.guarded.values() for s in plans]
        poller.retarget([railway_target(s) for s in services])

    def _count(self) -> None:
        metrics, workers = self.daemon.metrics, self.daemon.workers
        prs = self.daemon.plan.pr_environments
        for tier in {w.plan.tier for w in workers} | ({prs.tier} if prs else set()):
            metrics.services.labels(tier).set(sum(w.plan.tier == tier for w in workers))

    async def _event(
        self, kind: PrEnvironmentKind, env: PrEnvironment, service: ServicePlan
    ) -> None:
        store = self.daemon.store
        if store is None:
            return
        prs = self.daemon.plan.pr_environments
        templates = (
            {}
            if prs is None
            else {pr_service_name(pr.from_, env.name): pr.from_ for pr in prs.services}
        )
        await self._record(kind, env, service.name, templates.get(service.name, "?"))

    async def _record(
        self, kind: PrEnvironmentKind, env: PrEnvironment, service: str, template: str
    ) -> None:
        store = self.daemon.store
        assert store is not None
        if not self.daemon.acting.leading():
            return  # the leader tells of it
        event = PrEnvironmentEvent(
            kind=kind, environment=env.name, environment_id=env.id, template=template
        )
        try:
            await write_event(store, service, event, self.daemon.clock.time())
        except RailguardError as e:
            log.warning("could not record an event", error=str(e))
