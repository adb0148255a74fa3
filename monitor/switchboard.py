"""The switchboard: what turns the engine's verdicts and ticks into records and decisions.

Every rule transition is persisted (its state survives a restart) and the ones people hear
about become events for the alert router; trouble restarts a release's bake. After every
tick of a service, the rollback controller decides afresh from the rules' states as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from monitor.engine import RuleState, Transition, Verdict
from monitor.events import EventKind, RuleEvent, RuleKind, write_event
from monitor.leadership import SOLO, Acting
from monitor.model import Phase
from monitor.plan import ServicePlan
from monitor.scheduler import VerdictSink

if TYPE_CHECKING:
    from monitor.baselines import BaselineBook
    from monitor.controller import RollbackController
    from monitor.releases import ReleaseTracker
    from monitor.store import Store

# Transitions that become events (the alert router reads these); the rest of a rule's life is
# in its persisted state and the metrics.
ROUTED_TRANSITIONS: dict[Transition, RuleKind] = {
    Transition.FIRING: EventKind.RULE_FIRING,
    Transition.RESOLVED: EventKind.RULE_RESOLVED,
    Transition.BLIND: EventKind.BLIND,
    Transition.SIGHT_RESTORED: EventKind.SIGHT_RESTORED,
}


# What a rule told of itself, newest first, is where a new leader's telling starts from: is
# its incident open (firing told, not its end), and is it blind (blind told, not sight)?
TOLD = (EventKind.RULE_FIRING, EventKind.RULE_RESOLVED, EventKind.BLIND, EventKind.SIGHT_RESTORED)
OPENS: dict[str, str] = {EventKind.RULE_FIRING: "firing", EventKind.BLIND: "blind"}
CLOSES: dict[str, str] = {EventKind.RULE_RESOLVED: "firing", EventKind.SIGHT_RESTORED: "blind"}


def missed(left_open: set[str], state: RuleState) -> list[RuleKind]:
    """What a rule's events would have said had this replica led (``left_open``: what its
    last events left open, of "firing" and "blind"), in the order its transitions tell them
    (blind before the end it causes)."""
    kinds: list[RuleKind] = []
    if state.blind and "blind" not in left_open:
        kinds.append(EventKind.BLIND)
    if "firing" in left_open and state.phase is not Phase.FIRING:
        kinds.append(EventKind.RULE_RESOLVED)  # healthy, a gap or blind: the incident ends
    if "blind" in left_open and not state.blind:
        kinds.append(EventKind.SIGHT_RESTORED)
    if state.phase is Phase.FIRING and "firing" not in left_open:
        kinds.append(EventKind.RULE_FIRING)
    return kinds


class Switchboard:
    """Connects the scheduler's workers to the store, the release tracker and the controller."""

    def __init__(
        self,
        states: Callable[[str], Mapping[str, RuleState]],
        *,
        sink: VerdictSink | None = None,
    ) -> None:
        self.states = states
        self.sink = sink
        self.store: Store | None = None
        self.tracker: ReleaseTracker | None = None
        self.controller: RollbackController | None = None
        self.baselines: BaselineBook | None = None
        self.acting: Acting = SOLO

    async def on_verdict(self, service: ServicePlan, verdict: Verdict) -> None:
        """Every rule transition: persist it, record what people hear of, note trouble.

        A standby keeps the rule's state (warm for a takeover) but records no event: the
        leader's are the ones the alert router tells, once."""
        if self.store is not None:
            state = self.states(service.name)[verdict.rule].to_dict()
            await self.store.save_rule_state(service.name, verdict.rule, state, verdict.at)
            told = verdict.transitions if self.acting.leading() else ()
            for transition in told:
                kind = ROUTED_TRANSITIONS.get(transition)
                if transition is Transition.RESET and verdict.previous is Phase.FIRING:
                    # A firing rule that ends through a gap or blindness ends its incident
                    # too, or the incident stays open and its reminders repeat for ever.
                    kind = EventKind.RULE_RESOLVED
                if kind is not None:
                    event = RuleEvent(kind=kind, rule=verdict.rule, reason=verdict.reason)
                    await write_event(self.store, service.name, event, verdict.at)
        if self.tracker is not None and (verdict.phase is not Phase.INACTIVE or verdict.blind):
            self.tracker.note_trouble(service.name, verdict.at)
        if self.sink is not None:
            await self.sink(service, verdict)

    async def take_over(self, services: Iterable[ServicePlan], at: float) -> int:
        """This replica just took the lead: tell what its rules did while it stood by; how
        many it told.

        A standby keeps its rules' states but records no event, and the last leader told
        only what it saw until it died or was cut off. A rule this replica saw fire since
        is told now (or its page is never sent), and one it saw end (or its incident stays
        open and its reminders repeat for ever); so are blindness and sight restored; a
        pending rule tells itself."""
        if self.store is None:
            return 0
        told = 0
        for service in services:
            seen: dict[tuple[str, str], bool] = {}  # (rule, "firing"|"blind") -> left open
            for record in await self.store.events(service.name, kinds=TOLD, limit=1000):
                rule = str(record.data.get("rule"))  # newest first: the last word counts
                if record.kind in OPENS:
                    seen.setdefault((rule, OPENS[record.kind]), True)
                elif record.kind in CLOSES:
                    seen.setdefault((rule, CLOSES[record.kind]), False)
            for rule, state in self.states(service.name).items():
                left_open = {what for what in ("firing", "blind") if seen.get((rule, what))}
                reason = "seen by this replica before it took the lead"
                for kind in missed(left_open, state):
                    event = RuleEvent(kind=kind, rule=rule, reason=reason)
                    await write_event(self.store, service.name, event, at)
                    told += 1
        return told

    async def after_tick(self, service: ServicePlan) -> None:
        """Every evaluation of a service: the baselines are brought up to date, and the
        controller decides from what is."""
        try:
            if self.baselines is not None:
                await self.baselines.after_tick(service)
        finally:  # the store failing at a flush must not skip the decision (the worker logs it)
            if self.controller is not None:
                await self.controller.evaluate(service)
