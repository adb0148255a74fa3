"""Leadership in the daemon: the lease loop, the gate every action checks, takeover, stand-down.

With several replicas sharing PostgreSQL (``DATABASE_URL``) one of them leads: only it sends
mutations, notifications and digests, and only it writes the events the alert router turns
into notifications. Standbys keep probing, evaluating rules and recording idempotent facts
(deployments, rule states, summaries), so a takeover starts warm. :class:`Leader` looks at
the lease every ``renew_every`` under the supervisor; the components ask it
:meth:`~Acting.leading` right before they act, and tell it when the store refused a fenced
write (:meth:`~Acting.refused`: logged once per change of leadership, counted, never raised
further). A replica that takes the lease first settles what the last leader left unfinished
(``takeover``, the daemon's reconcile), then acts; one whose view runs out stands down at
once (``stand_down``: work in flight is dropped; the store keeps it for the next leader).

Without ``DATABASE_URL`` there is one replica and no lease: :data:`SOLO` always leads.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog

from monitor.clock import Clock
from monitor.errors import NotLeader
from monitor.lease import Lease
from monitor.store import Fence
from monitor.telemetry import Metrics

log = structlog.get_logger("railguard.leader")

Hook = Callable[[], Awaitable[None]]


class Acting(Protocol):
    """What a component that acts asks before it does, and tells when it was refused."""

    def leading(self) -> bool:
        """Whether this replica may act now."""
        ...

    def refused(self, task: str, error: NotLeader) -> None:
        """The store refused a fenced write of ``task``: this replica no longer leads."""
        ...


class Solo:
    """One replica and no lease: it always acts (and nothing is fenced to refuse it)."""

    def leading(self) -> bool:
        """Always."""
        return True

    def refused(self, task: str, error: NotLeader) -> None:
        """Cannot happen without a fence; said, never raised."""
        log.warning("the store refused a fenced write", task=task, error=str(error))


SOLO = Solo()


def replica_id(configured: str | None) -> str:
    """This replica's name in the lease: Railway's replica id, else host-pid-random."""
    if configured:
        return configured
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Leader:
    """Drives one replica's lease and answers whether it leads."""

    def __init__(
        self,
        lease: Lease,
        *,
        clock: Clock,
        metrics: Metrics,
        takeover: Hook | None = None,
        stand_down: Hook | None = None,
        leading_now: Hook | None = None,
    ) -> None:
        self.lease = lease
        self.clock = clock
        self.metrics = metrics
        self.takeover = takeover
        self.stand_down = stand_down
        self.leading_now = leading_now  # after a takeover: decide at once, not next tick
        self.acting_epoch: int | None = None  # the epoch whose takeover is done
        self.last_beat: float | None = None  # when run() last looked or settled (monotonic)
        self._failing = False  # the last look failed (said once per streak)
        self._refused: set[str] = set()  # tasks refused since leadership last changed

    @property
    def me(self) -> str:
        """This replica's id."""
        return self.lease.me

    def leading(self) -> bool:
        """Leads now: the view says so, and the takeover (reconcile) is done for its epoch."""
        view = self.lease.view
        return view.may_act(self.clock.monotonic()) and view.epoch == self.acting_epoch

    def epoch(self) -> int | None:
        """The epoch the store's fence checks writes against (None: refuse them)."""
        view = self.lease.view
        return view.epoch if view.may_act(self.clock.monotonic()) else None

    def fence(self) -> Fence:
        """The store's fence for this replica's lease."""
        return Fence(holder=self.lease.me, epoch=self.epoch, name=self.lease.name)

    async def release(self) -> None:
        """Stop acting and give the lease up (the daemon's last step at shutdown)."""
        was = self.acting_epoch
        self.acting_epoch = None
        self.metrics.leader.set(0)
        self.metrics.lease_epoch.set(0)
        await self.lease.release()
        if was is not None:
            log.info("lease released", replica=self.me, epoch=was)

    def refused(self, task: str, error: NotLeader) -> None:
        """Counted every time, said once per task per change of leadership."""
        self.metrics.not_leader.labels(task).inc()
        if task not in self._refused:
            self._refused.add(task)
            log.warning("not the leader: the store refused the write", task=task, error=str(error))

    async def run(self) -> None:
        """Look every ``renew_every`` (drift-free); in between, stand down the moment the
        view runs out, without waiting for the next look."""
        every = self.lease.terms.renew_every
        next_look = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            self.last_beat = now
            if now >= next_look:
                await self.step()
                next_look = max(next_look + every, self.clock.monotonic())
            else:
                await self.settle()
            now = self.clock.monotonic()
            wake = next_look
            until = self.lease.view.until
            if self.acting_epoch is not None and until is not None and now < until < wake:
                wake = until
            await self.clock.sleep(max(0.0, wake - now))

    async def step(self) -> None:
        """One look at the lease, then whatever it changed."""
        await self._look()
        await self.settle()

    async def _look(self) -> None:
        """One look at the lease, its failures counted and said once per streak."""
        self.last_beat = self.clock.monotonic()
        await self.lease.look()
        error = self.lease.last_error
        if error is not None:
            self.metrics.lease_look_failures.inc()
            if not self._failing:
                log.warning("could not look at the lease", error=error, **self._context())
            self._failing = True
        elif self._failing:
            self._failing = False
            log.info("the lease answers again", **self._context())

    async def settle(self) -> None:
        """Take over or stand down as the view says now."""
        view = self.lease.view
        may = view.may_act(self.clock.monotonic())
        if self.acting_epoch is not None and (not may or view.epoch != self.acting_epoch):
            self.acting_epoch = None
            self._refused.clear()
            log.warning("standing down: no longer the leader", replica=self.me)
            if self.stand_down is not None:
                await self.stand_down()
        if may and self.acting_epoch is None:
            self._refused.clear()
            log.warning("took the lead", replica=self.me, epoch=view.epoch)
            # Reconcile before the first decision.
            if self.takeover is None or await self._renewing(self.takeover, view.epoch):
                self.acting_epoch = view.epoch
                self.metrics.leader_takeovers.inc()
                if self.leading_now is not None:
                    await self.leading_now()
            else:
                log.warning("lost the lease while taking over", replica=self.me)
        leading = self.leading()
        self.metrics.leader.set(1 if leading else 0)
        self.metrics.lease_epoch.set((view.epoch or 0) if leading else 0)

    async def _renewing(self, hook: Hook, epoch: int | None) -> bool:
        """Run ``hook`` (the takeover: its reconcile may wait on Railway for longer than a
        lease lasts) while the lease is renewed every ``renew_every``, or the lease runs
        out, another replica takes it and reconciles as slowly, and none ever leads. False
        (the hook cancelled) if the lease was lost meanwhile."""
        work = asyncio.ensure_future(hook())
        try:
            while True:
                sleeper = asyncio.ensure_future(self.clock.sleep(self.lease.terms.renew_every))
                try:
                    await asyncio.wait({work, sleeper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                if work.done():
                    work.result()  # the hook's error, as when it was awaited
                    return True
                await self._look()
                view = self.lease.view
                if not view.may_act(self.clock.monotonic()) or view.epoch != epoch:
                    return False
        finally:
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)

    def _context(self) -> dict[str, Any]:
        return {"replica": self.me, "holder": self.lease.holder}

    def status(self) -> dict[str, Any]:
        """The leadership section of /status."""
        now = self.clock.monotonic()
        view = self.lease.view
        leading = self.leading()
        until = view.until if leading and view.until is not None else None
        return {
            "replica": self.me,
            "role": "leader" if leading else "standby",
            "epoch": view.epoch if leading else None,
            # Unix seconds: when it stops acting unless a renewal answers first.
            "acting_until": None if until is None else self.clock.time() + (until - now),
            "holder": self.lease.holder,
            "lease": self.lease.name,
            "ttl_s": self.lease.terms.ttl,
            "renew_every_s": self.lease.terms.renew_every,
            "last_error": self.lease.last_error,
        }


def leadership_text(section: Mapping[str, Any] | None) -> str:
    """The leadership section of /status in words (the status page, ``railguard status``)."""
    if not section or section.get("role") == "single":
        return "single replica (no DATABASE_URL): it leads"
    me, holder, epoch = section.get("replica"), section.get("holder"), section.get("epoch")
    if section.get("role") == "leader":
        return f"{me} leads (this replica, epoch {epoch})"
    if holder == me:  # its own lease, as of the last look that answered: not renewed since
        return f"this replica ({me}) cannot renew its lease: it does not act"
    who = f"{holder} leads" if holder else "no leader known"
    return f"{who}; this replica ({me}) is a standby"


def solo_status() -> dict[str, Any]:
    """The leadership section of /status for a single replica (no DATABASE_URL)."""
    return {"replica": None, "role": "single", "epoch": None, "acting_until": None, "holder": None}
