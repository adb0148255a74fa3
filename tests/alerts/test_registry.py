"""Every registered channel is one module with a strict Config and a build function."""

from __future__ import annotations

import io
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.alerts.channels import CHANNELS
from monitor.alerts.channels.base import ChannelConfig
from monitor.cli import main


@pytest.mark.parametrize("kind", sorted(CHANNELS))
def test_each_channel_is_registered_under_its_own_type(kind: str) -> None:
    config, build = CHANNELS[kind]
    assert issubclass(config, ChannelConfig)
    assert typing.get_args(config.model_fields["type"].annotation) == (kind,)
    assert config.model_config.get("extra") == "forbid"
    assert callable(build)


def test_check_lists_the_channels(
    write: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK", "http://127.0.0.1:9/hook")
    path = write(
        """
[[services]]
name = "web"
tier = "preview"
health_url = "http://127.0.0.1:9/health"

[[channels]]
type = "console"

[[channels]]
type = "webhook"
name = "ops"
url = "${HOOK}"
min_severity = "critical"
tiers = ["production"]
"""
    )
    out = io.StringIO()
    assert main(["check", "--config", str(path)], stdout=out) == 0
    text = out.getvalue()
    assert "channels (2):" in text
    assert "console-0: console, info and above, all tiers" in text
    assert "ops: webhook, critical and above, production" in text
