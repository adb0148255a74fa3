"""The emulator's Railway platform status: its own incidents and maintenance (``platformStatus``).

Railway's status page, as its schema shapes it: ``PlatformStatus { isStable, incident,
maintenance }``. Open an incident and Railway is not stable until it is closed (or resolved);
maintenance in progress leaves ``isStable`` alone unless ``stable`` says otherwise, since the
schema does not say it affects deployments. A closed incident or ended maintenance is no
longer shown (null). ``error`` makes the field answer a GraphQL error instead: ``platformStatus``
is non-null, so the whole answer's ``data`` is null, as Railway's would be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import graphql

from monitor.clock import Clock
from monitor.sandbox.emulator_model import EmulatorError, enum_values, iso


@dataclass
class Notice:
    """An incident or a maintenance on Railway's status page."""

    id: str
    message: str
    status: str
    url: str
    at: float  # an incident's createdAt, a maintenance's start


class Platform:
    """Railway's own state: an open incident, maintenance, and whether it is stable."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.incident: Notice | None = None
        self.maintenance: Notice | None = None
        self.stable: bool | None = None  # None: derived (no open incident)
        self.error: str | None = None  # platformStatus answers this GraphQL error
        self._seq = 0

    def open_incident(
        self,
        message: str,
        *,
        status: str = "INVESTIGATING",
        url: str | None = None,
        id: str | None = None,
        at: float | None = None,
    ) -> Notice:
        """Open (or replace) Railway's incident; the same ``id`` updates it."""
        self.incident = self._notice("IncidentStatus", message, status, url, id, at)
        return self.incident

    def close_incident(self) -> None:
        """The incident is over: Railway shows none."""
        self.incident = None

    def start_maintenance(
        self,
        message: str,
        *,
        status: str = "INPROGRESS",
        url: str | None = None,
        id: str | None = None,
        at: float | None = None,
    ) -> Notice:
        """Start (or announce, with NOTSTARTEDYET) maintenance."""
        self.maintenance = self._notice("MaintenanceStatus", message, status, url, id, at)
        return self.maintenance

    def end_maintenance(self) -> None:
        """The maintenance is over: Railway shows none."""
        self.maintenance = None

    @property
    def is_stable(self) -> bool:
        """``isStable``: as set, else no incident open (RESOLVED is not open)."""
        if self.stable is not None:
            return self.stable
        return self.incident is None or self.incident.status == "RESOLVED"

    def answer(self) -> dict[str, Any]:
        """The ``PlatformStatus`` object (or the injected error)."""
        if self.error is not None:
            raise graphql.GraphQLError(self.error)
        incident, maintenance = self.incident, self.maintenance
        return {
            "isStable": self.is_stable,
            "incident": None if incident is None else _node(incident, "createdAt"),
            "maintenance": None if maintenance is None else _node(maintenance, "start"),
        }

    def state(self) -> dict[str, Any]:
        """Everything as JSON (the control API)."""
        return {
            "isStable": self.is_stable,
            "stable": self.stable,
            "error": self.error,
            "incident": None if self.incident is None else asdict(self.incident),
            "maintenance": None if self.maintenance is None else asdict(self.maintenance),
        }

    def _notice(
        self,
        enum: str,
        message: str,
        status: str,
        url: str | None,
        id: str | None,
        at: float | None,
    ) -> Notice:
        if status not in enum_values(enum):
            allowed = ", ".join(sorted(enum_values(enum)))
            raise EmulatorError(f"status must be one of {allowed}", "status")
        if id is None:
            self._seq += 1
            id = f"{enum.removesuffix('Status').lower()}-{self._seq}"
        url = url or f"https://status.railway.com/incidents/{id}"
        return Notice(id, message, status, url, self.clock.time() if at is None else at)


def _node(notice: Notice, when: str) -> dict[str, Any]:
    return {
        "id": notice.id,
        "message": notice.message,
        "status": notice.status,
        "url": notice.url,
        when: iso(notice.at),
    }
