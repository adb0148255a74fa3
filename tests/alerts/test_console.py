"""The console channel: what the demo prints, and that printing never fails."""

from __future__ import annotations

import io
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from monitor.alerts.channels.console import Config, build
from monitor.alerts.model import Severity, Status
from monitor.clock import FakeClock
from tests.alerts.receivers import notification


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def config(**keys: Any) -> Config:
    return Config.model_validate({"type": "console", **keys}, context={"environ": {}})


async def test_prints_one_readable_block_to_stderr(
    capsys: pytest.CaptureFixture[str], session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    channel = build(config(), session, clock)
    await channel.send(notification())

    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "[CRITICAL] FIRING: checkout: error rate above 5%\n"
        "  service checkout, tier critical, 2023-11-14 22:13:20Z\n"
        "  Error rate 7.1% over 5m (threshold 5%).\n"
        "  Rolling back to the last good release.\n"
        "  error rate: 7.1%\n"
        "  threshold: 5%\n"
        "  http://127.0.0.1:8080/status\n"
        "\n"
    )
    assert channel.name == "console"


@pytest.mark.parametrize(
    ("severity", "status", "title"),
    [
        (Severity.WARNING, Status.FIRING, "[WARNING] FIRING: "),
        (Severity.INFO, Status.FIRING, "[INFO] FIRING: "),
        (Severity.CRITICAL, Status.RESOLVED, "[CRITICAL] RESOLVED: "),
    ],
)
async def test_severity_and_status_lead_the_block(
    capsys: pytest.CaptureFixture[str],
    session: aiohttp.ClientSession,
    clock: FakeClock,
    severity: Severity,
    status: Status,
    title: str,
) -> None:
    channel = build(config(stream="stdout", name="demo"), session, clock)
    await channel.send(notification(severity=severity, status=status))
    out, err = capsys.readouterr()
    assert out.startswith(title)
    assert err == ""
    assert channel.name == "demo"


async def test_a_bare_notification_prints_only_what_it_has(
    capsys: pytest.CaptureFixture[str], session: aiohttp.ClientSession, clock: FakeClock
) -> None:
    bare = notification(service=None, tier=None, fields={}, url=None, text="\n", title="digest")
    await build(config(), session, clock).send(bare)
    assert capsys.readouterr().err == "[CRITICAL] FIRING: digest\n  2023-11-14 22:13:20Z\n\n"


class BrokenPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("stream", [BrokenPipe(), io.StringIO()])
async def test_never_raises(
    monkeypatch: pytest.MonkeyPatch,
    session: aiohttp.ClientSession,
    clock: FakeClock,
    stream: io.StringIO,
) -> None:
    stream.close()  # a closed stream raises ValueError; the broken pipe, OSError
    monkeypatch.setattr(sys, "stderr", stream)
    await build(config(), session, clock).send(notification())


@pytest.mark.parametrize("keys", [{"stream": "stdlog"}, {"colour": True}])
def test_config_refuses(keys: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        config(**keys)
