"""The persistent state store: what railguard must remember across restarts.

Deployments and their verdicts (known-good, bad for ever), rollbacks (the audit log and the
write-ahead log of the executor), rule pending state, freezes, and the decision trail of
events. :class:`Store` is the interface the daemon uses; :class:`~monitor.store.sqlite.SQLiteStore`
implements it on a single SQLite file (a Railway volume at /data), and its SQL is kept close
enough to PostgreSQL that a shared-database store for high availability can follow.

The store never reads a clock: every time is Unix seconds passed in by the caller.

A rollback moves through these states; each transition stamps one column with its ``at``::

    intent ──▶ sent ──▶ deploying ──▶ succeeded
      │  │       │          │
      │  │       └──────────┴──────▶ failed
      │  └─────────────────────────▶ failed
      └────────────────────────────▶ abandoned
    dry_run (decided, never sent; terminal from the start)

    intent     decided_at     written BEFORE the mutation is sent (begin_rollback); each
                              mutation sent for it is counted first (note_attempt: attempts,
                              attempted_at), so a restart knows one may be in flight
    sent       sent_at        Railway acknowledged the mutation
    deploying  deploying_at   the replacement deployment is known (new_deployment)
    succeeded  recovered_at   the replacement is SUCCESS and health recovered; live_at is when
                              the replacement reached SUCCESS (given, or else ``at``)
    failed     finished_at    the mutation was refused, or recovery failed
    abandoned  finished_at    restart reconciliation: the mutation never reached Railway
    dry_run    decided_at     a dry run: what would have been done (begin_rollback)

Every terminal state (succeeded, failed, abandoned, dry_run) also sets ``finished_at``.
States only move forward and may skip (reconciliation after a crash can find a rollback
already deploying or done); nothing leaves a terminal state; ``abandoned`` is only reachable
from ``intent``, since after ``sent`` the mutation did reach Railway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, get_args

from monitor.errors import StoreError

if TYPE_CHECKING:
    from monitor.store.outbox import OutboxRecord, OutboxState
    from monitor.store.sql import SqlStore

DEFAULT_FILENAME = "railguard.db"

DeploymentVerdict = Literal["unverified", "good", "bad"]
RollbackTrigger = Literal["auto", "manual"]
RollbackState = Literal[
    "intent", "sent", "deploying", "succeeded", "failed", "abandoned", "dry_run"
]

ROLLBACK_STATES: tuple[RollbackState, ...] = get_args(RollbackState)
UNFINISHED: tuple[RollbackState, ...] = ("intent", "sent", "deploying")
TERMINAL: frozenset[RollbackState] = frozenset({"succeeded", "failed", "abandoned", "dry_run"})

# Forward order; terminal states share the last rank, so none can follow another.
_RANK: dict[RollbackState, int] = {
    "intent": 0,
    "sent": 1,
    "deploying": 2,
    **dict.fromkeys(TERMINAL, 3),
}


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """One deployment of a service as railguard has seen it, with its verdict."""

    service: str
    id: str
    status: str
    created_at: float
    first_seen: float
    live_at: float | None  # the first time it was seen serving
    ended_at: float | None  # the first time it was seen not serving after it had served
    can_rollback: bool
    meta: Mapping[str, Any]
    verdict: DeploymentVerdict
    verdict_at: float | None
    verdict_reason: str
    evidence: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RollbackRecord:
    """One rollback, decided, attempted or done: see the module docstring for its states."""

    id: int
    service: str
    from_deployment: str
    to_deployment: str
    trigger: RollbackTrigger
    actor: str
    rule: str | None
    reason: str
    evidence: Mapping[str, Any]
    dry_run: bool
    state: RollbackState
    new_deployment: str | None
    decided_at: float
    sent_at: float | None
    deploying_at: float | None
    live_at: float | None
    recovered_at: float | None
    finished_at: float | None
    error: str | None
    attempts: int = 0  # mutations sent (or maybe sent) for this intent
    attempted_at: float | None = None  # when the last one was sent
    epoch: int | None = None  # the lease epoch the intent was written under (None: no lease)

    @property
    def finished(self) -> bool:
        """True once the rollback is in a terminal state."""
        return self.state in TERMINAL


@dataclass(frozen=True, slots=True)
class FreezeRecord:
    """Automatic rollback of ``service`` is held back until ``until`` (None: until unfrozen)."""

    service: str
    reason: str
    actor: str
    at: float
    until: float | None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of the decision trail (a guard held a rollback back, monitor blind, ...)."""

    id: int
    service: str | None
    kind: str
    at: float
    data: Mapping[str, Any]


