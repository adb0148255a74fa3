"""The leader lease, decided: who leads, until when, and when a leader must stop acting.

Pure: no I/O, no clock. Replicas sharing a database hold one lease row (holder, epoch,
expiry by the database's clock). :func:`claim` says what a replica writes when it looks:
it takes a lease that is free or expired (the epoch goes up: a fencing token every
write-ahead intent and outbox claim is checked against in the same transaction), renews its
own, and otherwise follows. :class:`Leadership` is a replica's own view: it may act only
until its last successful renewal's *start* plus the time-to-live less a margin, by its own
monotonic clock, so a leader cut off from the database stops acting before the lease it
can no longer renew can expire and be taken.

The database writes the row only if it still holds what the replica read (compare and set
on holder and epoch), so two replicas that both find a lease expired cannot both take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from monitor.model import format_duration


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """How long a lease lasts and how often its holder renews it.

    A leader renews every ``renew_every``; it stops acting ``margin`` before its lease could
    expire (clock rates differ, a renewal's answer takes time); a standby takes an expired
    lease at its next look, so a dead leader is replaced within ``ttl + renew_every``.
    """

    ttl: float = 10.0
    renew_every: float = 3.0
    margin: float = 2.0

    def problem(self) -> str | None:
        """What makes these terms unsafe or useless, or None."""
        if not (self.ttl > 0 and self.renew_every > 0 and self.margin > 0):
            return "ttl, renew_every and margin must be positive durations"
        if self.margin >= self.ttl:
            return (
                f"margin {format_duration(self.margin)} must be shorter than ttl "
                f"{format_duration(self.ttl)}: a leader would never act"
            )
        if self.renew_every >= self.ttl - self.margin:
            return (
                f"renew_every {format_duration(self.renew_every)} must be shorter than ttl less "
                f"margin ({format_duration(self.ttl - self.margin)}): a healthy leader would "
                "stop acting between two renewals"
            )
        return None

    @property
    def takeover_within(self) -> float:
        """The longest a dead leader's lease keeps the others waiting, plus one look."""
        return self.ttl + self.renew_every


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """The lease as the database holds it (``expires_at`` by the database's clock)."""

    holder: str | None
    epoch: int
    expires_at: float


def claim(
    row: LeaseRow | None, me: str, db_now: float, terms: LeaseTerms, held: int | None = None
) -> LeaseRow | None:
    """The row replica ``me`` writes at ``db_now`` (compare and set on what it read), or None
    when another replica holds a live lease.

    ``held``: the epoch this process holds the lease under (None: none). A live lease in
    ``me``'s name under another epoch is another process's (two given one
    ``RAILWAY_REPLICA_ID``, or this replica's last run): followed until it expires, then
    taken under a new epoch, so that two processes never both renew it."""
    if row is None:
        return LeaseRow(me, 1, db_now + terms.ttl)
    if row.holder == me and row.epoch == held and db_now < row.expires_at:
        return LeaseRow(me, row.epoch, db_now + terms.ttl)  # renewed: the same epoch
    if row.holder is None or db_now >= row.expires_at:
        return LeaseRow(me, row.epoch + 1, db_now + terms.ttl)  # taken: a new epoch fences
    return None


@dataclass(frozen=True, slots=True)
class Leadership:
    """A replica's own view: whether it leads, with which epoch, and until when."""

    epoch: int | None = None
    until: float | None = None  # monotonic: past it, act no more (renewal start + ttl - margin)

    def may_act(self, now: float) -> bool:
        """Whether the replica may send mutations, notifications and digests at ``now``."""
        return self.epoch is not None and self.until is not None and now < self.until

    def after(
        self, written: LeaseRow | None, me: str, started: float, terms: LeaseTerms
    ) -> Leadership:
        """The view after a look that began at ``started`` (monotonic, before the request
        left) and wrote ``written`` (None: another replica leads, or the write lost the
        compare and set)."""
        if written is None or written.holder != me:
            return Leadership()
        return Leadership(written.epoch, started + terms.ttl - terms.margin)

    def failed(self) -> Leadership:
        """A look that did not answer: the view stands until it runs out by itself."""
        return self

    def describe(self, now: float) -> str:
        """``leader (epoch 7) for 4.2s more``, or ``standby``."""
        if not self.may_act(now):
            return "standby"
        assert self.until is not None
        return f"leader (epoch {self.epoch}) for {format_duration(self.until - now)} more"


class Lease(Protocol):
    """One replica's hold on a lease, as the daemon drives it (PostgreSQL's in production:
    :class:`~monitor.store.lease_pg.PgLease`; tests may drive leadership by hand)."""

    me: str  # this replica's id
    name: str  # the lease's name (its row)
    terms: LeaseTerms
    view: Leadership  # as of the last look
    holder: str | None  # who held the lease at the last look that answered
    last_error: str | None  # why the last look failed (None: it answered)

    async def look(self) -> Leadership:
        """Claim, renew or follow, once; never raises for the database failing."""
        ...

    async def release(self) -> None:
        """Give the lease up (a clean shutdown), so a standby takes it at its next look
        rather than when it expires; never raises for the database failing."""
        ...
