"""Logging formats: JSON lines for machines, key=value for people."""

from __future__ import annotations

import io
import json

import structlog

from monitor.telemetry import configure_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("auto", "info", stream)
    structlog.get_logger("t").info("rule firing", service="web", value=0.5)
    structlog.get_logger("t").debug("not shown")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "rule firing"
    assert record["service"] == "web"
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_key_value_on_a_terminal() -> None:
    stream = Terminal()
    configure_logging("auto", "debug", stream)
    structlog.get_logger("t").debug("probe", service="web")
    text = stream.getvalue()
    assert "probe" in text
    assert "service" in text
    assert "web" in text
    assert not text.lstrip().startswith("{")


def test_console_format_forced() -> None:
    stream = io.StringIO()
    configure_logging("console", "warning", stream)
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").warning("shown", service="web")
    assert "hidden" not in stream.getvalue()
    assert "service=web" in stream.getvalue()