def check_transition(
    rollback: RollbackRecord, state: str, *, new_deployment: str | None, live_at: float | None
) -> RollbackState:
    """Validate moving ``rollback`` to ``state``; returns it typed.

    ValueError for a call that can never be right (an unknown state, a missing replacement);
    StoreError for one the stored state refuses (backwards, or out of a terminal state).
    """
    if state not in ROLLBACK_STATES:
        raise ValueError(f"unknown rollback state {state!r} (one of: {', '.join(ROLLBACK_STATES)})")
    target: RollbackState = state
    if target in ("intent", "dry_run"):
        raise ValueError(f"a rollback enters {target!r} only when it begins (begin_rollback)")
    if target in ("deploying", "succeeded") and (new_deployment or rollback.new_deployment) is None:
        raise ValueError(
            f"rollback #{rollback.id} -> {target}: the replacement deployment is needed"
        )
    if live_at is not None and target not in ("deploying", "succeeded"):
        raise ValueError(f"live_at goes with deploying or succeeded, not {target!r}")
    current = rollback.state
    if current in TERMINAL:
        raise StoreError(
            f"rollback #{rollback.id} of {rollback.service} is already {current}: "
            f"it cannot become {target}"
        )
    if target == "abandoned" and current != "intent":
        raise StoreError(
            f"rollback #{rollback.id} of {rollback.service} is {current}: the mutation reached "
            "Railway, so it cannot be abandoned (mark it failed or succeeded)"
        )
    if _RANK[target] <= _RANK[current]:
        raise StoreError(
            f"rollback #{rollback.id} of {rollback.service} is {current}: "
            f"it cannot go back to {target}"
        )
    return target


def transition_columns(
    rollback: RollbackRecord, state: RollbackState, at: float, live_at: float | None
) -> dict[str, float]:
    """The timestamp columns a move to ``state`` at ``at`` sets (see the module docstring)."""
    columns: dict[str, float] = {}
    if state == "sent":
        columns["sent_at"] = at
    elif state == "deploying":
        columns["deploying_at"] = at
    elif state == "succeeded":
        columns["recovered_at"] = at
    if live_at is not None:
        columns["live_at"] = live_at
    elif state == "succeeded" and rollback.live_at is None:
        columns["live_at"] = at  # SUCCESS is a precondition: it was live by now at the latest
    if state in TERMINAL:
        columns["finished_at"] = at
    return columns


@dataclass(frozen=True, slots=True)
class Fence:
    """The lease a replica acts under (high availability, PostgreSQL only).

    Every write that leads to an action (a rollback's intent, each mutation attempt, an
    outbox claim) checks, in its own transaction, that lease ``name`` is still held by
    ``holder`` with the epoch ``epoch()`` returns, share-locking the row so no takeover
    commits in between; otherwise it raises :class:`~monitor.errors.NotLeader` and writes
    nothing. ``epoch()`` None: this replica does not lead, so such a write is refused.
    ``epoch()`` is called on the loop's thread, when the write is asked for.
    """

    holder: str
    epoch: Callable[[], int | None]
    name: str = "leader"


@dataclass(frozen=True, slots=True)
class ServiceRecords:
    """What the store says about one service, read in one go (a decision reads it once)."""

    records: tuple[DeploymentRecord, ...]  # newest created first
    frozen: FreezeRecord | None  # the freeze in force, if any
    rollbacks: tuple[RollbackRecord, ...]  # newest decided first


# An event to record with a rollback's intent, made from the record (its id is known only then):
# (kind, data).
StartedEvent = Callable[["RollbackRecord"], tuple[str, Mapping[str, Any]]]


