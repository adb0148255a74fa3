"""The level-triggered rollback controller: at every evaluation of a service, decide afresh.

Like a Kubernetes controller, it compares what is (Railway's deployments, the rules' states,
the store) with what should be (a healthy release serving) after every tick of a service, not
on one transition: a rollback a guard held back goes ahead at the first evaluation after the
guard stops holding; an unfinished rollback (a failed step, a lost answer, a restart) is driven
on at the next evaluation. Work runs in one task per service, so a tick never waits for
Railway, and a second evaluation while the task runs does nothing.

A hold or an escalation is recorded once per guard per *episode*: the stretch in which some
rollback rule keeps firing on the same active deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from monitor.clock import Clock
from monitor.decision import Decision, Escalate, Facts, Firing, Go, Hold, Idle, decide
from monitor.engine import RuleState, compared_text
from monitor.errors import NotLeader, RailguardError
from monitor.events import EscalationEvent, Evidence, HoldEvent, write_event
from monitor.executor import NotYet, RollbackExecutor
from monitor.leadership import SOLO, Acting
from monitor.maintenance import in_force
from monitor.model import Phase, Rule, format_duration
from monitor.plan import ServicePlan
from monitor.railway.client import Deployment, newest_live
from monitor.reconcile import Follow, Wait, settle_intent
from monitor.releases import Verdicts, went_live
from monitor.store import RollbackRecord, ServiceRecords, Store
from monitor.tasks import Background
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.controller")

RuleStates = Callable[[str], Mapping[str, RuleState]]
Snapshot = Callable[[str], "tuple[float, Sequence[Deployment]] | None"]
Blindness = Callable[[str], Awaitable[str | None]]
Incident = Callable[[float], "str | None"]  # Railway's own trouble at a time, named; or None
RETRY_MIN, RETRY_MAX = 5.0, 60.0  # backoff between drives of a rollback whose step failed


@dataclass
class _Episode:
    """What was already said while rollback rules fire on one active deployment.

    It ends when the active deployment changes, or when no rule has fired for a cooldown: a
    rule that flaps (fires, resolves, fires) is one incident, not one page per flap.
    """

    active: str | None
    last_firing: float
    said: set[str] = field(default_factory=set)


def _reason(rule: Rule, state: RuleState, now: float) -> str:
    """Why a firing rule fires, in the engine's words: value, duration, samples breaching."""
    window = state.window
    last = window[-1] if window else None
    since = state.since if state.since is not None else now
    if last is None or last.value is None:
        compared = rule.describe()
    else:
        compared = f"{rule.signal.value} {rule.shown(last.value)} {rule.describe_limit()}"
        said = last.detail.get("vs_baseline")
        if isinstance(said, dict) and isinstance(said.get("text"), str):
            # The comparison as the engine wrote it, after the fixed threshold if any.
            compared = said["text"]
            if rule.threshold is not None:
                compared = f"{compared_text(rule, last.value)}; {compared}"
    hits = sum(1 for s in window if rule.breached(s))
    lasted = format_duration(max(0.0, now - since))
    return f"{compared} for {lasted} ({hits}/{len(window)} samples breaching)"


