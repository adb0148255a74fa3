"""The switchboard: any end of a firing rule resolves its incident, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.engine import RuleState, Transition, Verdict
from monitor.environment import load_environment
from monitor.model import Phase
from monitor.planning import build_plan
from monitor.store import open_store
from monitor.switchboard import Switchboard

CONFIG = """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:1/health"
"""


def verdict(previous: Phase, phase: Phase, *transitions: Transition) -> Verdict:
    return Verdict(
        rule="health-failing",
        at=1000.0,
        phase=phase,
        previous=previous,
        transitions=transitions,
        breaching=None,
        blind=Transition.BLIND in transitions,
        reason="no known sample for 1m (> max_gap 30s): connection refused; firing reset",
        evidence=(),
    )


@pytest.mark.parametrize(
    ("previous", "transitions", "kinds"),
    [
        (Phase.FIRING, (Transition.BLIND, Transition.RESET), ["blind", "rule_resolved"]),
        (Phase.FIRING, (Transition.RESET, Transition.PENDING), ["rule_resolved"]),
        (Phase.FIRING, (Transition.RESOLVED,), ["rule_resolved"]),
        (Phase.PENDING, (Transition.RESET,), []),  # never fired: no incident to end
        (Phase.PENDING, (Transition.FIRING,), ["rule_firing"]),
    ],
)
async def test_every_end_of_a_firing_rule_resolves_its_incident(
    tmp_path: Path, previous: Phase, transitions: tuple[Transition, ...], kinds: list[str]
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_text(CONFIG)
    plan = build_plan(path, load_environment({}), {})
    (service,) = plan.services
    async with await open_store(Path(":memory:")) as store:
        board = Switchboard(lambda _: {"health-failing": RuleState()})
        board.store = store
        await board.on_verdict(service, verdict(previous, Phase.INACTIVE, *transitions))
        events = sorted(await store.events("web"), key=lambda e: e.id)
        assert [e.kind for e in events] == kinds
        for event in events:
            assert "firing reset" in str(event.data["reason"])


# -- a new leader tells what its rules did while it stood by ----------------------------------

FIRING, RESOLVED, BLIND, SIGHT = "rule_firing", "rule_resolved", "blind", "sight_restored"


@pytest.mark.parametrize(
    ("last", "phase", "blind", "told"),
    [
        (None, Phase.INACTIVE, False, []),
        (None, Phase.PENDING, False, []),  # a pending rule tells itself when it fires
        (None, Phase.FIRING, False, [FIRING]),
        (RESOLVED, Phase.FIRING, False, [FIRING]),
        (FIRING, Phase.FIRING, False, []),
        (FIRING, Phase.INACTIVE, False, [RESOLVED]),
        (FIRING, Phase.PENDING, False, [RESOLVED]),  # ended, then breaching again
        (None, Phase.INACTIVE, True, [BLIND]),
        (FIRING, Phase.INACTIVE, True, [BLIND, RESOLVED]),  # as the transitions tell it
        (BLIND, Phase.INACTIVE, True, []),
        (BLIND, Phase.INACTIVE, False, [SIGHT]),
        (BLIND, Phase.FIRING, False, [SIGHT, FIRING]),
        (SIGHT, Phase.INACTIVE, False, []),
    ],
)
async def test_a_new_leader_tells_what_each_rule_did_while_it_stood_by(
    tmp_path: Path, last: str | None, phase: Phase, blind: bool, told: list[str]
) -> None:
    path = tmp_path / "railguard.toml"
    path.write_text(CONFIG)
    plan = build_plan(path, load_environment({}), {})
    async with await open_store(Path(":memory:")) as store:
        state = RuleState(phase=phase, blind=blind)
        board = Switchboard(lambda _: {"health-failing": state})
        board.store = store
        await store.record_event("web", "rule_firing", 900.0, {"rule": "other"})  # not its own
        if last is not None:
            await store.record_event("web", last, 950.0, {"rule": "health-failing"})
        assert await board.take_over(plan.services, 1000.0) == len(told)
        events = sorted(await store.events("web", since=1000.0), key=lambda e: e.id)
        assert [e.kind for e in events] == told
        assert all(e.data["rule"] == "health-failing" for e in events)
        assert await board.take_over(plan.services, 1001.0) == 0  # told once: nothing again