class Store(Protocol):
    """What the daemon keeps across restarts. Every write is committed before it returns.

    ``fence``: None for a single replica; with several replicas sharing PostgreSQL, the lease
    every action-leading write is checked against (see :class:`Fence`).
    """

    fence: Fence | None

    async def close(self) -> None:
        """Close the store; further calls fail."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    # -- deployments

    async def upsert_deployment(
        self,
        service: str,
        *,
        id: str,
        status: str,
        created_at: float,
        can_rollback: bool,
        meta: Mapping[str, Any],
        seen_at: float,
        live: bool,
        live_at: float | None = None,
    ) -> DeploymentRecord:
        """Record a deployment as polled; keeps first_seen, the first live_at and the verdict.

        ``live_at`` is when it went live by Railway's clock (default ``seen_at``).
        """
        ...

    async def mark_good(
        self, service: str, id: str, at: float, reason: str, evidence: Mapping[str, Any]
    ) -> DeploymentRecord:
        """Mark a deployment known-good unless it is bad; a second call changes nothing."""
        ...

    async def mark_bad(
        self, service: str, id: str, at: float, reason: str, evidence: Mapping[str, Any]
    ) -> DeploymentRecord:
        """Mark a deployment bad for ever (it wins over good); a second call changes nothing."""
        ...

    async def deployment(self, service: str, id: str) -> DeploymentRecord | None:
        """One deployment, or None if it was never recorded."""
        ...

    async def deployments(self, service: str, limit: int = 50) -> list[DeploymentRecord]:
        """A service's deployments, newest created first."""
        ...

    # -- rollbacks

    async def begin_rollback(
        self,
        service: str,
        from_deployment: str,
        to_deployment: str,
        trigger: RollbackTrigger,
        actor: str,
        rule: str | None,
        reason: str,
        evidence: Mapping[str, Any],
        decided_at: float,
        dry_run: bool,
        event: StartedEvent | None = None,
        attempt: bool = False,
    ) -> RollbackRecord:
        """Write the intent (or the dry run); StoreError if one is already in progress.

        ``event``: an event recorded in the same transaction, made from the new record.
        ``attempt``: count the first mutation attempt with it (the caller sends it at once).
        """
        ...

    async def advance_rollback(
        self,
        id: int,
        state: str,
        *,
        at: float,
        new_deployment: str | None = None,
        error: str | None = None,
        live_at: float | None = None,
    ) -> RollbackRecord:
        """Move a rollback forward; StoreError for an unknown id or a refused transition."""
        ...

    async def note_attempt(self, id: int, at: float) -> RollbackRecord:
        """Count one more mutation for an intent, before it is sent (the write-ahead)."""
        ...

    async def rollback(self, id: int) -> RollbackRecord | None:
        """One rollback, or None."""
        ...

    async def rollbacks(
        self,
        service: str | None = None,
        *,
        unfinished: bool = False,
        since: float | None = None,
        limit: int = 100,
    ) -> list[RollbackRecord]:
        """Rollbacks newest decided first, optionally one service's, unfinished, or recent."""
        ...

    async def rollbacks_since(
        self, service: str, since: float, trigger: RollbackTrigger = "auto"
    ) -> int:
        """How many real rollbacks (not dry runs, not abandoned) were decided since ``since``."""
        ...

    async def service_records(
        self, service: str, now: float, *, deployments: int = 200, rollbacks: int = 20
    ) -> ServiceRecords:
        """A service's newest deployments and rollbacks and its freeze at ``now``, in one read."""
        ...

    # -- rule pending state

    async def save_rule_state(
        self, service: str, rule: str, state: Mapping[str, Any], at: float
    ) -> None:
        """Keep one rule's state (``RuleState.to_dict()``) for one service."""
        ...

    async def rule_states(self, service: str) -> dict[str, dict[str, Any]]:
        """Every saved rule state of a service, by rule name."""
        ...

    async def delete_rule_state(self, service: str, rule: str) -> None:
        """Forget one rule's state (a rule removed from the config)."""
        ...

    # -- freezes

    async def freeze(
        self, service: str, reason: str, actor: str, at: float, until: float | None = None
    ) -> FreezeRecord:
        """Hold automatic rollback of ``service`` back; replaces an existing freeze."""
        ...

    async def unfreeze(self, service: str) -> FreezeRecord | None:
        """Lift the freeze; returns what was removed (None if there was none)."""
        ...

    async def frozen(self, service: str, now: float) -> FreezeRecord | None:
        """The freeze in force at ``now``; an expired one counts as none."""
        ...

    async def freezes(self, now: float) -> list[FreezeRecord]:
        """Every freeze in force at ``now``, by service."""
        ...

    # -- events

    async def record_event(
        self, service: str | None, kind: str, at: float, data: Mapping[str, Any]
    ) -> int:
        """Append to the decision trail; returns the event's id."""
        ...

    async def events(
        self,
        service: str | None = None,
        since: float | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 200,
    ) -> list[EventRecord]:
        """Events newest first, filtered by service, time and kinds."""
        ...

    # -- the alert outbox and cursors (monitor/store/outbox.py)

    async def enqueue(
        self, channel: str, message_id: str, payload: Mapping[str, Any], at: float
    ) -> bool:
        """Queue a message for a channel; False if it was queued before."""
        ...

    async def outbox_head(self, channel: str) -> OutboxRecord | None:
        """The oldest pending message of a channel."""
        ...

    async def outbox_claim(self, id: int, at: float) -> OutboxRecord:
        """Claim a pending message right before it is sent: stamps the epoch it goes out
        under (``claimed_epoch``, None without a fence) and ``claimed_at``. NotLeader (and
        nothing written) if the fence no longer holds; StoreError if it is not pending."""
        ...

    async def outbox_done(
        self, id: int, state: OutboxState, at: float, error: str | None = None
    ) -> None:
        """A message was delivered or given up."""
        ...

    async def outbox_retry(self, id: int, next_at: float, error: str) -> None:
        """A delivery attempt failed; try again at ``next_at``."""
        ...

    async def outbox(
        self, channel: str | None = None, state: OutboxState | None = None, limit: int = 200
    ) -> list[OutboxRecord]:
        """Messages newest first."""
        ...

    async def outbox_pending(self) -> dict[str, int]:
        """Pending messages per channel."""
        ...

    async def events_after(self, last_id: int, limit: int = 500) -> list[EventRecord]:
        """Events after an id, oldest first."""
        ...

    async def cursor(self, name: str) -> str | None:
        """A saved position."""
        ...

    async def set_cursor(self, name: str, value: str) -> None:
        """Save a position."""
        ...

    # -- release summaries, the baselines (monitor/store/summaries.py)

    async def save_summaries(
        self, service: str, release: str, summaries: Mapping[str, Mapping[str, Any]], at: float
    ) -> None:
        """Keep one release's summaries by signal, replacing older ones."""
        ...

    async def summaries(self, service: str) -> dict[str, dict[str, Any]]:
        """Every kept summary of a service: ``{release: {signal: data}}``."""
        ...

    async def forget_summaries(self, service: str, keep: Iterable[str]) -> None:
        """Drop a service's summaries of every release but ``keep``."""
        ...


def state_path(configured: Path | None, data_dir: Path = Path("/data")) -> Path:
    """Where the database lives: RAILGUARD_STATE; else on a /data volume; else ./railguard.db.

    A configured directory gets the default file name inside it.
    """
    if configured is not None:
        return configured / DEFAULT_FILENAME if configured.is_dir() else configured
    if data_dir.is_dir():
        return data_dir / DEFAULT_FILENAME
    return Path(DEFAULT_FILENAME)


async def open_store(path: Path, *, database_url: str | None = None) -> SqlStore:
    """Open (creating and migrating as needed) the store: on PostgreSQL at ``database_url``
    if given, else the SQLite file at ``path``.

    StoreError names the file or server and what to do if it cannot be opened, is not a
    database, or is newer than this railguard.
    """
    if database_url:
        from monitor.store.postgres import PostgresStore  # here: psycopg only when asked for

        return await PostgresStore.open(database_url)
    from monitor.store.sqlite import SQLiteStore  # here: it imports this module

    return await SQLiteStore.open(path)
