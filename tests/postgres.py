"""A PostgreSQL database of its own for a test, on the server at 127.0.0.1 (CI starts it).

``RAILGUARD_TEST_POSTGRES`` names the server (default: user postgres on 127.0.0.1:5432, as
.ci/run leaves it). Without a server the test is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

SERVER = os.environ.get("RAILGUARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


# A commit waits for no disk flush in the tests' databases: only a crash of the server itself
# could lose one, which no test makes; railguard's own kills and cut connections are unchanged.
FAST_COMMITS = "SET synchronous_commit TO off"


def _with_database(dsn: str, database: str) -> str:
    return dsn.rsplit("/", 1)[0] + "/" + database


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """The DSN of a new, empty database, dropped at the end (a test may want several)."""
    try:
        admin = await psycopg.AsyncConnection.connect(SERVER, autocommit=True, connect_timeout=5)
    except (OSError, psycopg.Error) as e:
        reason = f"needs PostgreSQL at {SERVER} ({e})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; .ci/run starts it")
        pytest.skip(reason)
    name = f"railguard_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'ALTER DATABASE "{name}" {FAST_COMMITS}')
        yield _with_database(SERVER, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def postgres() -> AsyncIterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    async with database() as dsn:
        yield dsn
