"""The rollback decision as a table: every guard, the pairs that can hold at once, the bounds.

``decide`` is pure, so each row is a policy, some facts and the expected outcome. The guards'
order is DESIGN's; a row per adjacent pair proves it (a guard dropped, reordered or made
sticky changes a row's outcome).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from monitor.decision import (
    GUARDS,
    Escalate,
    Facts,
    Firing,
    Go,
    Hold,
    Idle,
    choose_target,
    commit_of,
    decide,
    describe,
    manual_target,
    restored_by,
    retention_ran_out,
)
from monitor.model import Sample, Signal
from monitor.railway import statuses
from monitor.railway.client import Deployment
from monitor.releases import Verdicts, release_key
from monitor.settings import TierPolicy
from monitor.store import RollbackRecord

NOW = 1_700_000_000.0
# grace longer than the rule's `for`: a rule judges a release only on its own samples, so a
# grace shorter than `for` has passed by the time a rule can fire about the release.
POLICY = TierPolicy(
    auto_rollback=True, grace=300.0, cooldown=900.0, max_rollbacks_per_day=3, dry_run=False
)


def dep(
    id: str,
    created: float,
    status: str = "REMOVED",
    *,
    commit: str | None = None,
    can_rollback: bool = True,
    updated: float | None = None,
) -> Deployment:
    return Deployment(
        id=id,
        status=status,
        created_at=created,
        updated_at=updated if updated is not None else created,
        can_rollback=can_rollback,
        service_id="svc",
        environment_id="env",
        meta={"commitHash": commit or f"c-{id}"},
        status_updated_at=updated if updated is not None else created,
    )


GOOD = dep("good", NOW - 7200, commit="c1")
OLDER = dep("older", NOW - 9000, commit="c0")
BAD = dep("bad", NOW - 600, "SUCCESS", commit="c2")
VERDICTS = Verdicts(good=frozenset({release_key(GOOD), release_key(OLDER)}))
FIRING = Firing(
    rule="error-rate",
    since=NOW - 150,
    for_=120.0,
    last_known_at=NOW,
    max_gap=30.0,
    reason="error_rate > 0.05 for 2m",
)


def rollback(id: int = 1, **kw: Any) -> RollbackRecord:
    base: dict[str, Any] = {
        "id": id,
        "service": "web",
        "from_deployment": "older-bad",
        "to_deployment": GOOD.id,
        "trigger": "auto",
        "actor": "railguard",
        "rule": "error-rate",
        "reason": "",
        "evidence": {},
        "dry_run": False,
        "state": "succeeded",
        "new_deployment": "restored",
        "decided_at": NOW - 420,
        "sent_at": None,
        "deploying_at": None,
        "live_at": None,
        "recovered_at": None,
        "finished_at": NOW - 340,
        "error": None,
    }
    return RollbackRecord(**(base | kw))


def facts(**kw: Any) -> Facts:
    deployments = kw.pop("deployments", (BAD, GOOD, OLDER))
    active = kw.pop("active", BAD)
    base = Facts(
        now=NOW,
        firing=(FIRING,),
        deployments=tuple(deployments),
        active=active,
        live_at=active.created_at if active is not None else None,
        verdicts=VERDICTS,
    )
    return replace(base, **kw)


def outcome(decision: object) -> str:
    match decision:
        case Go(target=target, dry_run=dry, rebuild=commit):
            return f"{'dry' if dry else 'go'}:{target.id}{':rebuild' if commit else ''}"
        case Hold(guard=guard):
            return f"hold:{guard}"
        case Escalate(kind=kind, freeze=freeze):
            return f"escalate:{kind}{':freeze' if freeze else ''}"
        case Idle():
            return "idle"
    raise AssertionError(decision)


COMING = dep("fix", NOW - 30, "BUILDING", commit="c3")
GOOD_EXPIRED = replace(GOOD, can_rollback=False)  # Railway no longer keeps its image
OLDER_EXPIRED = replace(OLDER, can_rollback=False)
REBUILD = POLICY.model_copy(update={"rebuild": True})
RESTORED = dep("restored", NOW - 200, "SUCCESS", commit="c1")  # GOOD's release, put back
# Railway's incident as the controller names it (monitor.railway.platform.PlatformStatus).
INCIDENT = '"Edge failing in every region" (INVESTIGATING, https://status.railway.com/i/1)'

# One fact that makes each guard hold, in DESIGN's order.
GUARD_FACTS: dict[str, dict[str, Any]] = {
    "frozen": {"frozen": "migration running (by ops)"},
    "maintenance": {"maintenance": "maintenance window backup until 2026-11-28 04:00 CET: backup"},
    "monitor_blind": {"blind": "the last Railway poll failed: HTTP 503"},
    "platform_incident": {"incident": "Elevated errors in us-west"},
    "deployment_in_progress": {"deployments": (COMING, BAD, GOOD, OLDER)},
    "grace": {"live_at": NOW - 130},
    "cooldown": {"last_auto": rollback(state="failed")},
    "budget": {"auto_last_24h": 3},
}


@pytest.mark.parametrize(
    ("name", "policy", "kw", "expected"),
    [
        ("a firing rule with nothing in the way", POLICY, {}, "go:good"),
        ("dry run decides the same, sends nothing", replace_policy := None, {}, "dry:good"),
        ("a watch-only tier", TierPolicy(auto_rollback=False), {}, "idle"),
        ("nothing fires", POLICY, {"firing": ()}, "idle"),
        ("no deployment went live", POLICY, {"active": None, "deployments": ()}, "idle"),
        (
            "a crashed release is the active one",
            POLICY,
            {"active": replace(BAD, status="CRASHED")},
            "go:good",
        ),
        (
            "stale evidence (older than max_gap)",
            POLICY,
            {"firing": (replace(FIRING, last_known_at=NOW - 31),)},
            "idle",
        ),
        (
            "evidence at max_gap is fresh",
            POLICY,
            {"firing": (replace(FIRING, last_known_at=NOW - 30),)},
            "go:good",
        ),
        ("firing about the release before this one", POLICY, {"live_at": NOW - 119}, "idle"),
        (
            "for has passed on this release's own samples",
            POLICY.model_copy(update={"grace": 0.0}),
            {"live_at": NOW - 120},
            "go:good",
        ),
        (
            "a dry run already recorded for this release",
            POLICY.model_copy(update={"dry_run": True}),
            {"dry_run_of_active": 4},
            "idle",
        ),
        (
            "a live run is not stopped by an earlier dry run",
            POLICY,
            {"dry_run_of_active": 4},
            "go:good",
        ),
        ("no known-good release", POLICY, {"verdicts": Verdicts()}, "escalate:no_known_good"),
        (
            "the known-good release was rolled back from since",
            POLICY,
            {"verdicts": Verdicts(good=VERDICTS.good, bad=frozenset({release_key(GOOD)}))},
            "go:older",
        ),
        (
            "Railway cannot roll back to it any more",
            POLICY,
            {"deployments": (BAD, replace(GOOD, can_rollback=False), OLDER)},
            "go:older",
        ),
        (
            "no image left of any known-good release: retention ran out",
            POLICY,
            {"deployments": (BAD, GOOD_EXPIRED, OLDER_EXPIRED)},
            "escalate:retention_expired",
        ),
        (
            "no image left, rebuild on: the newest known-good release's commit is rebuilt",
            REBUILD,
            {"deployments": (BAD, GOOD_EXPIRED, OLDER_EXPIRED)},
            "go:good:rebuild",
        ),
        (
            "rebuild on, but an older known-good image is left: a rollback, not a build",
            REBUILD,
            {"deployments": (BAD, GOOD_EXPIRED, OLDER)},
            "go:older",
        ),
        (
            "rebuild on, but the release has no commit to build",
            REBUILD,
            {
                "deployments": (BAD, replace(GOOD_EXPIRED, meta={"imageDigest": "sha256:1"})),
                "verdicts": Verdicts(good=frozenset({"image:sha256:1"})),
            },
            "escalate:retention_expired",
        ),
        (
            "a dry run records the rebuild it would send",
            REBUILD.model_copy(update={"dry_run": True}),
            {"deployments": (BAD, GOOD_EXPIRED, OLDER_EXPIRED)},
            "dry:good:rebuild",
        ),
        (
            "no known-good release at all is not retention",
            REBUILD,
            {"deployments": (BAD, GOOD_EXPIRED), "verdicts": Verdicts()},
            "escalate:no_known_good",
        ),
        ("grace ends exactly at grace", POLICY, {"live_at": NOW - 300}, "go:good"),
        (
            "cooldown ends exactly at cooldown",
            POLICY,
            {"last_auto": rollback(state="failed", finished_at=NOW - 900)},
            "go:good",
        ),
        ("budget one below the limit", POLICY, {"auto_last_24h": 2}, "go:good"),
        (
            "Railway reports an incident of its own",
            POLICY,
            {"incident": INCIDENT},
            "hold:platform_incident",
        ),
        (
            "Railway's incident holds a dry run too",
            replace_policy,
            {"incident": INCIDENT},
            "hold:platform_incident",
        ),
        ("Railway stable (unknown or stale is no incident)", POLICY, {"incident": None}, "go:good"),
        (
            "WAITING needs a person: not coming up by itself",
            POLICY,
            {"deployments": (replace(COMING, status="WAITING"), BAD, GOOD)},
            "go:good",
        ),
        (
            "NEEDS_APPROVAL likewise",
            POLICY,
            {"deployments": (replace(COMING, status="NEEDS_APPROVAL"), BAD, GOOD)},
            "go:good",
        ),
        (
            "an older deployment building is no fix",
            POLICY,
            {"deployments": (BAD, replace(COMING, created_at=NOW - 700), GOOD)},
            "go:good",
        ),
        (
            "the restored release fails within the cooldown: the loop breaker",
            POLICY,
            {
                "active": RESTORED,
                "deployments": (RESTORED, GOOD, OLDER),
                "last_auto": rollback(),
                "live_at": NOW - 350,
            },
            "escalate:loop_breaker:freeze",
        ),
        (
            "the same release redeployed counts as restored",
            POLICY,
            {
                "active": replace(RESTORED, id="again"),
                "deployments": (replace(RESTORED, id="again"), GOOD),
                "last_auto": rollback(),
                "live_at": NOW - 350,
            },
            "escalate:loop_breaker:freeze",
        ),
        (
            "a NEW bad release within the cooldown is held, not the loop breaker",
            POLICY,
            {"last_auto": rollback()},
            "hold:cooldown",
        ),
        (
            "the restored release failing after the cooldown goes further back",
            POLICY,
            {
                "active": RESTORED,
                "deployments": (RESTORED, GOOD, OLDER),
                "last_auto": rollback(finished_at=NOW - 901),
                "live_at": NOW - 350,
            },
            "go:older",
        ),
    ],
)
def test_the_decision_table(
    name: str, policy: TierPolicy | None, kw: dict[str, Any], expected: str
) -> None:
    policy = policy or replace_dry(POLICY)
    assert outcome(decide(policy, facts(**kw))) == expected, name


def replace_dry(policy: TierPolicy) -> TierPolicy:
    return policy.model_copy(update={"dry_run": True})


@pytest.mark.parametrize(
    ("status", "expected"),
    [(s, "hold:deployment_in_progress") for s in sorted(statuses.COMING_UP)]
    + [(s, "go:good") for s in sorted(statuses.WAITING)]
    + [(s, "go:good") for s in sorted(statuses.NEVER_SERVING - statuses.LIVE)],
)
def test_only_a_newer_deployment_coming_up_by_itself_holds(status: str, expected: str) -> None:
    """A person must act on WAITING / NEEDS_APPROVAL, and a failed one fixes nothing."""
    newer = replace(COMING, status=status)
    assert outcome(decide(POLICY, facts(deployments=(newer, BAD, GOOD, OLDER)))) == expected


@pytest.mark.parametrize("guard", GUARDS)
def test_each_guard_holds_alone(guard: str) -> None:
    assert outcome(decide(POLICY, facts(**GUARD_FACTS[guard]))) == f"hold:{guard}"


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for i, a in enumerate(GUARDS) for b in GUARDS[i + 1 :]],
)
def test_when_two_guards_hold_the_earlier_one_speaks(first: str, second: str) -> None:
    both = GUARD_FACTS[first] | GUARD_FACTS[second]
    if "deployments" in both and "grace" in (first, second):
        pass  # grace reads live_at, deployments the list: independent facts
    assert outcome(decide(POLICY, facts(**both))) == f"hold:{first}"


def test_a_hold_is_not_sticky_the_rollback_goes_ahead_when_the_guard_stops() -> None:
    for guard in GUARDS:
        assert outcome(decide(POLICY, facts(**GUARD_FACTS[guard]))) == f"hold:{guard}"
        assert outcome(decide(POLICY, facts())) == "go:good", guard


def test_guards_come_before_the_target_and_the_dry_run() -> None:
    # No known-good release AND frozen: the freeze speaks (nothing to escalate while frozen).
    kw = GUARD_FACTS["frozen"] | {"verdicts": Verdicts()}
    assert outcome(decide(POLICY, facts(**kw))) == "hold:frozen"
    assert outcome(decide(replace_dry(POLICY), facts(**GUARD_FACTS["grace"]))) == "hold:grace"


def test_the_hold_says_why_with_railways_times() -> None:
    decision = decide(POLICY, facts(live_at=NOW - 130))
    assert isinstance(decision, Hold)
    assert decision.why == "bad went live 2m10s ago (grace 5m)"
    coming = decide(POLICY, facts(**GUARD_FACTS["deployment_in_progress"]))
    assert isinstance(coming, Hold)
    assert coming.deployment == "fix"
    assert "fix is BUILDING" in coming.why


def test_a_platform_hold_names_railways_incident() -> None:
    decision = decide(POLICY, facts(incident=INCIDENT))
    assert isinstance(decision, Hold)
    assert decision.why == f"Railway reports an incident: {INCIDENT}"


def test_the_earliest_firing_rule_is_the_one_named() -> None:
    memory = replace(FIRING, rule="memory-high", since=NOW - 400, for_=300.0)
    decision = decide(POLICY, facts(firing=(FIRING, memory)))
    assert isinstance(decision, Go)
    assert decision.firing.rule == "memory-high"


def test_target_is_the_newest_known_good_older_release_not_the_active_release() -> None:
    redeploy = dep("redeploy", NOW - 100, "SUCCESS", commit="c1")  # GOOD's release again
    assert choose_target((redeploy, GOOD, OLDER), redeploy, VERDICTS) == OLDER
    newer_good = dep("newer", NOW - 60, commit="c9")
    verdicts = Verdicts(good=VERDICTS.good | {release_key(newer_good)})
    assert choose_target((newer_good, BAD, GOOD), BAD, verdicts) == GOOD  # never a newer one


def test_restored_by_knows_the_replacement_and_its_release() -> None:
    assert restored_by(rollback(), RESTORED, ())
    assert restored_by(rollback(new_deployment=None), RESTORED, (GOOD,))
    assert not restored_by(rollback(new_deployment=None), BAD, (GOOD,))
    assert not restored_by(rollback(new_deployment=None), RESTORED, ())


def test_describe_says_each_outcome_in_one_line() -> None:
    assert describe(decide(POLICY, facts())) == "roll bad back to c1"
    assert describe(decide(replace_dry(POLICY), facts())).startswith("dry run: ")
    assert describe(decide(POLICY, facts(live_at=NOW - 130))).startswith("held (grace)")
    assert describe(decide(POLICY, facts(verdicts=Verdicts()))).startswith(
        "escalate (no_known_good)"
    )
    assert describe(decide(POLICY, facts(firing=()))).startswith("idle: ")


def test_a_rule_the_engine_fired_within_its_slack_is_judged() -> None:
    # The engine fires a rule a few milliseconds short of `for` (samples are stamped off their
    # slot); the decision must count it too, or the rollback waits an interval more.
    policy = POLICY.model_copy(update={"grace": 0.0})
    just_short = replace(FIRING, since=NOW - 119.95)
    assert outcome(decide(policy, facts(firing=(just_short,)))) == "go:good"
    too_short = replace(FIRING, since=NOW - 118.0)
    assert outcome(decide(policy, facts(firing=(too_short,)))) == "idle"


def test_retention_running_out_says_which_release_and_which_commit() -> None:
    expired = facts(deployments=(BAD, GOOD_EXPIRED, OLDER_EXPIRED))
    decision = decide(POLICY, expired)
    assert isinstance(decision, Escalate)
    assert (decision.kind, decision.freeze) == ("retention_expired", False)
    assert "retention ran out" in decision.why
    assert "the newest being c1 (good)" in decision.why  # its release label, and its id
    assert "a rebuild of commit c1 would bring it back" in decision.why
    assert "rebuild = true on the tier" in decision.why
    rebuild = decide(REBUILD, expired)
    assert isinstance(rebuild, Go)
    assert (rebuild.target, rebuild.rebuild) == (GOOD_EXPIRED, "c1")
    assert describe(rebuild) == "roll bad back to c1 by rebuilding commit c1"
    no_commit = replace(GOOD_EXPIRED, meta={"release": "v1"})
    assert "no commit to rebuild from" in retention_ran_out(no_commit, commit_of(no_commit))
    manual = retention_ran_out(GOOD_EXPIRED, "c1", manual=True)
    assert manual.endswith("(deploy that commit in Railway)")


@pytest.mark.parametrize(
    ("to", "deployments", "expected"),
    [
        (None, (BAD, GOOD, OLDER), "good"),
        (None, (BAD, GOOD_EXPIRED, OLDER), "older"),
        (None, (BAD, GOOD_EXPIRED, OLDER_EXPIRED), "no rollback is possible: retention ran out"),
        (None, (BAD,), "no known-good release older than bad"),
        ("older", (BAD, GOOD, OLDER), "older"),
        ("nope", (BAD, GOOD), "nope is not one of web's recent deployments"),
        ("bad", (BAD, GOOD), "bad is the active deployment already"),
        (
            "good",
            (BAD, GOOD_EXPIRED),
            "canRollback is false: its image is no longer kept); a rebuild of commit c1",
        ),
    ],
)
def test_a_manual_target_is_the_one_asked_for_or_the_automatic_choice(
    to: str | None, deployments: tuple[Deployment, ...], expected: str
) -> None:
    chosen = manual_target("web", deployments, BAD, VERDICTS, to)
    if isinstance(chosen, Deployment):
        assert chosen.id == expected
    else:
        assert expected in chosen


# -- which evidence is about the active release: each sample's own window


def _windowed(at: float, start: float) -> Sample:
    return Sample(Signal.ERROR_RATE, at, 0.5, detail={"span_s": at - start})


def _firing(since: float, *evidence: Sample) -> Firing:
    last = max((s.at for s in evidence), default=None)
    return Firing("r", since, 30.0, last, 30.0, "why", tuple(evidence))


@pytest.mark.parametrize(
    ("firing", "live_at", "now", "judged"),
    [
        # A rate of 15 s windows: the window over the deploy is about both releases.
        pytest.param(
            _firing(100.0, *(_windowed(t, t - 15) for t in (110.0, 125.0, 140.0))),
            100.0,
            140.0,
            False,
            id="a window began before the release",
        ),
        pytest.param(
            _firing(115.0, *(_windowed(t, t - 15) for t in (115.0, 130.0, 145.0))),
            100.0,
            145.0,
            True,
            id="every window after it, for 30s",
        ),
        pytest.param(
            _firing(115.0, *(_windowed(t, t - 15) for t in (115.0, 130.0))),
            100.0,
            130.0,
            False,
            id="after it, but not yet for 30s",
        ),
        # A window that grows from the deploy on (probe latency): about it from the first.
        pytest.param(
            _firing(105.0, *(_windowed(t, 101.0) for t in (105.0, 115.0, 125.0, 135.0))),
            100.0,
            135.0,
            True,
            id="a growing window from the deploy",
        ),
        pytest.param(
            _firing(105.0, *(_windowed(t, 40.0) for t in (105.0, 135.0))),
            100.0,
            135.0,
            False,
            id="a growing window from before it",
        ),
        # Instants (a probe): window_start is the sample's own time.
        pytest.param(
            _firing(100.0, Sample(Signal.HEALTH, 100.0, 0.0), Sample(Signal.HEALTH, 130.0, 0.0)),
            100.0,
            130.0,
            True,
            id="instants since it went live",
        ),
        pytest.param(
            _firing(90.0, Sample(Signal.HEALTH, 130.0, 0.0)), None, 130.0, True, id="no release"
        ),
        pytest.param(
            _firing(90.0, Sample(Signal.HEALTH, 95.0, 0.0)), None, 130.0, False, id="stale"
        ),
    ],
)
def test_a_rule_judges_a_release_on_windows_that_began_after_it(
    firing: Firing, live_at: float | None, now: float, judged: bool
) -> None:
    assert firing.judges(live_at, now) is judged


def test_a_rule_firing_before_its_evidence_about_the_release_is_whole_is_a_wait() -> None:
    """The alert router waits on such an Idle (a Go may follow in a tick); not on the rest."""
    young = replace(BAD, created_at=NOW - 60, updated_at=NOW - 60, status_updated_at=NOW - 60)
    waiting = decide(POLICY, facts(active=young, deployments=(young, GOOD, OLDER)))
    assert waiting == Idle(waiting.why, waiting=True)  # fired 150s ago, live for 60s of 120
    assert decide(POLICY, facts(firing=())) == Idle(waiting.why, waiting=False)
