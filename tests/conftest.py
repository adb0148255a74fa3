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


@pytest.hookimpl(trylast=True)  # after the PostgreSQL pass has left tests out
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long tests first, spread over the workers: pytest-xdist gives each worker a first
    chunk of consecutive tests, so each chunk begins with a lane of long tests. A module's
    long tests share a lane and run one after another (the failover tests' replicas side by
    side would load the machine enough to cost a leader its lease). Only the order changes:
    with another xdist scheduler, or none, every test still runs."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    long: dict[str, list[pytest.Item]] = {}
    rest: list[pytest.Item] = []
    for item in items:
        if item.get_closest_marker("long_running"):
            long.setdefault(item.nodeid.split("::")[0], []).append(item)
        else:
            rest.append(item)
    lanes: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for module in sorted(long.values(), key=len, reverse=True):
        min(lanes, key=len).extend(module)
    # xdist's "load" scheduler: a first chunk of a quarter of each worker's share, at least 2.
    chunk = max((len(items) // workers) // 4, 2)
    ordered: list[pytest.Item] = []
    for lane in lanes:
        ordered.extend(lane)
        ordered.extend(rest[: max(0, chunk - len(lane))])
        del rest[: max(0, chunk - len(lane))]
    items[:] = ordered + rest
