"""Every status Railway's schema has is classified, once: a new one fails here until decided."""

from __future__ import annotations

from collections import Counter

import pytest

from monitor.railway import statuses
from monitor.railway.schema import load_schema


def enum_values(name: str) -> set[str]:
    return set(getattr(load_schema().get_type(name), "values", {}))


@pytest.mark.parametrize(
    ("enum", "classes"),
    [
        ("DeploymentStatus", statuses.DEPLOYMENT_CLASSES),
        ("DeploymentInstanceStatus", statuses.INSTANCE_CLASSES),
    ],
)
def test_every_value_of_the_schema_is_in_exactly_one_class(
    enum: str, classes: dict[str, frozenset[str]]
) -> None:
    values = enum_values(enum)
    assert values, f"{enum} is not in the packaged schema"
    seen = Counter(value for members in classes.values() for value in members)
    assert {v for v in values if seen[v] == 0} == set(), "unclassified"
    assert {v for v, n in seen.items() if n > 1} == set(), "in more than one class"
    assert set(seen) - values == set(), "not a value Railway has"


def test_the_named_unions_are_made_of_the_classes() -> None:
    assert {"SUCCESS", "SLEEPING", "CRASHED"} == statuses.LIVE
    assert statuses.LIVE <= statuses.SERVING | statuses.FAILED
    assert statuses.NEVER_SERVING.isdisjoint(statuses.SERVING | statuses.COMING_UP)
    assert statuses.NEVER_SERVING.isdisjoint(statuses.WAITING)


def test_coming_up_by_itself_is_not_waiting_for_a_person() -> None:
    assert {"QUEUED", "INITIALIZING", "BUILDING", "DEPLOYING"} == statuses.COMING_UP
    assert {"WAITING", "NEEDS_APPROVAL"} == statuses.WAITING
