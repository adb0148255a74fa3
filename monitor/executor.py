"""The rollback executor: write-ahead intent, the mutation (sent at most once unless Railway
provably did not apply it), the replacement followed to SUCCESS, and verification.

The controller (or a person, through the admin API) decides; the executor carries the decision
out and records each step in the store before the next one, so a crash, a lost answer or a
failed step leaves a record the next evaluation can drive on from. :meth:`drive` is that: it
takes a rollback in whatever state the store has it and moves it to a terminal state.
Exceptions (Railway unreachable after retries, the store busy) leave the record unfinished and
propagate: the caller counts them, and the next evaluation drives it again. A rebuild (no
rollback image left: rebuild.py) is driven the same way, with its own mutation and timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from monitor.clock import Clock
from monitor.decision import Go, manual_target
from monitor.errors import (
    NotLeader,
    RailguardError,
    RailwayError,
    RailwayProtocolError,
    RailwayTransientError,
)
from monitor.events import EventKind
from monitor.leadership import SOLO, Acting
from monitor.plan import ServicePlan
from monitor.railway.budget import Priority
from monitor.railway.client import Deployment, RailwayClient, newest_live
from monitor.rebuild import Rebuilds, rebuild_evidence, rebuild_reason
from monitor.reconcile import KNOWN, Follow, Send, Wait, settle_intent
from monitor.releases import Verdicts
from monitor.store import RollbackRecord, RollbackTrigger, Store
from monitor.telemetry import Metrics
from monitor.verification import LatestSamples, Verification

log = structlog.get_logger("railguard.rollback")


@dataclass(frozen=True, slots=True)
class NotYet:
    """An intent to keep unsent for now: the decision may say Go again in a tick (its rule
    fires, its evidence about the release is not whole yet, as after a takeover)."""

    why: str


# Whether an automatic intent should still be sent, given Railway's deployments now: None if
# so, NotYet to keep it for the next look, else why not (the controller re-runs the decision
# with the newest facts).
StillWanted = Callable[
    [ServicePlan, RollbackRecord, Sequence[Deployment]], Awaitable[str | NotYet | None]
]


class RollbackRefused(RailguardError):
    """A requested rollback cannot be carried out; the message says why."""


class RollbackExecutor(Rebuilds, Verification):
    """Carries out automatic and manual rollbacks (and rebuilds), one at a time per service.

    Its parts: :class:`~monitor.rebuild.Rebuilds` (what a rebuild does differently),
    :class:`~monitor.verification.Verification` (following the replacement and verifying it)
    and :class:`~monitor.audit.RollbackAudit` (ending a rollback, escalating).
    """

    def __init__(
        self,
        *,
        services: Sequence[ServicePlan],
        store: Store,
        client: RailwayClient,
        clock: Clock,
        metrics: Metrics,
        latest: LatestSamples,
        still_wanted: StillWanted | None = None,
        check_every: float = 5.0,
        reconcile_window: float = 20.0,
        max_attempts: int = 5,
        acting: Acting = SOLO,
    ) -> None:
        self.services = {s.name: s for s in services}
        self.acting = acting
        self.store = store
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self.latest = latest
        self.still_wanted = still_wanted
        self.check_every = check_every
        self.reconcile_window = reconcile_window
        self.max_attempts = max_attempts
        self._locks: dict[str, asyncio.Lock] = {}
        self._deadlines: dict[int, float] = {}  # rollback id -> monotonic deadline, this run
        self._said: set[tuple[int, str]] = set()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def deployments(self, service: ServicePlan) -> list[Deployment]:
        """Railway's newest deployments of the service, asked now (CRITICAL priority)."""
        config = service.config
        assert config.service_id is not None, "executors only get services with Railway ids"
        assert config.environment_id is not None
        return await self.client.deployments(
            config.service_id, config.environment_id, first=20, priority=Priority.CRITICAL
        )

    # -- beginning ---------------------------------------------------------------------------

    async def start(
        self,
        service: ServicePlan,
        go: Go,
        deployments: Sequence[Deployment],
        *,
        started: float,
    ) -> RollbackRecord:
        """An automatic rollback the controller decided: intent, then :meth:`drive`."""
        evidence = {
            "rule": go.firing.rule,
            "samples": [s.to_dict() for s in go.firing.evidence],
            **rebuild_evidence(go),
        }
        record = await self._begin(
            service,
            go.active,
            go.target,
            "auto",
            "railguard",
            go.firing.rule,
            rebuild_reason(go, go.firing.reason),
            evidence,
            [d.id for d in deployments],
            attempt=True,  # sent right away: the write-ahead and the intent are one write
        )
        return await self.drive(
            service, record, deployments=deployments, started=started, fresh=True
        )

    async def dry_run(self, service: ServicePlan, go: Go) -> RollbackRecord:
        """Record what a live run would do for this incident, and send nothing."""
        now = self.clock.time()
        evidence = self._evidence(go.active, go.target, go) | rebuild_evidence(go)
        what = "would roll back" if go.rebuild is None else f"would rebuild commit {go.rebuild}"

        def would(record: RollbackRecord) -> tuple[str, Mapping[str, Any]]:
            event = self._event(record, EventKind.ROLLBACK_DRY_RUN, what)
            return event.kind.value, event.to_dict()

        record = await self.store.begin_rollback(
            service.name,
            go.active.id,
            go.target.id,
            "auto",
            "railguard",
            go.firing.rule,
            rebuild_reason(go, go.firing.reason),
            evidence,
            now,
            dry_run=True,
            event=would,
        )
        self.metrics.rollbacks.labels(service.name, service.tier, "auto", "dry_run").inc()
        log.warning(
            "dry run: would roll back",
            service=service.name,
            rollback=record.id,
            from_deployment=go.active.id,
            to_deployment=go.target.id,
            rebuild=go.rebuild,
        )
        return record

    async def rollback(
        self, name: str, *, reason: str, actor: str, to: str | None = None
    ) -> RollbackRecord:
        """A manual rollback: the same executor and audit log, none of the automatic guards."""
        service = self.services.get(name)
        if service is None:
            raise RollbackRefused(f"no service named {name!r}")
        if not self.acting.leading():
            raise RollbackRefused(
                "this replica is a standby: ask the leader (railguard status says which)"
            )
        async with self._lock(name):
            current = await self.deployments(service)
            active = newest_live(current)
            if active is None:
                raise RollbackRefused(f"{name} has no active deployment to roll back from")
            verdicts = Verdicts()
            if to is None:
                verdicts = Verdicts.of(await self.store.deployments(service.name, limit=200))
            target = manual_target(name, current, active, verdicts, to)
            if isinstance(target, str):
                raise RollbackRefused(target)
            record = await self._begin(
                service,
                active,
                target,
                "manual",
                actor,
                None,
                reason,
                None,
                [d.id for d in current],
            )
        return await self.drive(
            service, record, deployments=current, started=self.clock.monotonic()
        )

    async def _begin(
        self,
        service: ServicePlan,
        active: Deployment,
        target: Deployment,
        trigger: RollbackTrigger,
        actor: str,
        rule: str | None,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        known: Sequence[str] = (),
        *,
        attempt: bool = False,
    ) -> RollbackRecord:
        now = self.clock.time()

        def started(record: RollbackRecord) -> tuple[str, Mapping[str, Any]]:
            event = self._event(
                record, EventKind.ROLLBACK_STARTED, reason, trigger=trigger, actor=actor
            )
            return event.kind.value, event.to_dict()

        # The intent and its event in one transaction: one write on the decision's path.
        record = await self.store.begin_rollback(
            service.name,
            active.id,
            target.id,
            trigger,
            actor,
            rule,
            reason,
            {**(evidence or {}), **self._evidence(active, target), KNOWN: list(known)},
            now,
            dry_run=False,
            event=started,
            attempt=attempt,
        )
        log.warning(
            "rolling back",
            service=service.name,
            rollback=record.id,
            trigger=trigger,
            from_deployment=active.id,
            to_deployment=target.id,
            reason=reason,
        )
        return record

    @staticmethod
    def _evidence(active: Deployment, target: Deployment, go: Go | None = None) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "from_status": active.status,
            "from_instances": list(active.instances),
            "from_meta": dict(active.meta),
            "target_meta": dict(target.meta),
        }
        if go is not None:
            evidence["samples"] = [s.to_dict() for s in go.firing.evidence]
        return evidence

    # -- driving a rollback to its end -------------------------------------------------------

    async def drive(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        *,
        deployments: Sequence[Deployment] | None = None,
        started: float | None = None,
        fresh: bool = False,
    ) -> RollbackRecord:
        """Move an unfinished rollback to a terminal state, from whatever state it is in.

        ``fresh``: ``record`` was just written by this task (no other can have moved it),
        with its first attempt counted if it has one.
        """
        async with self._lock(service.name):
            if not fresh:
                stored = await self.store.rollback(record.id)
                record = stored if stored is not None else record
            if record.finished:
                return record
            replacement = None
            if record.state == "intent":
                counted = fresh and record.attempts == 1
                outcome = await self._send(service, record, deployments, started, counted)
                if isinstance(outcome, RollbackRecord):
                    return outcome
                record, replacement = outcome
            # From when Railway has the mutation (or, after a restart or a failed step, from
            # when this run first followed it): the replacement's time to recover.
            deadline = self._deadlines.setdefault(
                record.id, self.clock.monotonic() + self.timeout_of(service, record)
            )
            result = await self._follow(service, record, replacement, deadline)
            self._deadlines.pop(record.id, None)
            return result

    async def _send(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        deployments: Sequence[Deployment] | None,
        started: float | None,
        counted: bool = False,
    ) -> RollbackRecord | tuple[RollbackRecord, Deployment | None]:
        """From an intent to a mutation Railway accepted (or a terminal state).

        ``counted``: the intent was just written with its first attempt counted, on the
        deployments the decision was made on: the mutation goes at once.
        """
        in_flight = True  # unknown after a restart: assume the worst, wait the window
        # Deployments handed in are the ones the decision was just made on, with every guard:
        # the first send needs no second decision (only the precondition).
        decided = deployments is not None
        while True:
            if counted:
                counted, deployments, decided = False, None, False
            else:
                step = await self._next_attempt(service, record, deployments, in_flight, decided)
                deployments, decided = None, False
                if step is None:  # Railway may still apply the last one: look again
                    await self.clock.sleep(self.check_every)
                    continue
                if isinstance(step, tuple) or step.finished:
                    return step
                record = step
            if not self.acting.leading():  # deposed since the attempt was counted: not sent
                raise NotLeader(f"rollback #{record.id}: this replica no longer leads")
            if started is not None and record.attempts == 1:
                # Our own time from the decision to the mutation, Railway's latency left out.
                self.metrics.rollback_decision.observe(max(0.0, self.clock.monotonic() - started))
            try:
                accepted, new = await self._mutate(service, record)
            except (RailwayTransientError, RailwayProtocolError) as e:
                # Lost, or garbled (which proves Railway got it): Railway's deployments say.
                in_flight = not isinstance(e, RailwayTransientError) or e.maybe_applied
                log.warning(
                    "rollback mutation unanswered; reconciling against Railway",
                    service=service.name,
                    rollback=record.id,
                    attempt=record.attempts,
                    maybe_applied=in_flight,
                    error=str(e),
                )
                await self.clock.sleep(self.check_every)
                continue
            except RailwayError as e:  # a GraphQL error: Railway refused it
                why = f"Railway refused: {e}"
                return await self.finish(service, record, "failed", why, escalate=True)
            if not accepted:
                why = "Railway answered false"
                return await self.finish(service, record, "failed", why, escalate=True)
            record = await self.store.advance_rollback(
                record.id, "sent", at=self.clock.time(), new_deployment=new
            )
            return record, None

    async def _next_attempt(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        deployments: Sequence[Deployment] | None,
        in_flight: bool,
        decided: bool,
    ) -> RollbackRecord | tuple[RollbackRecord, Deployment | None] | None:
        """Settle an intent against Railway's deployments: the replacement to follow, None to
        wait, a finished record, or the intent with one more attempt counted (send it)."""
        current = list(deployments) if deployments is not None else None
        if current is None:
            current = await self.deployments(service)
        now = self.clock.time()
        settled = settle_intent(
            record, current, now, window=self.reconcile_window, in_flight=in_flight
        )
        if isinstance(settled, Follow):
            log.info("the rollback reached Railway", service=service.name, rollback=record.id)
            record = await self.store.advance_rollback(record.id, "sent", at=now)
            return record, settled.replacement
        if isinstance(settled, Wait):  # bounded by the reconcile window
            return None
        assert isinstance(settled, Send)
        refused = await self._precondition(service, record, current, redecide=not decided)
        if isinstance(refused, NotYet):
            if (record.id, "not yet") not in self._said:
                self._said.add((record.id, "not yet"))
                log.info(
                    "rollback waits", service=service.name, rollback=record.id, why=refused.why
                )
            return None  # kept: decided again at the next look
        if refused is not None:
            return await self.finish(service, record, "abandoned", refused)
        if record.attempts >= self.max_attempts:
            why = f"{record.attempts} attempts and Railway applied none: {settled.why}"
            return await self.finish(service, record, "failed", why, escalate=True)
        return await self.store.note_attempt(record.id, self.clock.time())

    async def _precondition(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        current: Sequence[Deployment],
        *,
        redecide: bool = True,
    ) -> str | NotYet | None:
        """Why the intent must not be sent now, or None: checked right before each send."""
        active = newest_live(current)
        if active is None or active.id != record.from_deployment:
            now = active.id if active is not None else "none"
            return f"the active deployment changed to {now} meanwhile"
        if redecide and record.trigger == "auto" and self.still_wanted is not None:
            return await self.still_wanted(service, record, current)
        return None