class RollbackController:
    """Decides, for every evaluation of every Railway service, whether to roll back."""

    def __init__(
        self,
        *,
        services: Sequence[ServicePlan],
        store: Store,
        executor: RollbackExecutor,
        clock: Clock,
        metrics: Metrics,
        rule_states: RuleStates,
        snapshot: Snapshot,
        blind: Blindness,
        incident: Incident | None = None,
        acting: Acting = SOLO,
    ) -> None:
        self.services = {s.name: s for s in services}
        self.acting = acting
        self.store = store
        self.executor = executor
        self.clock = clock
        self.metrics = metrics
        self.rule_states = rule_states
        self.snapshot = snapshot
        self.blind = blind
        self.incident = incident
        self.open: set[str] = set()  # services with an unfinished rollback to drive
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._retry_at: dict[str, tuple[float, float]] = {}  # name -> (monotonic, backoff)
        self._episodes: dict[str, _Episode] = {}
        # name -> the clock time of the last evaluation whose decision is made (recorded, or
        # nothing to do): the alert router waits for it before telling a symptom.
        self._decided: dict[str, float] = {}
        self._tasks = Background("rollback controller")
        self._closed = False
        executor.still_wanted = self._still_wanted

    # -- the evaluation hook -----------------------------------------------------------------

    def decided_through(self, service: str) -> float | None:
        """When the last evaluation of ``service`` that came to a decision began (clock time;
        None before the first). A rule that fired before it has had its decision: a
        rollback it started is in the store. The alert router reads this so that a symptom
        is not told in the moment between the rule firing and the rollback's intent."""
        return self._decided.get(service)

    def firing(self, service: ServicePlan) -> tuple[Firing, ...]:
        """The service's rules that are FIRING now, as the decision reads them."""
        states = self.rule_states(service.name)
        out = []
        for rule in service.rules:
            state = states.get(rule.name)
            if state is None or state.phase is not Phase.FIRING or state.since is None:
                continue
            reason = _reason(rule, state, self.clock.time())
            out.append(
                Firing(
                    rule=rule.name,
                    since=state.since,
                    for_=rule.for_,
                    last_known_at=state.last_known_at,
                    max_gap=rule.max_gap,
                    reason=reason,
                    evidence=state.window,
                )
            )
        return tuple(out)

    async def evaluate(self, service: ServicePlan) -> None:
        """After a tick of ``service``: drive its open rollback, or decide if a rule fires."""
        name = service.name
        if self._closed or name not in self.services or name in self._busy:
            return
        if not self.acting.leading():
            return  # a standby: the leader decides (the rules' states stay warm here)
        at = self.clock.time()
        retry = self._retry_at.get(name)
        if retry is not None and self.clock.monotonic() < retry[0]:
            # The last step failed: back off before asking Railway again. Decided as far
            # as the alerts go: a symptom railguard cannot act on now is for people.
            self._decided[name] = at
            return
        if name in self.open:  # its rollback is in the store: nothing new to decide
            self._decided[name] = at
            self._spawn(name, self._drive_open(service))
            return
        if not service.policy.auto_rollback:
            self._decided[name] = at
            return
        firing = self.firing(service)
        if not firing:
            self._decided[name] = at
            episode = self._episodes.get(name)
            if episode is not None and self.clock.time() - episode.last_firing > max(
                service.policy.cooldown, max((r.for_ for r in service.rules), default=0.0)
            ):
                del self._episodes[name]  # over: the next incident speaks again
            return
        self._spawn(name, self._act(service, firing, self.clock.monotonic(), at))

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        task = self._tasks.spawn(work)
        self._busy[name] = task
        task.add_done_callback(lambda _: self._busy.pop(name, None))

    async def aclose(self) -> None:
        """Stop work in flight; the store keeps what is unfinished for the next start.

        From here on an evaluation does nothing: ticks still in flight during a shutdown
        must not start a decision the closing session can no longer carry out."""
        self._closed = True
        await self._tasks.cancel()

    async def stand_down(self) -> None:
        """No longer the leader: drop the work in flight and what this run knew of it.

        Each step was recorded before the next, so the next leader drives an unfinished
        rollback on from the store (its takeover reconciles it), as after a restart."""
        await self._tasks.cancel()
        self._busy.clear()
        self.open.clear()
        self._retry_at.clear()
        self._episodes.clear()
        self._decided.clear()

    async def idle(self) -> None:
        """Wait until no decision or rollback task runs (tests and the bench)."""
        while self._busy:
            await asyncio.gather(*self._busy.values(), return_exceptions=True)

    # -- deciding ----------------------------------------------------------------------------

    async def stored(self, service: ServicePlan) -> ServiceRecords:
        """The store's part of the facts: one read."""
        limit = max(20, service.policy.max_rollbacks_per_day + 5)
        return await self.store.service_records(service.name, self.clock.time(), rollbacks=limit)

    async def facts(
        self,
        service: ServicePlan,
        firing: tuple[Firing, ...],
        deployments: Sequence[Deployment] | None = None,
        *,
        exclude: RollbackRecord | None = None,
        stored: ServiceRecords | None = None,
        windows: bool = True,
    ) -> Facts:
        """Everything the decision looks at, from the poller's last answer unless given.

        ``exclude``: an intent about to be (re)sent, which is not yet a rollback that happened.
        ``stored``: the store's part, when it was just read (one decision reads it once).
        ``windows``: whether maintenance windows count (they stop new decisions only).
        """
        name, now = service.name, self.clock.time()
        if stored is None:
            stored = await self.stored(service)
        blind = await self.blind(name)
        if deployments is None:
            snap = self.snapshot(name)
            deployments = () if snap is None else snap[1]
            if snap is None:
                blind = blind or "Railway has not answered a poll yet"
        active = newest_live(deployments)
        live_at = None
        if active is not None:
            live_at = went_live(active, now)
            record = next((r for r in stored.records if r.id == active.id), None)
            if record is not None and record.live_at is not None:
                live_at = min(live_at, record.live_at)
        recent = [r for r in stored.rollbacks if exclude is None or r.id != exclude.id]
        real = [
            r for r in recent if r.trigger == "auto" and r.state not in ("abandoned", "dry_run")
        ]
        # The rollbacks read are more than the budget allows a day: enough to count.
        today = sum(1 for r in real if r.decided_at >= now - 86400.0)
        dry = None
        if service.policy.dry_run:  # a dry run's records never stop a live run
            dry = next(
                (r.id for r in recent if r.dry_run and active and r.from_deployment == active.id),
                None,
            )
        frozen = stored.frozen
        if frozen is not None and frozen.until is not None and frozen.until <= now:
            frozen = None
        window = in_force(service.maintenance, now) if windows else None
        return Facts(
            now=now,
            firing=firing,
            deployments=tuple(deployments),
            active=active,
            live_at=live_at,
            verdicts=Verdicts.of(stored.records),
            frozen=None if frozen is None else f"{frozen.reason} (by {frozen.actor})",
            maintenance=None if window is None else window.hold_reason(),
            blind=blind,
            incident=None if self.incident is None else self.incident(now),
            last_auto=real[0] if real else None,
            auto_last_24h=today,
            dry_run_of_active=dry,
        )

    async def _act(
        self, service: ServicePlan, firing: tuple[Firing, ...], started: float, at: float
    ) -> None:
        try:
            stored = await self.stored(service)
            facts = await self.facts(service, firing, stored=stored)
            decision = decide(service.policy, facts)
            if isinstance(decision, Go):
                # Decided on the last poll: confirm on Railway's deployments as of now.
                api_started = self.clock.monotonic()
                fresh = await self.executor.deployments(service)
                started += self.clock.monotonic() - api_started
                facts = await self.facts(service, firing, fresh, stored=stored)
                decision = decide(service.policy, facts)
            await self._carry_out(service, facts, decision, started)
        except NotLeader as e:  # deposed meanwhile: the new leader decides
            self.acting.refused("rollback", e)
        except RailguardError as e:  # Railway or the store failed: decide again next time
            self._failed(service, "decision", e)
            self._decided[service.name] = at  # no rollback now: its symptoms are told
        else:
            self._retry_at.pop(service.name, None)
            if not (isinstance(decision, Idle) and decision.waiting):
                self._decided[service.name] = at

    async def _carry_out(
        self, service: ServicePlan, facts: Facts, decision: Decision, started: float
    ) -> None:
        name = service.name
        active = facts.active.id if facts.active is not None else None
        episode = self._episodes.get(name)
        if episode is None or episode.active != active:
            episode = self._episodes[name] = _Episode(active, facts.now)
        episode.last_firing = facts.now
        match decision:
            case Idle():
                return
            case Hold(guard=guard, why=why):
                if guard not in episode.said:
                    self.metrics.rollback_held.labels(name, service.tier, guard).inc()
                    held = HoldEvent(
                        guard=guard,
                        why=why,
                        evidence=self._evidence(facts),
                        deployment=decision.deployment,
                        rollback=decision.rollback,
                    )
                    await write_event(self.store, name, held, facts.now)
                    episode.said.add(guard)
                    log.warning("rollback held back", service=name, guard=guard, why=why)
            case Escalate(kind=kind, why=why, freeze=freeze):
                if kind not in episode.said:
                    evidence = self._evidence(facts)
                    if kind == "loop_breaker":
                        hold = HoldEvent(
                            guard=kind,
                            why=why,
                            evidence=evidence,
                            rollback=decision.rollback,
                            restored=decision.restored,
                        )
                        await write_event(self.store, name, hold, facts.now)
                    escalation = EscalationEvent(
                        escalation=kind,
                        why=why,
                        evidence=evidence,
                        rollback=decision.rollback,
                        restored=decision.restored,
                    )
                    await self.executor.escalate(service, escalation, freeze=freeze)
                    episode.said.add(kind)
            case Go(dry_run=True):
                await self.executor.dry_run(service, decision)
            case Go():
                self.open.add(name)
                record = await self.executor.start(
                    service, decision, facts.deployments, started=started
                )
                self._settled(name, record)

    @staticmethod
    def _evidence(facts: Facts) -> Evidence:
        chosen = min(facts.firing, key=lambda f: (f.since, f.rule), default=None)
        if chosen is None:
            return Evidence()
        return Evidence(
            rule=chosen.rule,
            reason=chosen.reason,
            samples=tuple(s.to_dict() for s in chosen.evidence),
            active=facts.active.id if facts.active is not None else None,
        )

    async def _still_wanted(
        self, service: ServicePlan, record: RollbackRecord, current: Sequence[Deployment]
    ) -> str | NotYet | None:
        """Before an automatic intent is (re)sent: does the decision still say so?

        A maintenance window does not count here: it stops new decisions, never one already
        made (a resend is the same intent, after Railway provably did not apply it)."""
        facts = await self.facts(
            service, self.firing(service), current, exclude=record, windows=False
        )
        decision = decide(service.policy, facts)
        if isinstance(decision, Go) and decision.target.id == record.to_deployment:
            return None
        match decision:
            case Go(target=target):
                return f"the decision now names another target ({target.id})"
            case Hold(guard=guard, why=why):
                return f"held back now ({guard}): {why}"
            case Escalate(kind=kind, why=why):
                return f"{kind}: {why}"
            case Idle(why=why, waiting=True) if not self._waited_out(service, record):
                return NotYet(why)  # the rule fires: its fresh evidence comes in a tick
            case Idle(why=why):
                return why
        return "the decision changed"  # pragma: no cover  (the match is exhaustive)

    def _waited_out(self, service: ServicePlan, record: RollbackRecord) -> bool:
        """Whether an intent kept for its rule's fresh evidence has waited long enough: the
        rule's whole ``for``, two intervals and 30 s from the decision (after that the rule
        is not coming back to it: the intent is abandoned, and decided anew if it does)."""
        return self.clock.time() - record.decided_at > service.decision_wait

    # -- driving unfinished rollbacks ----------------------------------------------------------

    async def _drive_open(self, service: ServicePlan) -> None:
        try:
            for record in await self.store.rollbacks(service.name, unfinished=True, limit=1):
                self._settled(service.name, await self.executor.drive(service, record))
            else:
                self.open.discard(service.name)
        except NotLeader as e:
            self.acting.refused("rollback", e)
        except RailguardError as e:
            self._failed(service, "rollback", e)

    def _settled(self, name: str, record: RollbackRecord) -> None:
        if record.finished:
            self.open.discard(name)
            self._retry_at.pop(name, None)

    def _failed(self, service: ServicePlan, step: str, error: RailguardError) -> None:
        name = service.name
        _, backoff = self._retry_at.get(name, (0.0, RETRY_MIN / 2))
        backoff = min(RETRY_MAX, backoff * 2)
        self._retry_at[name] = (self.clock.monotonic() + backoff, backoff)
        self.metrics.tick_errors.labels(name, service.tier, type(error).__name__).inc()
        log.warning(
            f"{step} step failed; decided again at a later evaluation",
            service=name,
            error=str(error),
            retry_in=backoff,
        )

    async def reconcile(self) -> list[RollbackRecord]:
        """Settle what a previous run left unfinished, before the first decision.

        An intent Railway provably never applied is abandoned (a rule that still fires
        decides afresh, through every guard); anything that reached Railway, or may still
        be applying, is driven on from the first evaluation, and never sent twice.
        """
        settled = []
        for record in await self.store.rollbacks(unfinished=True):
            service = self.services.get(record.service)
            if service is None:
                gone = "abandoned" if record.state == "intent" else "failed"
                settled.append(
                    await self.store.advance_rollback(
                        record.id,
                        gone,
                        at=self.clock.time(),
                        error="the service is no longer in the config",
                    )
                )
                continue
            if record.state == "intent":
                current = await self.executor.deployments(service)
                now = self.clock.time()
                state = settle_intent(record, current, now, window=self.executor.reconcile_window)
                if not isinstance(state, Follow | Wait):
                    why = f"railguard stopped before the mutation reached Railway ({state.why})"
                    settled.append(await self.executor.finish(service, record, "abandoned", why))
                    continue
            log.warning(
                "resuming a rollback after a restart",
                service=service.name,
                rollback=record.id,
                state=record.state,
            )
            self.open.add(service.name)
            settled.append(record)
        return settled
