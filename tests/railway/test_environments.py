"""The PR environments query validates against Railway's schema; its answer is read
defensively: anything short of a whole, well-formed list is an error, never a list."""

from __future__ import annotations

from typing import Any

import pytest

from monitor.errors import RailwayProtocolError
from monitor.railway.environments import DOCUMENT, PrEnvironment, read_environments
from monitor.railway.schema import validate_document


def answer(*nodes: Any, more: Any = False) -> dict[str, Any]:
    edges = [{"node": n} for n in nodes]
    return {"project": {"environments": {"edges": edges, "pageInfo": {"hasNextPage": more}}}}


def node(id: str = "env-1", name: str = "web-pr-7", ephemeral: Any = True) -> dict[str, Any]:
    return {"id": id, "name": name, "isEphemeral": ephemeral}


def test_the_query_validates_against_the_schema() -> None:
    assert validate_document(DOCUMENT) == []


def test_a_whole_answer_lists_the_environments() -> None:
    listing = read_environments(answer(node(), node("env-2", "web-pr-8")))
    assert listing.environments == (
        PrEnvironment("env-1", "web-pr-7"),
        PrEnvironment("env-2", "web-pr-8"),
    )
    assert listing.complete
    assert read_environments(answer()).environments == ()


def test_a_partial_page_says_so() -> None:
    assert not read_environments(answer(node(), more=True)).complete


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(None, "project.environments: expected an object", id="null"),
        pytest.param({"project": None}, "expected an object", id="no-project"),
        pytest.param({"project": {"environments": []}}, "expected an object", id="list"),
        pytest.param(
            {"project": {"environments": {"edges": {}, "pageInfo": {"hasNextPage": False}}}},
            "edges: expected a list",
            id="edges-object",
        ),
        pytest.param(answer(node(), more="no"), "hasNextPage", id="page-info-garbage"),
        pytest.param(answer(node(), more=None), "hasNextPage", id="page-info-missing"),
        pytest.param(answer("env-1"), "node: expected an object", id="node-string"),
        pytest.param(answer(node(id="")), "not an id", id="empty-id"),
        pytest.param(answer(node(id=7)), "not an id", id="numeric-id"),  # type: ignore[arg-type]
        pytest.param(answer(node(id="a b/../c")), "not an id", id="odd-id"),
        pytest.param(answer(node(name="")), "not a name", id="empty-name"),
        pytest.param(answer(node(name="x" * 101)), "not a name", id="long-name"),
        pytest.param(answer(node(ephemeral=False)), "not a PR environment", id="not-ephemeral"),
        pytest.param(answer(node(ephemeral=None)), "not a PR environment", id="ephemeral-null"),
        pytest.param(answer(node(), node()), "listed twice", id="duplicate"),
        pytest.param(answer(*[node(f"e{i}") for i in range(501)]), "expected a list", id="many"),
    ],
)
def test_garbage_is_an_error_never_a_list(data: Any, expected: str) -> None:
    with pytest.raises(RailwayProtocolError, match=expected):
        read_environments(data)
