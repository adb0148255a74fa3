"""How a rollback ends, said once: its audit event, metrics and log line, and escalations.

A mixin of :class:`~monitor.executor.RollbackExecutor`: whichever step ends a rollback (a
refused mutation, a replacement that never recovers, a restart's reconciliation, success),
it ends through :meth:`RollbackAudit.finish`, so every terminal state is recorded the same
way; a person is called through :meth:`RollbackAudit.escalate` (the controller's escalations
too).
"""

from __future__ import annotations

import structlog

from monitor.clock import Clock
from monitor.events import (
    ROLLBACK_ENDED,
    EscalationEvent,
    RollbackEnd,
    RollbackEvent,
    RollbackKind,
    write_event,
)
from monitor.model import format_duration, release_label
from monitor.plan import ServicePlan
from monitor.reconcile import rebuild_commit
from monitor.store import RollbackRecord, RollbackTrigger, Store
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.rollback")


class RollbackAudit:
    """Ending rollbacks and escalating (see the module docstring)."""

    store: Store
    clock: Clock
    metrics: Metrics
    _deadlines: dict[int, float]  # rollback id -> monotonic deadline, this run

    @staticmethod
    def _event(
        record: RollbackRecord,
        kind: RollbackKind,
        why: str,
        *,
        took_s: float | None = None,
        trigger: RollbackTrigger | None = None,
        actor: str | None = None,
    ) -> RollbackEvent:
        return RollbackEvent(
            kind=kind,
            rollback=record.id,
            rule=record.rule,
            from_=record.from_deployment,
            to=record.to_deployment,
            from_release=release_label(record.evidence.get("from_meta") or {}),
            to_release=release_label(record.evidence.get("target_meta") or {}),
            new=record.new_deployment,
            why=why,
            reason=record.reason,
            took_s=took_s,
            trigger=trigger,
            actor=actor,
        )

    async def finish(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        state: RollbackEnd,
        why: str,
        *,
        escalate: bool = False,
        live_at: float | None = None,
    ) -> RollbackRecord:
        """End a rollback in ``state`` and say so (audit event, metrics, log; maybe escalate)."""
        now = self.clock.time()
        record = await self.store.advance_rollback(
            record.id, state, at=now, error=None if state == "succeeded" else why, live_at=live_at
        )
        self._deadlines.pop(record.id, None)
        self.metrics.rollbacks.labels(service.name, service.tier, record.trigger, state).inc()
        # A rebuild is a build, not a 2-minute rollback: its deploy time has its own metric.
        if state == "succeeded" and rebuild_commit(record) is None:
            self.metrics.rollback_duration.labels(service.name, service.tier).observe(
                now - record.decided_at
            )
        event = self._event(record, ROLLBACK_ENDED[state], why, took_s=now - record.decided_at)
        await write_event(self.store, service.name, event, now)
        (log.info if state == "succeeded" else log.warning)(
            f"rollback {state}",
            service=service.name,
            rollback=record.id,
            rebuild=rebuild_commit(record),
            why=why,
            took=format_duration(now - record.decided_at),
        )
        if escalate:
            failed = EscalationEvent(escalation="rollback_failed", why=why, failed=event)
            await self.escalate(service, failed, freeze=True)
        return record

    async def escalate(self, service: ServicePlan, event: EscalationEvent, *, freeze: bool) -> None:
        """A person is needed: an escalation event (it pages), and maybe a freeze."""
        now, why = self.clock.time(), event.why
        await write_event(self.store, service.name, event, now)
        log.error(
            "escalation: a person is needed", service=service.name, kind=event.escalation, why=why
        )
        if freeze:
            await self.store.freeze(service.name, why, "railguard", now)
            self.metrics.frozen.labels(service.name, service.tier).set(1)
            log.error("automatic rollback frozen", service=service.name, why=why)
