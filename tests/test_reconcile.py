"""Reconciliation as a table: what Railway's deployments say about an unsure rollback."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from monitor.railway.client import Deployment
from monitor.reconcile import Follow, Send, Wait, find_replacement, settle_intent
from monitor.store import RollbackRecord

T0 = 1_700_000_000.0


def dep(id: str, created: float, commit: str | None = None, status: str = "SUCCESS") -> Deployment:
    meta = {} if commit is None else {"commitHash": commit}
    return Deployment(id, status, created, created, True, "svc", "env", meta)


GOOD = dep("good", T0 - 3600, "c1")
BAD = dep("bad", T0 - 600, "c2")
REPLACEMENT = dep("new", T0 + 2, "c1", "INITIALIZING")
SOMEONE_ELSE = dep("other", T0 + 1, "c9", "BUILDING")


def intent(**kw: Any) -> RollbackRecord:
    base: dict[str, Any] = {
        "id": 7,
        "service": "web",
        "from_deployment": "bad",
        "to_deployment": "good",
        "trigger": "auto",
        "actor": "railguard",
        "rule": "error-rate",
        "reason": "",
        "evidence": {},
        "dry_run": False,
        "state": "intent",
        "new_deployment": None,
        "decided_at": T0,
        "sent_at": None,
        "deploying_at": None,
        "live_at": None,
        "recovered_at": None,
        "finished_at": None,
        "error": None,
        "attempts": 1,
        "attempted_at": T0,
    }
    return RollbackRecord(**(base | kw))


@pytest.mark.parametrize(
    ("name", "record", "deployments", "now", "in_flight", "expected"),
    [
        (
            "the replacement appeared",
            intent(),
            (REPLACEMENT, BAD, GOOD),
            T0 + 3,
            True,
            "follow:new",
        ),
        ("never sent", intent(attempts=0, attempted_at=None), (BAD, GOOD), T0, True, "send"),
        ("sent 5s ago, nothing yet", intent(), (BAD, GOOD), T0 + 5, True, "wait"),
        ("the window has passed", intent(), (BAD, GOOD), T0 + 20, True, "send"),
        ("refused before it left", intent(), (BAD, GOOD), T0 + 1, False, "send"),
        (
            "the target's release is preferred",
            intent(),
            (SOMEONE_ELSE, REPLACEMENT, BAD, GOOD),
            T0 + 5,
            True,
            "follow:new",
        ),
        (
            "any new deployment when none runs the target's release",
            intent(),
            (SOMEONE_ELSE, BAD, GOOD),
            T0 + 5,
            True,
            "follow:other",
        ),
        (
            "deployments Railway listed at the intent are not new",
            intent(evidence={"known_deployments": ["other", "bad", "good"]}),
            (SOMEONE_ELSE, BAD, GOOD),
            T0 + 5,
            True,
            "wait",
        ),
        (
            "with the list, Railway's clock does not matter",
            intent(evidence={"known_deployments": ["bad", "good"]}),
            (replace(REPLACEMENT, created_at=T0 - 30), BAD, GOOD),
            T0 + 5,
            True,
            "follow:new",
        ),
        (
            "an old deployment is no replacement",
            intent(),
            (replace(REPLACEMENT, created_at=T0 - 60), BAD, GOOD),
            T0 + 25,
            True,
            "send",
        ),
        (
            "the known replacement",
            intent(new_deployment="new"),
            (replace(REPLACEMENT, meta={}), BAD, GOOD),
            T0 + 3,
            True,
            "follow:new",
        ),
    ],
)
def test_settling_an_intent(
    name: str,
    record: RollbackRecord,
    deployments: tuple[Deployment, ...],
    now: float,
    in_flight: bool,
    expected: str,
) -> None:
    settled = settle_intent(record, deployments, now, window=20.0, in_flight=in_flight)
    match settled:
        case Follow(replacement=d):
            got = f"follow:{d.id}"
        case Wait():
            got = "wait"
        case Send():
            got = "send"
    assert got == expected, name


def test_a_target_known_only_by_its_id_takes_any_new_deployment() -> None:
    record = intent()
    bare = [dep("bad", T0 - 600), dep("good", T0 - 3600), dep("x", T0 + 1)]
    found = find_replacement(record, bare)
    assert found is not None
    assert found.id == "x"
    listed = replace(record, evidence={"known_deployments": ["bad", "good", "x"]})
    assert find_replacement(listed, bare) is None


def test_the_target_missing_from_the_list_takes_any_new_deployment() -> None:
    found = find_replacement(intent(), [BAD, SOMEONE_ELSE])
    assert found is not None
    assert found.id == "other"


def test_a_rebuild_is_found_by_its_commit_whatever_its_new_image() -> None:
    # A build makes a new image: the release key (its digest) differs, the commit does not.
    imaged = replace(GOOD, meta={"commitHash": "c1", "imageDigest": "sha256:old"})
    rebuilt = replace(REPLACEMENT, meta={"commitHash": "c1", "imageDigest": "sha256:new"})
    found = find_replacement(intent(), [SOMEONE_ELSE, rebuilt, BAD, imaged])
    assert found is not None
    assert found.id == "new"
    # The target gone from Railway's list, the intent's own commit still says which it is.
    rebuild = intent(evidence={"rebuild_commit": "c1"})
    found = find_replacement(rebuild, [SOMEONE_ELSE, rebuilt, BAD])
    assert found is not None
    assert found.id == "new"


def test_the_reason_says_how_long_and_which_attempt() -> None:
    settled = settle_intent(intent(attempts=2), (BAD, GOOD), T0 + 30, window=20.0)
    assert isinstance(settled, Send)
    assert settled.why == "no replacement appeared 30s after attempt 2: Railway did not apply it"
