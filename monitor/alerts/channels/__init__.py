"""Alert channels: one module per ``type``, each a ``Config`` model and a ``build`` function.

Adding a channel is one file with those two names and one line in :data:`CHANNELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Union

import aiohttp
from pydantic import Field

from monitor.alerts.channels import alertmanager, console, discord, email, pagerduty, slack, webhook
from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.clock import Clock

Builder = Callable[[Any, aiohttp.ClientSession, Clock], Channel]

# The config's `type` -> its config model and what builds the channel.
CHANNELS: dict[str, tuple[type[ChannelConfig], Builder]] = {
    "console": (console.Config, console.build),
    "webhook": (webhook.Config, webhook.build),
    "slack": (slack.Config, slack.build),
    "discord": (discord.Config, discord.build),
    "pagerduty": (pagerduty.Config, pagerduty.build),
    "email": (email.Config, email.build),
    "alertmanager": (alertmanager.Config, alertmanager.build),
}

if TYPE_CHECKING:
    ChannelSettings = ChannelConfig
else:  # a union tagged by `type`, from the registry
    ChannelSettings = Annotated[
        Union[tuple(model for model, _ in CHANNELS.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]


def build_channel(
    config: ChannelConfig, name: str, session: aiohttp.ClientSession, clock: Clock
) -> Channel:
    """The channel a config describes, called ``name`` in logs, metrics and the outbox."""
    _, build = CHANNELS[config.type]  # type: ignore[attr-defined]
    channel = build(config, session, clock)
    channel.name = name
    return channel


def channel_name(config: ChannelConfig, index: int) -> str:
    """How logs, metrics and the outbox call a channel: its name, or its type and place."""
    return config.name or f"{config.type}-{index}"  # type: ignore[attr-defined]
