"""What railguard tells people: one Notification, sent to channels through the outbox."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.StrEnum):
    """How urgent: the tier policy's severity (critical pages, warning and info do not)."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is more urgent (for ``min_severity`` filters)."""
        return {"info": 0, "warning": 1, "critical": 2}[self.value]


class Status(enum.StrEnum):
    """Whether the notification opens (or repeats) an incident, or closes it."""

    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Notification:
    """One message about one incident (or one digest).

    ``key`` identifies the incident across its messages: PagerDuty's ``dedup_key``,
    Alertmanager's label set, the thread a chat channel could group by. ``id`` is unique per
    message (the outbox's idempotency key). Times are Unix seconds.
    """

    id: str
    key: str
    kind: str  # the event's kind (monitor.events.EventKind: rule_firing, rollback_started,
    # ...; an older version's unknown kind as it is), reminder, or digest
    status: Status
    severity: Severity
    title: str  # one line
    text: str  # a few lines of plain text for people
    at: float
    started_at: float  # when the incident began
    service: str | None = None
    tier: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)  # the key facts, in order
    url: str | None = None  # where a person can look (railguard's /status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the outbox stores it; the generic webhook posts it)."""
        return {
            "id": self.id,
            "key": self.key,
            "kind": self.kind,
            "status": self.status.value,
            "severity": self.severity.value,
            "title": self.title,
            "text": self.text,
            "at": self.at,
            "started_at": self.started_at,
            "service": self.service,
            "tier": self.tier,
            "fields": dict(self.fields),
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Notification:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=str(data["id"]),
            key=str(data["key"]),
            kind=str(data["kind"]),
            status=Status(data["status"]),
            severity=Severity(data["severity"]),
            title=str(data["title"]),
            text=str(data["text"]),
            at=float(data["at"]),
            started_at=float(data["started_at"]),
            service=data.get("service"),
            tier=data.get("tier"),
            fields={str(k): str(v) for k, v in dict(data.get("fields", {})).items()},
            url=data.get("url"),
        )
