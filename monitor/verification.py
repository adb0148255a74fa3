"""Following a rollback Railway accepted: the replacement found, rolled out, and verified.

A mixin of :class:`~monitor.executor.RollbackExecutor`: the replacement must reach SUCCESS and
the signals that matter must be healthy on samples taken after it went live, within
``rollback_timeout`` (a rebuild: ``rebuild_timeout``); the release rolled back from is marked
BAD on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from monitor.audit import RollbackAudit
from monitor.baseline import Reference, breaches_now
from monitor.model import Rule, Sample, Signal, format_duration, release_label
from monitor.plan import ServicePlan
from monitor.railway.budget import Priority
from monitor.railway.client import Deployment, RailwayClient
from monitor.railway.statuses import NEVER_SERVING, SERVING
from monitor.reconcile import SKEW, find_replacement, rebuild_commit
from monitor.releases import went_live
from monitor.sources.release import answered_by
from monitor.store import RollbackRecord

LatestSamples = Callable[[str], Mapping[Signal, Sample]]


class Verification(RollbackAudit):
    """The follow-and-verify half of the executor (see the module docstring)."""

    client: RailwayClient
    latest: LatestSamples
    check_every: float
    # A baseline rule's baseline (monitor/baselines.py); one it cannot compare with holds
    # nothing up: the health check and the other rules still must be quiet.
    reference: Callable[[str, Signal], Reference | None] = staticmethod(lambda name, signal: None)

    async def deployments(self, service: ServicePlan) -> list[Deployment]:
        """Railway's newest deployments of the service (the executor asks them)."""
        raise NotImplementedError

    def timeout_of(self, service: ServicePlan, record: RollbackRecord) -> float:
        """How long the replacement may take to recover (rebuild.py says)."""
        raise NotImplementedError

    async def _deploy_progress(
        self, service: ServicePlan, record: RollbackRecord, replacement: Deployment
    ) -> None:
        """Each look at the replacement while it comes up, and once when it serves."""
        raise NotImplementedError

    async def _follow(
        self,
        service: ServicePlan,
        record: RollbackRecord,
        replacement: Deployment | None,
        deadline: float,
    ) -> RollbackRecord:
        """From a mutation Railway accepted to a verified (or failed) recovery."""
        current: Sequence[Deployment] = ()
        while replacement is None:
            current = await self.deployments(service)
            replacement = find_replacement(record, current)
            if replacement is not None:
                break
            if self.clock.monotonic() > deadline:
                why = "no replacement deployment appeared on Railway"
                return await self.finish(service, record, "failed", why, escalate=True)
            await self.clock.sleep(self.check_every)
        await self._mark_bad(service, record, current)
        if record.state == "sent":
            record = await self.store.advance_rollback(
                record.id, "deploying", at=self.clock.time(), new_deployment=replacement.id
            )
        status, timeout = replacement.status, format_duration(self.timeout_of(service, record))
        what = "the replacement" if rebuild_commit(record) is None else "the rebuilt deployment"
        while status not in SERVING:
            if status in NEVER_SERVING:
                why = f"{what} {replacement.id} is {status}"
                return await self.finish(service, record, "failed", why, escalate=True)
            await self._deploy_progress(service, record, replacement)
            if self.clock.monotonic() > deadline:
                why = f"{what} is still {status} after {timeout}"
                return await self.finish(service, record, "failed", why, escalate=True)
            await self.clock.sleep(self.check_every)
            replacement = await self.client.deployment(replacement.id, priority=Priority.CRITICAL)
            status = replacement.status
        await self._deploy_progress(service, record, replacement)
        live_at = went_live(replacement, self.clock.time())
        while (missing := self._unrecovered(service, record, live_at, replacement)) is not None:
            if self.clock.monotonic() > deadline:
                why = f"signals did not recover within {timeout}{missing}"
                return await self.finish(service, record, "failed", why, escalate=True)
            await self.clock.sleep(min(self.check_every, service.interval))
        why = f"{what} serves healthily"
        return await self.finish(service, record, "succeeded", why, live_at=live_at)

    async def _mark_bad(
        self, service: ServicePlan, record: RollbackRecord, current: Sequence[Deployment]
    ) -> None:
        """The release rolled back from is BAD for ever (recorded first if polling had not)."""
        name, now = service.name, self.clock.time()
        if await self.store.deployment(name, record.from_deployment) is None:
            if not current:
                current = await self.deployments(service)
            left = next((d for d in current if d.id == record.from_deployment), None)
            await self.store.upsert_deployment(
                name,
                id=record.from_deployment,
                status=left.status if left is not None else "REMOVED",
                created_at=left.created_at if left is not None else record.decided_at,
                can_rollback=left.can_rollback if left is not None else False,
                meta=dict(left.meta)
                if left is not None
                else dict(record.evidence.get("from_meta") or {}),
                seen_at=now,
                live=False,
            )
        await self.store.mark_bad(
            name,
            record.from_deployment,
            now,
            f"rolled back from (#{record.id})",
            {"rollback": record.id},
        )

    def _unrecovered(
        self, service: ServicePlan, record: RollbackRecord, live_at: float, replacement: Deployment
    ) -> str | None:
        """None once every signal that matters has a healthy sample taken after ``live_at``;
        until then what is still missing (": " and the reason).

        The rule that fired must be quiet (all rules, for a manual rollback), and so must the
        health check when the service has one. With a release check, that health sample must
        be the replacement's own answer: during the overlap the deployment rolled back from
        still answers, and its answers say nothing about the restored release.
        """

        def judged(rule: Rule) -> Callable[[Sample], bool]:
            reference = self.reference(service.name, rule.signal)
            return lambda sample: breaches_now(rule, sample, reference)

        checks: list[tuple[Signal, Callable[[Sample], bool]]] = [
            (rule.signal, judged(rule))
            for rule in service.rules
            if record.rule is None or rule.name == record.rule
        ]
        if service.health is not None and all(s is not Signal.HEALTH for s, _ in checks):
            checks.append((Signal.HEALTH, lambda sample: (sample.value or 0.0) < 1))
        latest = self.latest(service.name)
        health = service.health
        if health is not None and health.release is not None:
            sample = latest.get(Signal.HEALTH)
            if not answered_by(sample, replacement.id):
                last = sample and (sample.reason or sample.detail.get("unattributed"))
                said = f" (the last answer: {last})" if last else ""
                label = release_label(replacement.meta)
                named = f"{replacement.id} ({label})" if label else replacement.id
                return f": the replacement {named} was not seen answering{said}"
        for signal, breaches in checks:
            sample = latest.get(signal)
            if sample is None or sample.value is None:
                return f": no known {signal} sample" + (f" ({sample.reason})" if sample else "")
            if sample.window_start < live_at - SKEW:
                return f": no {signal} sample taken since the replacement went live"
            if breaches(sample):
                return f": {signal} still breaches ({sample.reason or sample.value})"
        return None
