"""Review of the session's changes (794ad53..): what broke under a hostile look."""

from __future__ import annotations

import io
import json
import logging

import pytest

from monitor.telemetry import LibraryLogs, configure_logging


def _library(name: str, level: int, msg: str, *args: object) -> None:
    """A library's record, handed to railguard's handler alone (pytest's own capture
    handler on the root logger raises at a record that does not format)."""
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, LibraryLogs)]
    handler.handle(logging.LogRecord(name, level, __file__, 1, msg, args, None))


@pytest.fixture
def library_logs(capsys: pytest.CaptureFixture[str]) -> io.StringIO:
    """railguard's logging, JSON lines into a stream; the root logger's level put back."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    yield stream  # type: ignore[misc]
    root.setLevel(level)


def test_a_library_record_whose_arguments_do_not_fit_is_still_one_json_line(
    library_logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library's record whose ``%`` arguments do not fit its message (a bug of the
    library's, or a message that is not a format) was a '--- Logging error ---' traceback
    on stderr and no line at all."""
    _library("aiohttp.web", logging.WARNING, "took %d ms", "x")
    assert "Logging error" not in capsys.readouterr().err
    (line,) = library_logs.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "warning"
    assert "took %d ms" in record["event"]


def test_a_library_record_at_a_level_of_its_own_is_logged_at_the_nearest_known_level(
    library_logs: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    """``logging.addLevelName(35, ...)`` and the like: structlog knows only the standard
    levels; such a record was a traceback on stderr and no line."""
    _library("somelib", 35, "between warning and error")
    assert "Logging error" not in capsys.readouterr().err
    (line,) = library_logs.getvalue().splitlines()
    assert json.loads(line)["level"] == "warning"
