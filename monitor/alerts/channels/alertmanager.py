"""The Alertmanager channel: each incident is one alert posted to ``/api/v2/alerts``.

Alertmanager tells alerts apart by their labels, so the labels depend on the incident only,
never on which of its notifications is sent::

    [{"labels": {"alertname": "railguard_5xx", "severity": "critical",
                 "service": "checkout", "tier": "critical",
                 "railguard_key": "railguard/checkout/5xx", …extra_labels},
      "annotations": {…fields, "summary": "checkout: 5xx firing", "description": "…"},
      "startsAt": "2023-11-14T22:11:40.000Z", "endsAt": "2023-11-14T23:13:20.000Z",
      "generatorURL": "https://…/status"}]

``alertname`` is "railguard_" and the last part of the incident key: the rule's name for a
rule's incident, the event's kind for a service-wide one. Field names become annotation names
with anything but letters, digits and "_" replaced by "_", as Alertmanager requires.

Firing: Alertmanager resolves an alert by itself once ``endsAt`` passes, and an alert without
one after its own ``resolve_timeout`` (5 minutes by default), while railguard notifies about an
incident only when something happens. So a firing alert carries ``endsAt`` = the time of
sending + this channel's ``resolve_timeout`` (default 3 hours), and every later firing
notification of the incident (a rollback's progress, the tier's reminder every
``remind_every``, 1 hour by default) pushes it out again. Keep ``resolve_timeout`` a few
reminder intervals long, or a long incident shows resolved between reminders; with reminders
off (``remind_every = "0s"``) an open incident's alert ends after ``resolve_timeout``. So does
it when railguard stops (or restarts, which forgets open incidents).

Resolved: ``endsAt`` = the notification's time, and Alertmanager drops the alert from
``GET /api/v2/alerts`` (and, with ``send_resolved``, tells its receivers). A resolved notice
can be less severe than the alert it closes (severity is a label, so part of the alert's
identity): the resolved alert is posted once per severity, and the ones that never fired are
dropped silently. Alertmanager only notifies about a resolved alert it saw firing.

Idempotent by labels: posting an alert again replaces the one with the same label set, so a
message sent again after a kill (Alertmanager took it, railguard died before recording it as
sent) leaves one alert, as the first post did (its ``endsAt`` pushed out a little). No key is
needed or sent.

Informational notices (a deployment verified healthy) would show as active alerts until
``resolve_timeout``: ``min_severity = "warning"`` keeps them out.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from pydantic import Field, field_validator, model_validator

from monitor.alerts.channels.base import Channel, ChannelConfig
from monitor.alerts.channels.http import post_json
from monitor.alerts.model import Notification, Severity, Status
from monitor.clock import Clock
from monitor.configtypes import Duration, HttpUrl, Secret, Text

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
OWN_LABELS = frozenset({"alertname", "severity", "service", "tier", "railguard_key"})


class Config(ChannelConfig):
    """``[[channels]] type = "alertmanager"``."""

    type: Literal["alertmanager"]
    url: HttpUrl
    """Alertmanager's base URL (alerts go to ``<url>/api/v2/alerts``)."""
    basic_auth_user: Text | None = None
    basic_auth_password: Secret | None = None
    extra_labels: dict[str, Text] = {}
    """Labels added to every alert (for routing in Alertmanager), e.g. ``team = "payments"``."""
    resolve_timeout: Duration = Field(3 * 3600.0, gt=0)
    """How long a firing alert stays active after its last notification (see the module)."""

    @field_validator("extra_labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a label name (letters, digits and _)")
            if name in OWN_LABELS:
                raise ValueError(f"{name!r} is set by railguard; choose another label name")
        return labels

    @model_validator(mode="after")
    def _auth_pair(self) -> Config:
        if (self.basic_auth_user is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_user and basic_auth_password go together")
        if self.basic_auth_user is not None and ":" in self.basic_auth_user:
            raise ValueError("basic_auth_user cannot contain ':' (basic auth splits there)")
        return self


def iso(at: float) -> str:
    """Unix seconds as RFC 3339 in UTC."""
    text = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def annotation_name(name: str) -> str:
    """``"error rate"`` -> ``"error_rate"``: what Alertmanager accepts as a name."""
    cleaned = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return cleaned if LABEL_NAME.match(cleaned) else "_" + cleaned


def labels(config: Config, notification: Notification, severity: Severity) -> dict[str, str]:
    """The incident's label set at ``severity``."""
    n = notification
    rule = n.key.rstrip("/").rsplit("/", 1)[-1] or n.key
    found = {
        "alertname": f"railguard_{rule}",
        "severity": severity.value,
        "service": n.service,
        "tier": n.tier,
        "railguard_key": n.key,
    }
    # Alertmanager drops empty labels anyway; leaving them out keeps the set the same.
    return {**config.extra_labels, **{k: v for k, v in found.items() if v}}


def alerts(config: Config, notification: Notification, now: float) -> list[dict[str, Any]]:
    """The alerts posted for ``notification`` when sent at ``now``."""
    n = notification
    annotations = {annotation_name(k): v for k, v in n.fields.items()}
    annotations["summary"] = n.title
    if n.text:
        annotations["description"] = n.text
    if n.status is Status.RESOLVED:
        # The notification's own severity first, then every other one (see the module).
        severities = [n.severity, *(s for s in Severity if s is not n.severity)]
        ends = n.at
    else:
        severities = [n.severity]
        ends = max(now, n.at) + config.resolve_timeout
    common: dict[str, Any] = {
        "annotations": annotations,
        "startsAt": iso(min(n.started_at, n.at)),
        "endsAt": iso(ends),
    }
    if n.url:
        common["generatorURL"] = n.url
    return [{"labels": labels(config, n, s), **common} for s in severities]


class AlertmanagerChannel:
    """Posts each incident as one alert to one Alertmanager."""

    def __init__(self, config: Config, session: aiohttp.ClientSession, clock: Clock) -> None:
        self.name = config.name or config.type
        self._config = config
        self._session = session
        self._clock = clock
        self._url = config.url.rstrip("/") + "/api/v2/alerts"

    async def send(self, notification: Notification) -> None:
        """Post the alert(s) for ``notification``; raises ChannelError as the protocol says."""
        config = self._config
        headers = {}
        if config.basic_auth_user is not None and config.basic_auth_password is not None:
            # By hand: aiohttp deprecates BasicAuth, and its successor is newer than our floor.
            pair = f"{config.basic_auth_user}:{config.basic_auth_password.get_secret_value()}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        await post_json(
            self._session,
            self._url,
            alerts(config, notification, self._clock.time()),
            headers=headers,
            timeout=config.timeout,
            clock=self._clock,
        )


def build(config: Config, session: aiohttp.ClientSession, clock: Clock) -> Channel:
    """The Alertmanager channel for ``config``."""
    return AlertmanagerChannel(config, session, clock)
