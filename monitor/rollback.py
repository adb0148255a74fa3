"""The rollback executor: guards, target, write-ahead intent, mutation, verification.

A firing rule on a tier with ``auto_rollback`` asks for a rollback; the guards run in order
(frozen, monitor blind, a newer deployment in progress, grace, cooldown and the loop breaker,
the daily budget), each one that holds says so (metric, log line, event). The target is the
newest known-good release older than the active one that Railway can roll back to; with none
railguard escalates and never guesses. The intent is written to the store before the
mutation, the precondition (the active deployment is still the one to leave) is checked right
before it, and the mutation is never sent twice: a lost answer is reconciled against
Railway's deployments, not retried. Verification waits for the replacement to reach SUCCESS
and the signals to recover within ``rollback_timeout``; a failure escalates and freezes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from monitor.clock import Clock
from monitor.engine import Verdict
from monitor.errors import RailguardError, RailwayError, RailwayTransientError
from monitor.model import Sample, Signal, format_duration, release_label
from monitor.plan import ServicePlan
from monitor.railway.budget import Priority
from monitor.railway.client import Deployment, RailwayClient
from monitor.railway.poller import ACTIVE_STATUSES
from monitor.releases import ReleaseTracker
from monitor.store import RollbackRecord, RollbackTrigger, Store
from monitor.tasks import Background
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.rollback")

IN_PROGRESS = frozenset({"QUEUED", "WAITING", "INITIALIZING", "BUILDING", "DEPLOYING"})
FAILED = frozenset({"FAILED", "CRASHED", "REMOVED", "SKIPPED"})
SKEW = 5.0  # seconds of clock difference tolerated between railguard and Railway
LatestSamples = Callable[[str], Mapping[Signal, Sample]]
ControlCheck = Callable[[], Awaitable[str | None]]


class RollbackRefused(RailguardError):
    """A requested rollback cannot be carried out; the message says why."""


def newest_active(deployments: Sequence[Deployment]) -> Deployment | None:
    """The deployment serving now: the newest that reached SUCCESS (or sleeps)."""
    serving = [d for d in deployments if d.status in ACTIVE_STATUSES]
    return max(serving, key=lambda d: d.created_at, default=None)


def _window_start(sample: Sample) -> float:
    """When the traffic a sample describes began (a rate covers a step, not an instant)."""
    detail = sample.detail
    if "step_start" in detail:
        return float(detail["step_start"])
    return sample.at - float(detail.get("span_s", 0.0))


class RollbackExecutor:
    """Carries out automatic and manual rollbacks, one at a time per service."""

    def __init__(
        self,
        *,
        services: Sequence[ServicePlan],
        store: Store,
        client: RailwayClient,
        tracker: ReleaseTracker,
        clock: Clock,
        metrics: Metrics,
        latest: LatestSamples,
        control: ControlCheck | None = None,
        check_every: float = 5.0,
    ) -> None:
        self.services = {s.name: s for s in services}
        self.store = store
        self.client = client
        self.tracker = tracker
        self.clock = clock
        self.metrics = metrics
        self.latest = latest
        self.control = control
        self.check_every = check_every
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks = Background("rollback task")

    # -- entry points ----------------------------------------------------------------------

    async def on_verdict(self, service: ServicePlan, verdict: Verdict) -> None:
        """A rule transition; a rule that fired on an auto-rollback tier starts a rollback."""
        if verdict.fired and service.policy.auto_rollback and service.name in self.services:
            self._tasks.spawn(self._auto(service, verdict, self.clock.monotonic()))

    async def aclose(self) -> None:
        """Stop work in flight; unfinished rollbacks are reconciled at the next start."""
        await self._tasks.cancel()

    async def rollback(
        self, name: str, *, reason: str, actor: str, to: str | None = None
    ) -> RollbackRecord:
        """A manual rollback: the same executor and audit log, none of the automatic guards."""
        service = self.services.get(name)
        if service is None:
            raise RollbackRefused(f"no service named {name!r}")
        async with self._lock(name):
            current = await self._deployments(service)
            active = newest_active(current)
            if active is None:
                raise RollbackRefused(f"{name} has no active deployment to roll back from")
            target = await self._target(service, active, current, wanted=to)
            if isinstance(target, str):
                raise RollbackRefused(target)
            return await self._execute(
                service,
                active,
                target,
                trigger="manual",
                actor=actor,
                rule=None,
                reason=reason,
                evidence={"requested_target": to},
                started=self.clock.monotonic(),
            )

    # -- the automatic path ----------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _auto(self, service: ServicePlan, verdict: Verdict, started: float) -> None:
        async with self._lock(service.name):
            handled = await self._already_handled(service, verdict)
            if handled is not None:
                log.info(
                    "rule firing already handled",
                    service=service.name,
                    rule=verdict.rule,
                    rollback=handled,
                )
                return
            evidence = {
                "rule": verdict.rule,
                "reason": verdict.reason,
                "samples": [s.to_dict() for s in verdict.evidence],
            }
            held = await self._guards(service)
            if held is not None:
                guard, why = held
                await self._hold(service, guard, why, evidence)
                return
            api_started = self.clock.monotonic()
            current = await self._deployments(service)
            api_time = self.clock.monotonic() - api_started
            active = newest_active(current)
            newer = [
                d
                for d in current
                if d.status in IN_PROGRESS and (active is None or d.created_at > active.created_at)
            ]
            if newer:
                why = f"a newer deployment {newer[0].id} is {newer[0].status}: it may fix this"
                await self._hold(service, "deployment_in_progress", why, evidence)
                return
            if active is None:
                await self._hold(service, "no_active", "no deployment is serving", evidence)
                return
            live = self.tracker.live_since(service.name)
            now = self.clock.time()
            if live is not None and now - live < service.policy.grace:
                grace = format_duration(service.policy.grace)
                why = f"{active.id} went live {format_duration(now - live)} ago (grace {grace})"
                await self._hold(service, "grace", why, evidence)
                return
            target = await self._target(service, active, current)
            if isinstance(target, str):
                await self._escalate(service, "no_known_good", target, evidence, freeze=False)
                return
            if service.policy.dry_run:
                record = await self.store.begin_rollback(
                    service.name,
                    active.id,
                    target.id,
                    "auto",
                    "railguard",
                    verdict.rule,
                    verdict.reason,
                    evidence,
                    now,
                    dry_run=True,
                )
                self.metrics.rollbacks.labels(service.name, service.tier, "auto", "dry_run").inc()
                log.warning(
                    "dry run: would roll back",
                    service=service.name,
                    rollback=record.id,
                    from_deployment=active.id,
                    to_deployment=target.id,
                )
                return
            await self._execute(
                service,
                active,
                target,
                trigger="auto",
                actor="railguard",
                rule=verdict.rule,
                reason=verdict.reason,
                evidence=evidence,
                started=started + api_time,
            )

    async def _already_handled(self, service: ServicePlan, verdict: Verdict) -> int | None:
        """The rollback that answered this very episode, if one did.

        Two rules firing for one bad release queue up here; the second must not read the
        first one's success as "the restored release fails too". Only samples taken after
        the replacement went live can say that.
        """
        recent = [
            r
            for r in await self.store.rollbacks(service.name, limit=10)
            if r.state not in ("abandoned", "dry_run")
        ]
        if not recent:
            return None
        last = recent[0]
        began = min((s.at for s in verdict.evidence), default=verdict.at)
        settled = last.live_at if last.live_at is not None else last.decided_at
        return last.id if began < settled else None

    async def _guards(self, service: ServicePlan) -> tuple[str, str] | None:
        """The first guard that holds the rollback back, as (guard, why), or None."""
        now = self.clock.time()
        frozen = await self.store.frozen(service.name, now)
        if frozen is not None:
            return "frozen", f"automatic rollback is frozen: {frozen.reason} (by {frozen.actor})"
        if self.control is not None:
            problem = await self.control()
            if problem is not None:
                return (
                    "monitor_blind",
                    "the control check failed too, so railguard may be the one that is blind: "
                    f"{problem}",
                )
        # Only rollbacks that reached Railway count: an abandoned intent or a dry run did not.
        recent = [
            r
            for r in await self.store.rollbacks(service.name, limit=10)
            if r.state not in ("abandoned", "dry_run")
        ]
        if recent and recent[0].trigger == "auto":
            last = recent[0]
            ended = last.finished_at or last.decided_at
            if now - ended < service.policy.cooldown:
                if last.state == "succeeded":
                    # The loop breaker: the restored release fails too. Stop going back.
                    why = (
                        f"the release restored by rollback #{last.id} "
                        f"{format_duration(now - ended)} ago fails too"
                    )
                    data = {"rollback": last.id, "restored": last.to_deployment}
                    await self._escalate(service, "loop_breaker", why, data, freeze=True)
                    return "loop_breaker", why
                return "cooldown", (
                    f"rollback #{last.id} was {format_duration(now - ended)} ago "
                    f"(cooldown {format_duration(service.policy.cooldown)})"
                )
        count = await self.store.rollbacks_since(service.name, now - 86400.0)
        if count >= service.policy.max_rollbacks_per_day:
            return "budget", (
                f"{count} automatic rollbacks in the last 24h "
                f"(max_rollbacks_per_day {service.policy.max_rollbacks_per_day})"
            )
        return None

    async def _target(
        self,
        service: ServicePlan,
        active: Deployment,
        current: Sequence[Deployment],
        wanted: str | None = None,
    ) -> Deployment | str:
        """The release to go back to, or why there is none."""
        records = {r.id: r for r in await self.store.deployments(service.name, limit=200)}
        by_id = {d.id: d for d in current}
        if wanted is not None:
            chosen = by_id.get(wanted)
            if chosen is None:
                return f"{wanted} is not one of {service.name}'s recent deployments"
            if chosen.id == active.id:
                return f"{wanted} is the active deployment already"
            if not chosen.can_rollback:
                return f"Railway cannot roll back to {wanted} (canRollback is false)"
            return chosen
        candidates = [
            d
            for d in current
            if d.id != active.id
            and d.created_at < active.created_at
            and d.can_rollback
            and records.get(d.id) is not None
            and records[d.id].verdict == "good"
        ]
        if not candidates:
            return (
                f"no known-good release older than {active.id} that Railway can roll back to "
                f"({len(current)} deployments looked at)"
            )
        return max(candidates, key=lambda d: d.created_at)

    async def _deployments(self, service: ServicePlan) -> list[Deployment]:
        config = service.config
        assert config.service_id is not None, "executors only get services with Railway ids"
        assert config.environment_id is not None
        return await self.client.deployments(
            config.service_id, config.environment_id, first=20, priority=Priority.CRITICAL
        )

    # -- carrying it out ---------------------------------------------------------------------

    async def _execute(
        self,
        service: ServicePlan,
        active: Deployment,
        target: Deployment,
        *,
        trigger: RollbackTrigger,
        actor: str,
        rule: str | None,
        reason: str,
        evidence: Mapping[str, Any],
        started: float,
    ) -> RollbackRecord:
        name, now = service.name, self.clock.time()
        evidence = {
            **evidence,
            "from_status": active.status,
            "from_meta": dict(active.meta),
            "target_meta": dict(target.meta),
        }
        record = await self.store.begin_rollback(
            name, active.id, target.id, trigger, actor, rule, reason, evidence, now, dry_run=False
        )
        await self.store.record_event(
            name,
            "rollback_started",
            now,
            {
                "rollback": record.id,
                "rule": rule,
                "trigger": trigger,
                "actor": actor,
                "from": active.id,
                "to": target.id,
                "from_release": release_label(active.meta),
                "to_release": release_label(target.meta),
                "reason": reason,
            },
        )
        log.warning(
            "rolling back",
            service=name,
            rollback=record.id,
            trigger=trigger,
            from_deployment=active.id,
            to_deployment=target.id,
            reason=reason,
        )
        api_started = self.clock.monotonic()
        current = await self._deployments(service)  # the precondition, right before the mutation
        still = newest_active(current)
        if still is None or still.id != active.id:
            why = f"the active deployment changed to {still.id if still else 'none'} meanwhile"
            return await self._finish(service, record, "abandoned", why)
        before = {d.id for d in current}
        # Our own time from the rule firing to the mutation, Railway's latency left out.
        self.metrics.rollback_decision.observe(max(0.0, api_started - started))
        try:
            accepted = await self.client.rollback(target.id)
        except RailwayTransientError as e:
            if not e.maybe_applied:
                return await self._finish(service, record, "failed", f"Railway did not answer: {e}")
            accepted = True  # the answer was lost; whether it applied is found below
            log.warning("rollback answer lost; checking Railway", service=name, rollback=record.id)
        except RailwayError as e:
            return await self._finish(
                service, record, "failed", f"Railway refused: {e}", escalate=True
            )
        if not accepted:
            return await self._finish(
                service, record, "failed", "Railway answered false", escalate=True
            )
        return await self._follow(service, record, before)

    async def _follow(
        self, service: ServicePlan, record: RollbackRecord, before: set[str] | None
    ) -> RollbackRecord:
        """From a sent mutation to a verified (or failed) recovery."""
        name = service.name
        deadline = self.clock.monotonic() + service.policy.rollback_timeout
        replacement = await self._replacement(service, record, before, deadline)
        if replacement is None:
            return await self._finish(
                service,
                record,
                "failed",
                "no replacement deployment appeared on Railway",
                escalate=True,
            )
        if record.state == "intent":
            record = await self.store.advance_rollback(record.id, "sent", at=self.clock.time())
        await self.store.mark_bad(
            name,
            record.from_deployment,
            self.clock.time(),
            f"rolled back from (#{record.id})",
            {"rollback": record.id},
        )
        if record.state == "sent":
            record = await self.store.advance_rollback(
                record.id, "deploying", at=self.clock.time(), new_deployment=replacement.id
            )
        status = replacement.status
        while status not in ACTIVE_STATUSES:
            if status in FAILED:
                return await self._finish(
                    service,
                    record,
                    "failed",
                    f"the replacement {replacement.id} is {status}",
                    escalate=True,
                )
            if self.clock.monotonic() > deadline:
                return await self._finish(
                    service,
                    record,
                    "failed",
                    f"the replacement is still {status} after "
                    f"{format_duration(service.policy.rollback_timeout)}",
                    escalate=True,
                )
            await self.clock.sleep(self.check_every)
            status = (
                await self.client.deployment(replacement.id, priority=Priority.CRITICAL)
            ).status
        live_at = self.clock.time()
        while not self._recovered(service, record, live_at):
            if self.clock.monotonic() > deadline:
                return await self._finish(
                    service,
                    record,
                    "failed",
                    "signals did not recover within "
                    f"{format_duration(service.policy.rollback_timeout)}",
                    escalate=True,
                )
            await self.clock.sleep(min(self.check_every, service.interval))
        return await self._finish(
            service, record, "succeeded", "the replacement serves healthily", live_at=live_at
        )

    async def _replacement(
        self, service: ServicePlan, record: RollbackRecord, before: set[str] | None, deadline: float
    ) -> Deployment | None:
        """The new deployment the mutation created (a rollback returns only true)."""
        while True:
            current = await self._deployments(service)
            fresh = [
                d
                for d in current
                if d.id not in (before or set())
                and d.id not in (record.from_deployment, record.to_deployment)
                and d.created_at >= record.decided_at - SKEW
            ]
            if fresh:
                return min(fresh, key=lambda d: d.created_at)
            if self.clock.monotonic() > deadline:
                return None
            await self.clock.sleep(self.check_every)

    def _recovered(self, service: ServicePlan, record: RollbackRecord, live_at: float) -> bool:
        """Whether every signal that matters has a healthy sample taken after ``live_at``.

        The rule that fired must be quiet (all rules, for a manual rollback), and so must the
        health check when the service has one.
        """
        checks: list[tuple[Signal, Callable[[float], bool]]] = [
            (rule.signal, rule.breaches)
            for rule in service.rules
            if record.rule is None or rule.name == record.rule
        ]
        if service.health is not None and all(s is not Signal.HEALTH for s, _ in checks):
            checks.append((Signal.HEALTH, lambda value: value < 1))
        latest = self.latest(service.name)
        for signal, breaches in checks:
            sample = latest.get(signal)
            if sample is None or sample.value is None:
                return False
            if _window_start(sample) < live_at - SKEW or breaches(sample.value):
                return False
        return True

    async def _finish(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        state: str,
        why: str,
        *,
        escalate: bool = False,
        live_at: float | None = None,
    ) -> RollbackRecord:
        now = self.clock.time()
        record = await self.store.advance_rollback(
            record.id, state, at=now, error=None if state == "succeeded" else why, live_at=live_at
        )
        self.metrics.rollbacks.labels(service.name, service.tier, record.trigger, state).inc()
        if state == "succeeded":
            self.metrics.rollback_duration.labels(service.name, service.tier).observe(
                now - record.decided_at
            )
        event = {
            "rollback": record.id,
            "rule": record.rule,
            "from": record.from_deployment,
            "to": record.to_deployment,
            "from_release": release_label(record.evidence.get("from_meta") or {}),
            "to_release": release_label(record.evidence.get("target_meta") or {}),
            "new": record.new_deployment,
            "why": why,
            "took_s": now - record.decided_at,
        }
        await self.store.record_event(service.name, f"rollback_{state}", now, event)
        (log.info if state == "succeeded" else log.warning)(
            f"rollback {state}",
            service=service.name,
            rollback=record.id,
            why=why,
            took=format_duration(now - record.decided_at),
        )
        if escalate:
            await self._escalate(service, "rollback_failed", why, event, freeze=True)
        return record

    async def _hold(
        self, service: ServicePlan, guard: str, why: str, evidence: Mapping[str, Any]
    ) -> None:
        self.metrics.rollback_held.labels(service.name, service.tier, guard).inc()
        await self.store.record_event(
            service.name,
            "rollback_held",
            self.clock.time(),
            {"guard": guard, "why": why, **evidence},
        )
        log.warning("rollback held back", service=service.name, guard=guard, why=why)

    async def _escalate(
        self, service: ServicePlan, kind: str, why: str, data: Mapping[str, Any], *, freeze: bool
    ) -> None:
        await self.store.record_event(
            service.name, "escalation", self.clock.time(), {"kind": kind, "why": why, **data}
        )
        log.error("escalation: a person is needed", service=service.name, kind=kind, why=why)
        if freeze:
            await self._freeze(service, why)

    async def _freeze(self, service: ServicePlan, why: str) -> None:
        await self.store.freeze(service.name, why, "railguard", self.clock.time())
        self.metrics.frozen.labels(service.name, service.tier).set(1)
        log.error("automatic rollback frozen", service=service.name, why=why)

    # -- restart safety ----------------------------------------------------------------------

    async def reconcile(self) -> list[RollbackRecord]:
        """Settle rollbacks a previous run left unfinished, before the first tick.

        An intent with no replacement on Railway never reached it: abandoned (a rule that
        still fires decides afresh). Anything else reached Railway: it is followed to its
        end, and never sent again.
        """
        settled = []
        for record in await self.store.rollbacks(unfinished=True):
            service = self.services.get(record.service)
            if service is None:
                # Abandoned only if it never reached Railway; otherwise nobody can verify it.
                settled.append(
                    await self.store.advance_rollback(
                        record.id,
                        "abandoned" if record.state == "intent" else "failed",
                        at=self.clock.time(),
                        error="the service is no longer in the config",
                    )
                )
                continue
            current = await self._deployments(service)
            fresh = [
                d
                for d in current
                if d.id not in (record.from_deployment, record.to_deployment)
                and d.created_at >= record.decided_at - SKEW
            ]
            if record.state == "intent" and not fresh:
                why = "railguard stopped before the mutation reached Railway"
                settled.append(await self._finish(service, record, "abandoned", why))
                continue
            log.warning(
                "resuming a rollback after a restart",
                service=service.name,
                rollback=record.id,
                state=record.state,
            )
            self._tasks.spawn(self._resume(service, record))
            settled.append(record)
        return settled

    async def _resume(self, service: ServicePlan, record: RollbackRecord) -> None:
        async with self._lock(service.name):
            try:
                await self._follow(service, record, None)
            except RailguardError as e:
                await self._finish(
                    service, record, "failed", f"after a restart: {e}", escalate=True
                )
