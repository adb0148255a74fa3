"""A project's PR environments: the query, and its answer read defensively.

Railway creates an ephemeral environment for each pull request (PR environments) and deletes it
when the PR closes. railguard asks for them with one small request; an answer it cannot read
in full is no answer (the caller keeps what it guards), so a garbled reply never drops one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from monitor.errors import RailwayProtocolError
from monitor.railway.client import shown

MAX_ENVIRONMENTS = 500  # more PR environments than this in one project is not an answer
# Railway's connections are paged: ask for the most one page may hold, and never read a
# partial list as "the rest are gone".
DOCUMENT = """query RailguardPrEnvironments($project: String!) {
  project(id: $project) {
    environments(isEphemeral: true, first: 500) {
      edges { node { id name isEphemeral } }
      pageInfo { hasNextPage }
    }
  }
}
"""
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


@dataclass(frozen=True, slots=True)
class PrEnvironment:
    """One PR environment as Railway lists it."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Listing:
    """What Railway listed: the environments, and whether that is all of them."""

    environments: tuple[PrEnvironment, ...]
    complete: bool = True  # False: more pages (an absent environment may still exist)


def read_environments(data: Any) -> Listing:
    """The PR environments in a ``project.environments`` answer, or RailwayProtocolError
    naming what is wrong: a missing or odd field, an id or name that is not one, a
    duplicate, too many."""
    path = "project.environments"
    project = data.get("project") if isinstance(data, Mapping) else None
    connection = project.get("environments") if isinstance(project, Mapping) else None
    if not isinstance(connection, Mapping):
        raise RailwayProtocolError(f"{path}: expected an object, got {shown(connection)}")
    edges = connection.get("edges")
    if not isinstance(edges, list) or len(edges) > MAX_ENVIRONMENTS:
        raise RailwayProtocolError(f"{path}.edges: expected a list, got {shown(edges)}")
    page = connection.get("pageInfo")
    more = page.get("hasNextPage") if isinstance(page, Mapping) else None
    if not isinstance(more, bool):
        raise RailwayProtocolError(f"{path}.pageInfo.hasNextPage: got {shown(more)}")
    found: dict[str, PrEnvironment] = {}
    for i, edge in enumerate(edges):
        where = f"{path}.edges[{i}].node"
        node = edge.get("node") if isinstance(edge, Mapping) else None
        if not isinstance(node, Mapping):
            raise RailwayProtocolError(f"{where}: expected an object, got {shown(node)}")
        id, name = node.get("id"), node.get("name")
        if not isinstance(id, str) or not _ID.match(id):
            raise RailwayProtocolError(f"{where}.id: not an id: {shown(id)}")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise RailwayProtocolError(f"{where}.name: not a name: {shown(name)}")
        if node.get("isEphemeral") is not True:
            raise RailwayProtocolError(f"{where}: not a PR environment (isEphemeral is not true)")
        if id in found:
            raise RailwayProtocolError(f"{where}.id: listed twice: {shown(id)}")
        found[id] = PrEnvironment(id, name)
    return Listing(tuple(found.values()), complete=not more)
