"""The leader lease, decided: claims, fencing epochs, and when a leader must stop acting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.lease import Leadership, LeaseRow, LeaseTerms, claim

TERMS = LeaseTerms(ttl=10.0, renew_every=3.0, margin=2.0)


@pytest.mark.parametrize(
    ("row", "me", "now", "written", "held"),
    [
        pytest.param(None, "a", 100.0, LeaseRow("a", 1, 110.0), None, id="no lease yet: take it"),
        pytest.param(LeaseRow("a", 4, 105.0), "a", 100.0, LeaseRow("a", 4, 110.0), 4, id="renew"),
        pytest.param(
            LeaseRow("a", 4, 105.0), "a", 100.0, None, None, id="own name, another process"
        ),
        pytest.param(LeaseRow("a", 4, 105.0), "a", 100.0, None, 3, id="own name, old epoch"),
        pytest.param(LeaseRow("b", 4, 105.0), "a", 100.0, None, None, id="another's: follow"),
        pytest.param(
            LeaseRow("b", 4, 100.0), "a", 100.0, LeaseRow("a", 5, 110.0), None, id="expired: take"
        ),
        pytest.param(
            LeaseRow(None, 4, 200.0), "a", 100.0, LeaseRow("a", 5, 110.0), None, id="released: take"
        ),
        pytest.param(
            LeaseRow("a", 4, 99.0), "a", 100.0, LeaseRow("a", 5, 110.0), 4, id="own but expired"
        ),
    ],
)
def test_claims(
    row: LeaseRow | None, me: str, now: float, written: LeaseRow | None, held: int | None
) -> None:
    assert claim(row, me, now, TERMS, held) == written


def test_a_leader_acts_until_its_renewal_start_plus_ttl_less_the_margin() -> None:
    view = Leadership().after(LeaseRow("a", 3, 999.0), "a", started=50.0, terms=TERMS)
    assert view.may_act(50.0)
    assert view.may_act(57.9)
    assert not view.may_act(58.0)  # 50 + 10 - 2
    assert view.describe(55.0) == "leader (epoch 3) for 3s more"
    assert view.failed() == view  # a look without an answer changes nothing...
    assert not view.failed().may_act(58.0)  # ...and the view runs out by itself
    assert Leadership().after(None, "a", 50.0, TERMS) == Leadership()
    assert Leadership().after(LeaseRow("b", 3, 999.0), "a", 50.0, TERMS).describe(50) == "standby"


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(0, 1e6),
    latency=st.floats(0, 5),
    drift=st.floats(0.9, 1.1),
    cut_off_after=st.floats(0, 60),
)
def test_a_cut_off_leader_stops_before_anyone_can_take_over(
    start: float, latency: float, drift: float, cut_off_after: float
) -> None:
    """The leader renews from ``start`` (its clock) until cut off; the database stamps each
    renewal when it arrives (later than it left). A standby can take the lease only once the
    database's clock passes the last expiry; the leader must have stopped by then, whatever
    the answer's latency, with its clock's rate off by up to 10% (margin 2s of a 10s lease).
    """
    terms = LeaseTerms(ttl=10.0, renew_every=3.0, margin=2.0)
    view, row, me = Leadership(), None, "a"
    renewals = int(cut_off_after // terms.renew_every) + 1
    for k in range(renewals):
        left = start + k * terms.renew_every  # the leader's clock
        db_now = left + latency  # the database receives it later (real time ~ db time)
        row = claim(row, me, db_now, terms, view.epoch)
        assert row is not None
        view = view.after(row, me, left, terms)
    assert row is not None
    # Real time when the standby may take it: the database's expiry. The leader's own clock
    # runs at `drift` x real time from its last renewal's start.
    last_left = start + (renewals - 1) * terms.renew_every
    real_until_stop = (view.until - last_left) / drift if view.until is not None else 0.0
    real_until_takeover = row.expires_at - last_left
    assert real_until_stop < real_until_takeover  # the margin covers a clock up to 20% slow


@pytest.mark.parametrize(
    ("terms", "problem"),
    [
        (LeaseTerms(), None),
        (LeaseTerms(ttl=0.0), "must be positive"),
        (LeaseTerms(margin=10.0), "margin 10s must be shorter than ttl 10s"),
        (LeaseTerms(renew_every=8.0), "renew_every 8s must be shorter than ttl less margin (8s)"),
    ],
)
def test_terms_are_checked(terms: LeaseTerms, problem: str | None) -> None:
    found = terms.problem()
    assert (found is None) if problem is None else (found is not None and problem in found)
    assert LeaseTerms().takeover_within == 13.0  # within the 15 s
