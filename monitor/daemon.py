"""The daemon: wires plan, sources, scheduler and server; startup -> main loop -> shutdown.

The signal handler only calls :meth:`Daemon.request_stop`; the main loop notices and the
shutdown is bounded by ``daemon.shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections import Counter as Tally
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from aiohttp import web

from monitor import __version__
from monitor.alerts.wiring import start_alerts
from monitor.clock import Clock
from monitor.engine import RuleState
from monitor.errors import RailguardError
from monitor.leadership import SOLO, Acting, Leader, solo_status
from monitor.lease import Lease
from monitor.model import Phase
from monitor.plan import Plan, ServicePlan, has_railway_ids
from monitor.railway_wiring import railway_poller, reconcile, start_rollbacks
from monitor.scheduler import Scheduler, ServiceWorker, VerdictSink
from monitor.server import create_app
from monitor.sources.registry import SourceContext, build_sources
from monitor.supervisor import Supervisor
from monitor.switchboard import Switchboard
from monitor.telemetry import Metrics

if TYPE_CHECKING:  # imported when used: the Railway client brings graphql-core (~5 MB)
    from monitor.alerts.digest import Digest
    from monitor.alerts.outbox import Outbox
    from monitor.alerts.router import Router
    from monitor.controller import RollbackController
    from monitor.executor import RollbackExecutor
    from monitor.pr_environments import PrEnvironments
    from monitor.railway.budget import RequestBudget
    from monitor.railway.client import RailwayClient
    from monitor.railway.poller import RailwayPoller
    from monitor.releases import ReleaseTracker
    from monitor.store import Store

log = structlog.get_logger("railguard.daemon")
SWITCH_INTERVAL = 0.0002  # seconds; see startup()


class Daemon:
    """railguard running: one scheduler, one HTTP client session, one server."""

    def __init__(
        self,
        plan: Plan,
        *,
        clock: Clock,
        metrics: Metrics | None = None,
        sink: VerdictSink | None = None,
        serve_http: bool = True,
        freeze_gc: bool = False,
        store: Store | None = None,
        lease: Lease | None = None,
        fenced: bool = True,
    ) -> None:
        """``lease``: several replicas share it and only its holder acts (None: this is the
        only replica, and it always acts). ``fenced``: the store checks its action-leading
        writes against the lease in their own transactions (a store on the lease's database)."""
        self.plan = plan
        self.clock = clock
        self.metrics = metrics if metrics is not None else Metrics()
        self.sink = sink
        self.serve_http = serve_http
        self.freeze_gc = freeze_gc
        self.store = store
        self._own_store = False
        self.tracker: ReleaseTracker | None = None
        self.outbox: Outbox | None = None
        self.router: Router | None = None
        self.digest: Digest | None = None
        self.supervisor = Supervisor(clock, self.metrics)
        self.executor: RollbackExecutor | None = None
        self.controller: RollbackController | None = None
        self.switchboard = Switchboard(lambda name: self._workers[name].states, sink=sink)
        self.scheduler: Scheduler | None = None
        self.session: aiohttp.ClientSession | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self.poller: RailwayPoller | None = None
        self.railway: RailwayClient | None = None
        self.budget: RequestBudget | None = None
        self.pr_environments: PrEnvironments | None = None
        self._stop = asyncio.Event()
        self.leader: Leader | None = None
        self.acting: Acting = SOLO
        self.fenced = fenced
        if lease is not None:
            self.leader = Leader(
                lease,
                clock=clock,
                metrics=self.metrics,
                takeover=self._take_over,
                stand_down=self._stand_down,
                leading_now=self._decide_all,
            )
            self.acting = self.leader
        self.switchboard.acting = self.acting

    def request_stop(self) -> None:
        """Ask the main loop to stop (safe to call from a signal handler, and twice)."""
        self._stop.set()

    async def startup(self) -> None:
        """Open the HTTP session, build the workers, start ticking and serving."""
        daemon = self.plan.config.daemon
        limit = daemon.max_concurrent_probes
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300),
            headers={"User-Agent": f"railguard/{__version__}"},
        )
        self._semaphore = asyncio.Semaphore(limit)
        self.poller = railway_poller(self, self.session)
        workers = [self.worker(service) for service in self.plan.services]
        self._workers = {w.plan.name: w for w in workers}
        if self.leader is not None and self.fenced:
            store = await self._ensure_store()
            store.fence = self.leader.fence()
        if self.store is not None:
            await self.restore_rule_states(workers)
        if self.poller is not None:
            await start_rollbacks(self, await self._ensure_store())
        self.switchboard.store = self.store
        if self.plan.config.channels:
            await start_alerts(self, await self._ensure_store())
        for tier, count in Tally(s.tier for s in self.plan.services).items():
            self.metrics.services.labels(tier).set(count)
        self.scheduler = Scheduler(
            workers, clock=self.clock, metrics=self.metrics, stagger=daemon.stagger
        )
        if self.serve_http:
            await self._start_server()
        if self.plan.pr_environments is not None and self.poller is not None:
            from monitor.pr_environments import PrEnvironments

            self.pr_environments = PrEnvironments(self)
            self.pr_environments.start(self.supervisor)
        if self.poller is not None:
            poller = self.poller
            # A poll may spend minutes in retries (5 attempts, 15s timeouts, backoff).
            self.supervisor.start(
                "railway-poller",
                poller.run,
                alive=lambda: poller.last_beat,
                stall_after=3 * poller.interval + 150.0,
            )
        if self.leader is not None:
            leader, terms = self.leader, self.leader.lease.terms
            # A look may wait for a connection timeout; three missed renewals is a stall.
            self.supervisor.start(
                "lease",
                leader.run,
                alive=lambda: leader.last_beat,
                stall_after=3 * terms.renew_every + 30.0,
            )
        self.scheduler.start()
        self.metrics.up.set(1)
        if self.leader is None:
            self.metrics.leader.set(1)  # the only replica: it leads
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            # The store's thread takes the GIL back after every SQLite call; at Python's 5 ms
            # a busy loop makes each statement of a burst's commit wait up to that long.
            sys.setswitchinterval(SWITCH_INTERVAL)
        if self.freeze_gc:
            # What startup built lives as long as the process: keep the collector off it.
            gc.collect()
            gc.freeze()
        log.info(
            "railguard started",
            version=__version__,
            services=len(workers),
            port=self.port,
            config=str(self.plan.path),
        )

    def worker(self, service: ServicePlan) -> ServiceWorker:
        """The worker that ticks ``service`` (started by the scheduler)."""
        assert self.session is not None
        worker = ServiceWorker(
            service,
            build_sources(SourceContext(service, self.session, self.clock, self.poller)),
            clock=self.clock,
            metrics=self.metrics,
            semaphore=self._semaphore,
            sink=self.switchboard.on_verdict,
            after_tick=self.switchboard.after_tick,
            redactor=self.plan.redactor,
        )
        worker.baselines = self.switchboard.baselines
        return worker

    async def restore_rule_states(self, workers: Sequence[ServiceWorker]) -> None:
        """Pending episodes survive a restart; a firing rule comes back pending, so the
        first breaching sample after the restart decides afresh (and can act)."""
        assert self.store is not None
        for worker in workers:
            saved = await self.store.rule_states(worker.plan.name)
            for rule in worker.plan.rules:
                if rule.name in saved:
                    state = RuleState.from_dict(saved[rule.name])
                    if state.phase is Phase.FIRING:
                        state = replace(state, phase=Phase.PENDING)
                    worker.states[rule.name] = state

    async def _take_over(self) -> None:
        """This replica just took the lease: reconcile, tell what its rules did while it
        stood by, then act."""
        if self.controller is not None:
            await reconcile(self)
        plans = [worker.plan for worker in self._workers.values()]
        await self.switchboard.take_over(plans, self.clock.time())

    async def _decide_all(self) -> None:
        """This replica leads now: every service decided at once from its warm rules, not
        at its next tick (a rollback due at the takeover waits no interval more)."""
        if self.controller is not None:
            for worker in self._workers.values():
                await self.controller.evaluate(worker.plan)

    async def _stand_down(self) -> None:
        """This replica no longer leads: drop the rollback work in flight."""
        if self.controller is not None:
            await self.controller.stand_down()

    async def _ensure_store(self) -> Store:
        if self.store is None:
            from monitor.store import open_store

            # Nowhere to keep state (tests, the demo): in memory, for this run only.
            self.store, self._own_store = await open_store(Path(":memory:")), True
        return self.store

    async def _start_server(self) -> None:
        # Requests in flight at shutdown get a second; the rest of the budget is the ticks'.
        self._runner = web.AppRunner(
            create_app(self, self.metrics), access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.plan.env.host, self.plan.env.port)
        await site.start()
        # Port 0 asks the OS for a free port: report the one we got.
        self.port = int(self._runner.addresses[0][1])

    async def main_loop(self) -> None:
        """Wait until a stop is requested."""
        await self._stop.wait()

    async def shutdown(self) -> None:
        """One bounded step: stop accepting requests, drain everything within
        ``daemon.shutdown_timeout``, cancel the rest and say how many."""
        self.metrics.up.set(0)
        timeout = self.plan.config.daemon.shutdown_timeout
        log.info("railguard stopping", timeout=timeout)
        started = self.clock.monotonic()

        def left() -> float:
            return max(0.0, timeout - (self.clock.monotonic() - started))

        if self._runner is not None:
            # No new requests first: the admin API must not start a rollback while the
            # executor is going away.
            for site in list(self._runner.sites):
                await site.stop()
        # The router, the digest and the poller: routine work, nothing is lost by dropping
        # it (the outbox keeps what is pending for the next run).
        await self.supervisor.stop()
        if self.controller is not None:
            await self.controller.aclose()  # unfinished rollbacks resume at the next start
        cancelled = 0
        drains: list[Awaitable[Any]] = []
        if self.scheduler is not None:
            drains.append(self.scheduler.stop(grace=left()))
        if self.outbox is not None:
            drains.append(self.outbox.stop(grace=left()))  # a delivery in flight may finish
        results = await asyncio.gather(*drains)
        if self.scheduler is not None:
            cancelled = int(results[0])
        if self.switchboard.baselines is not None:
            try:  # the last minute of each release's record (a failure loses only that)
                await self.switchboard.baselines.flush_all()
            except RailguardError as e:
                log.warning("could not save release summaries", error=str(e))
        if self._runner is not None:
            await self._runner.cleanup()
        if self.session is not None:
            await self.session.close()
        if self.leader is not None:
            # Last: nothing of this replica acts any more (a delivery in flight was recorded
            # or is sent again by the next leader), so a standby may take over at once.
            await self.leader.release()
        if self.store is not None and self._own_store:
            await self.store.close()
        log.info("railguard stopped", cancelled=cancelled)

    async def serve(self) -> None:
        """startup -> main_loop -> shutdown; what started is shut down even if a step fails."""
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()

    # -- what the server asks --------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """Alive while every service's ticks keep starting."""
        if self.scheduler is None:
            return False, {"reason": "not started"}
        stalled = self.scheduler.stalled(self.clock.monotonic())
        if stalled:
            return False, {"reason": "ticks stalled", "stalled": stalled[:20]}
        loops = self.supervisor.problems()
        if loops:
            return False, {"reason": "a loop is down or stalled", "loops": loops}
        return True, {"services": len(self.scheduler.workers)}

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready once started and until stopping."""
        if self.scheduler is None or not self.scheduler.running:
            return False, {"reason": "stopping" if self._stop.is_set() else "starting"}
        return True, {}

    @property
    def workers(self) -> tuple[ServiceWorker, ...]:
        """The running workers (none before startup)."""
        return self.scheduler.workers if self.scheduler is not None else ()

    def status(self) -> dict[str, object]:
        """Every service's state, and which replica leads."""
        return {
            "version": __version__,
            "leadership": self.leadership(),
            "services": [w.snapshot() for w in self.workers],
        }

    def leadership(self) -> dict[str, Any]:
        """Whether this replica leads, and who does (/status, ``railguard status``)."""
        return solo_status() if self.leader is None else self.leader.status()

    async def refresh_gauges(self) -> None:
        """``railguard_frozen`` from the store's freezes in force now (one query): right after
        a restart, after a freeze expired, or one set by another railguard."""
        # Railway services, PR environments' included (they come and go with their workers).
        services = [w.plan for w in self._workers.values() if has_railway_ids(w.plan.config)]
        if self.store is None or not services:
            return
        try:
            frozen = {f.service for f in await self.store.freezes(self.clock.time())}
        except RailguardError as e:  # a busy store: the scrape goes on with the last values
            log.warning("could not read freezes for the metrics", error=str(e))
            return
        for service in services:
            worker = self._workers.get(service.name)
            if worker is None or worker.plan is not service:
                continue  # dropped meanwhile (a PR environment): its series are forgotten
            self.metrics.frozen.labels(service.name, service.tier).set(service.name in frozen)

    async def status_document(self) -> dict[str, Any]:
        """What /status shows: services, releases, rules with their history, a timeline."""
        from monitor.status import status_document

        return await status_document(self)
