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
