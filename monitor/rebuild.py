"""The rebuild fallback: when Railway keeps no image of any known-good release, deploy the
newest one's commit again (``serviceInstanceDeployV2``).

Railway keeps rollback images for 24h to 360h, by plan; past that a deployment's
``canRollback`` is false and only a build brings its release back, which takes minutes, not
the seconds of a rollback. The decision chooses it (a tier's ``rebuild``); the executor carries
it out with the same discipline as a rollback (the intent written first, the mutation sent at
most once unless Railway provably did not apply it, the new deployment followed to SUCCESS and
verified). What differs is here, as a mixin of :class:`~monitor.executor.RollbackExecutor`:

- the intent's words and evidence: the audit record keeps the commit (``rebuild_commit``);
- the mutation, ``serviceInstanceDeployV2`` with the commit, which answers the new
  deployment's id;
- the time it may take: the tier's ``rebuild_timeout`` instead of ``rollback_timeout``;
- its deploy time (the new deployment created to SUCCESS, by Railway's clock), measured
  against DESIGN's 5-minute deployment goal: ``railguard_rebuild_duration_seconds``, and one
  ``rebuild_slow`` event (an alert) when it passes the goal, said while it still builds.
"""

from __future__ import annotations

from typing import Any

import structlog

from monitor.audit import RollbackAudit
from monitor.decision import Go
from monitor.events import EventKind, write_event
from monitor.model import format_duration, release_label
from monitor.plan import ServicePlan
from monitor.railway.client import Deployment, RailwayClient
from monitor.railway.statuses import SERVING
from monitor.reconcile import REBUILD, rebuild_commit
from monitor.releases import went_live
from monitor.store import RollbackRecord

log = structlog.get_logger("railguard.rollback")

DEPLOY_GOAL = 300.0  # DESIGN: a deployment is up in under 5 minutes


def rebuild_evidence(go: Go) -> dict[str, Any]:
    """What the intent's evidence adds for a rebuild (nothing for a rollback)."""
    return {} if go.rebuild is None else {REBUILD: go.rebuild}


def rebuild_reason(go: Go, reason: str) -> str:
    """The intent's reason: the rule's, said as a rebuild when it is one."""
    if go.rebuild is None:
        return reason
    name = release_label(go.target.meta) or go.target.id
    return f"rebuild of commit {go.rebuild} ({name}: no rollback image left): {reason}"


class Rebuilds(RollbackAudit):
    """What a rebuild does differently from a rollback (see the module docstring)."""

    client: RailwayClient
    _said: set[tuple[int, str]]  # (rollback id, "timed" | "slow"): done already, this run

    def timeout_of(self, service: ServicePlan, record: RollbackRecord) -> float:
        """How long the replacement may take to recover, from when Railway has the mutation."""
        policy = service.policy
        return policy.rollback_timeout if rebuild_commit(record) is None else policy.rebuild_timeout

    async def _mutate(
        self, service: ServicePlan, record: RollbackRecord
    ) -> tuple[bool, str | None]:
        """Send the record's mutation once: (Railway accepted it, the new deployment's id)."""
        commit = rebuild_commit(record)
        if commit is None:
            return await self.client.rollback(record.to_deployment), None
        config = service.config
        assert config.service_id is not None, "executors only get services with Railway ids"
        assert config.environment_id is not None
        new = await self.client.deploy_commit(config.service_id, config.environment_id, commit)
        return True, new

    async def _deploy_progress(
        self, service: ServicePlan, record: RollbackRecord, replacement: Deployment
    ) -> None:
        """A rebuild's deploy time so far (or in all, once it serves) against the goal."""
        commit = rebuild_commit(record)
        if commit is None:
            return
        now = self.clock.time()
        served = replacement.status in SERVING
        took = max(0.0, (went_live(replacement, now) if served else now) - replacement.created_at)
        if served and (record.id, "timed") not in self._said:
            self._said.add((record.id, "timed"))
            self.metrics.rebuild_duration.labels(service.name, service.tier).observe(took)
            log.info(
                "rebuild deployed",
                service=service.name,
                rollback=record.id,
                deployment=replacement.id,
                took=format_duration(took),
                goal=format_duration(DEPLOY_GOAL),
            )
        if took <= DEPLOY_GOAL or (record.id, "slow") in self._said:
            return
        if not await self._said_before(service, record):  # by the run before a restart
            verb = "took" if served else "has been deploying for"
            why = (
                f"the rebuild of commit {commit} ({replacement.id}) {verb} "
                f"{format_duration(took)}, past the {format_duration(DEPLOY_GOAL)} deployment goal"
            )
            took_s = now - record.decided_at
            event = self._event(record, EventKind.REBUILD_SLOW, why, took_s=took_s)
            await write_event(self.store, service.name, event, now)
            log.warning("rebuild past the deployment goal", service=service.name, why=why)
        self._said.add((record.id, "slow"))

    async def _said_before(self, service: ServicePlan, record: RollbackRecord) -> bool:
        """Whether the store already has this rebuild's ``rebuild_slow`` event."""
        said = await self.store.events(
            service.name, since=record.decided_at, kinds=[EventKind.REBUILD_SLOW.value]
        )
        return any(e.data.get("rollback") == record.id for e in said)
