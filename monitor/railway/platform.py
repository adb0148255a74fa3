"""Railway's own status (``platformStatus``), asked with every poll and read at the boundary.

Railway's incidents (its edge failing in every region, deploy queues paused) make every service
fail with no release involved, and a rollback then is noise at best: the ``platform_incident``
guard holds automatic rollbacks while Railway says so. The schema's ``PlatformStatus`` is
``{ isStable: Boolean!, incident: Incident, maintenance: Maintenance }``; Railway is *in
trouble* when it says it is not stable, or when an incident is open (any status but
RESOLVED). Maintenance alone does not hold: the schema does not say it affects deployments,
so it only names the trouble when Railway also says it is not stable.

Anything else than the schema's shape (a missing or null status, a string for a boolean, an
incident without its id, a status the schema does not have) is *unknown*, with the reason:
never an incident, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.railway.client import shown

ALIAS = "platform"  # the poll's root field for it (an error naming it is about this field)
FIELD = (
    f"{ALIAS}: platformStatus {{ isStable "
    "incident { id message status url createdAt } "
    "maintenance { id message status url start } }"
)

# The schema's IncidentStatus and MaintenanceStatus (a test holds them against schema.json).
INCIDENT_STATUSES = frozenset({"IDENTIFIED", "INVESTIGATING", "MONITORING", "RESOLVED"})
MAINTENANCE_STATUSES = frozenset({"COMPLETED", "INPROGRESS", "NOTSTARTEDYET"})
RESOLVED, IN_PROGRESS = "RESOLVED", "INPROGRESS"
MAX_TEXT = 200  # Railway's words are shown in alerts: one line, this long at most
UNSTABLE = "unstable"  # the key of trouble Railway names no incident or maintenance for


@dataclass(frozen=True, slots=True)
class Notice:
    """An incident or a maintenance, as Railway's status page names it."""

    id: str
    message: str
    status: str
    url: str | None = None  # only http(s) links are kept
    since: float | None = None  # createdAt (incident) or start (maintenance), if readable

    def describe(self) -> str:
        """``"Edge failing in us-west" (INVESTIGATING, https://status.railway.com/...)``."""
        where = f", {self.url}" if self.url else ""
        return f'"{self.message}" ({self.status}{where})'


@dataclass(frozen=True, slots=True)
class PlatformStatus:
    """One readable answer of ``platformStatus`` and when it came."""

    at: float
    stable: bool
    incident: Notice | None = None
    maintenance: Notice | None = None

    @property
    def open_incident(self) -> Notice | None:
        """The incident, unless Railway says it is resolved."""
        incident = self.incident
        return incident if incident is not None and incident.status != RESOLVED else None

    @property
    def named(self) -> Notice | None:
        """What names the trouble: the open incident, else maintenance in progress."""
        if not self.troubled:
            return None
        if self.open_incident is not None:
            return self.open_incident
        maintenance = self.maintenance
        if maintenance is not None and maintenance.status == IN_PROGRESS:
            return maintenance
        return None

    @property
    def troubled(self) -> bool:
        """Railway says it is not stable, or an incident is open: rollbacks are held."""
        return not self.stable or self.open_incident is not None

    @property
    def key(self) -> str | None:
        """What identifies the trouble across polls (one event per incident); None if none."""
        if not self.troubled:
            return None
        named = self.named
        return UNSTABLE if named is None else named.id

    def describe(self) -> str:
        """The trouble in one line, as the hold and the events say it ("" when none)."""
        if not self.troubled:
            return ""
        incident = self.open_incident
        if incident is not None:
            return incident.describe()
        maintenance = self.named
        if maintenance is not None:
            return f"not stable, maintenance in progress: {maintenance.describe()}"
        return "not stable (no incident named)"


def read_platform(answer: Any, at: float, path: str = ALIAS) -> PlatformStatus | str:
    """``platformStatus``'s answer as a status, or why it is unknown (never raises)."""
    if not isinstance(answer, Mapping):
        return f"{path}: expected an object, got {shown(answer)}"
    stable = answer.get("isStable")
    if not isinstance(stable, bool):
        return f"{path}.isStable: expected a boolean, got {shown(stable)}"
    incident = _notice(answer.get("incident"), f"{path}.incident", INCIDENT_STATUSES, "createdAt")
    if isinstance(incident, str):
        return incident
    maintenance = _notice(
        answer.get("maintenance"), f"{path}.maintenance", MAINTENANCE_STATUSES, "start"
    )
    if isinstance(maintenance, str):
        return maintenance
    return PlatformStatus(at, stable, incident, maintenance)


def _notice(value: Any, path: str, statuses: frozenset[str], when: str) -> Notice | str | None:
    """An Incident or Maintenance (None when Railway has none), or why it is unreadable."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        return f"{path}: expected an object or null, got {shown(value)}"
    texts: dict[str, str] = {}
    for key in ("id", "message", "status", "url"):
        item = value.get(key)
        if not isinstance(item, str) or (key in ("id", "status") and not item.strip()):
            return f"{path}.{key}: expected a string, got {shown(item)}"
        texts[key] = item
    if texts["status"] not in statuses:
        return f"{path}.status: not one of {', '.join(sorted(statuses))}: {shown(texts['status'])}"
    return Notice(
        id=_one_line(texts["id"]),
        message=_one_line(texts["message"]) or "(no message)",
        status=texts["status"],
        url=_link(texts["url"]),
        since=_time(value.get(when)),
    )


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_TEXT else line[: MAX_TEXT - 3] + "..."


def _link(url: str) -> str | None:
    """Railway's link, if it is one: a people-facing alert never carries anything else."""
    url = url.strip()
    ok = url.startswith(("https://", "http://")) and len(url) <= 500 and " " not in url
    return url if ok else None


def _time(value: Any) -> float | None:
    """A DateTime as Unix seconds; None when missing or unreadable (it is only shown)."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
