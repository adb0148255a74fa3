"""Railway's published GraphQL schema, and validation of documents against it.

Every document railguard sends is checked against this schema by the tests, and the local
emulator executes requests against the same schema, so a field or argument Railway does not
have fails here exactly as it would against ``backboard.railway.com`` (see SCHEMA.md).
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import graphql


@functools.cache
def load_schema() -> graphql.GraphQLSchema:
    """Build the client schema from the packaged ``schema.json`` (once per process)."""
    raw = resources.files("monitor.railway").joinpath("schema.json").read_bytes()
    introspection = json.loads(raw)["data"]
    return graphql.build_client_schema(introspection)


def check_document(
    source: str,
) -> tuple[graphql.DocumentNode | None, list[graphql.GraphQLError]]:
    """Parse and validate ``source``; the document is None when it does not parse."""
    try:
        document = graphql.parse(source)
    except graphql.GraphQLError as error:
        return None, [error]
    return document, list(graphql.validate(load_schema(), document))


def validate_document(source: str) -> list[str]:
    """Human-readable problems with a GraphQL document; an empty list means it is valid."""
    return [describe(error) for error in check_document(source)[1]]


def describe(error: graphql.GraphQLError) -> str:
    """One line for an error: the message and where in the document it points."""
    if not error.locations:
        return error.message
    where = ", ".join(f"line {loc.line} column {loc.column}" for loc in error.locations)
    return f"{error.message} ({where})"
