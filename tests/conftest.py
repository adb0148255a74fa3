"""Shared fixtures: a FakeClock, config files written to a temp dir, the example paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from monitor.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# A PostgreSQL database of the test's own (tests/postgres.py); the suite on PostgreSQL
# (tests/store_backend.py: --store=postgres).
pytest_plugins = ["tests.postgres", "tests.store_backend"]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Logging config is process-global: a test that configures it must not leak it."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _state_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`railguard run` keeps state at RAILGUARD_STATE: never in the working tree."""
    monkeypatch.setenv("RAILGUARD_STATE", str(tmp_path / "railguard-state.db"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a file under tmp_path and return its path."""

    def _write(text: str, name: str = "railguard.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "long_running: many seconds of wall time (real processes, a browser, the real clock, "
        "long simulations): started first",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first: pytest-xdist hands the first tests out one per worker in turn, so the
    long ones run side by side from the start instead of one of them ending the suite late."""
    items.sort(key=lambda item: item.get_closest_marker("long_running") is None)
