"""The durable outbox: every notification is stored before it is sent, and sent in order.

One worker per channel takes the channel's oldest pending message and sends it. A transient
failure waits (exponential backoff with jitter, never sooner than a 429's ``Retry-After``) and
tries the same message again, so a channel's messages keep their order (a PagerDuty resolve
never overtakes its trigger); a permanent failure gives the message up and says so. Nothing
here is awaited by the code that decides rollbacks: :meth:`Outbox.put` only writes a row.
Messages still pending at a restart are sent by the next run.

Delivery is at least once, and as close to exactly once as the receiver allows. A message is
recorded as sent in the step right after the receiver's 2xx (the HTTP channels return on the
status line, without waiting for the answer's body), and that record, once begun, is finished
even when the worker is cancelled meanwhile (:meth:`Outbox.stop` past its grace). What is
left is a kill (SIGKILL, a crash, a lost machine) between the receiver taking the message
and the record's commit: the next run sends the message again. It is the same stored
message, so it carries the same idempotency key
(:func:`~monitor.alerts.channels.base.idempotency_key`), and a receiver that honours the key
shows it once (see each channel for which do).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from monitor.alerts.channels.base import Channel
from monitor.alerts.model import Notification
from monitor.clock import Clock
from monitor.errors import ChannelError, NotLeader, StoreError
from monitor.leadership import SOLO, Acting
from monitor.store.outbox import OutboxRecord, OutboxState
from monitor.telemetry import Metrics

if TYPE_CHECKING:
    from monitor.supervisor import Supervisor

log = structlog.get_logger("railguard.alerts")


class OutboxStorage(Protocol):
    """What the outbox keeps in the store."""

    async def enqueue(
        self, channel: str, message_id: str, payload: Mapping[str, Any], at: float
    ) -> bool: ...

    async def outbox_head(self, channel: str) -> OutboxRecord | None: ...

    async def outbox_claim(self, id: int, at: float) -> OutboxRecord: ...

    async def outbox_done(
        self, id: int, state: OutboxState, at: float, error: str | None = None
    ) -> None: ...

    async def outbox_retry(self, id: int, next_at: float, error: str) -> None: ...

    async def outbox_pending(self) -> dict[str, int]: ...


class Outbox:
    """Stores notifications per channel and delivers them, one worker per channel."""

    def __init__(
        self,
        store: OutboxStorage,
        channels: Mapping[str, Channel],
        *,
        clock: Clock,
        metrics: Metrics,
        base_delay: float = 5.0,
        max_delay: float = 600.0,
        seed: int | None = None,
        acting: Acting = SOLO,
        standby_poll: float = 1.0,
    ) -> None:
        self.store = store
        self.acting = acting
        self.standby_poll = standby_poll  # how often a standby's worker asks whether it leads
        self.channels = dict(channels)
        self.clock = clock
        self.metrics = metrics
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._random = random.Random(seed)
        self._wake = {name: asyncio.Event() for name in self.channels}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._supervisor: Supervisor | None = None

    async def put(self, channel: str, notification: Notification) -> bool:
        """Queue ``notification`` for ``channel``; False if it was queued before."""
        queued = await self.store.enqueue(
            channel, notification.id, notification.to_dict(), self.clock.time()
        )
        if queued:
            self.metrics.alerts_queued.labels(channel).inc()
            self._wake[channel].set()
        return queued

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """Start the workers (messages left pending by a previous run go first), each under
        the ``supervisor`` when given: a worker that fails is restarted, not lost."""
        for name, count in (await self.store.outbox_pending()).items():
            self.metrics.outbox_pending.labels(name).set(count)
        self._stopping = False
        self._supervisor = supervisor
        for name in self.channels:
            task = f"outbox:{name}"
            work: Coroutine[Any, Any, None] = (
                self._work(name)
                if supervisor is None
                else supervisor.supervised(
                    task, functools.partial(self._work, name), finished=lambda: self._stopping
                )
            )
            self._tasks.append(asyncio.create_task(work, name=task))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop the workers; what is pending stays in the store for the next run.

        A delivery in flight gets up to ``grace`` seconds to finish and be recorded: cut
        before the receiver's answer, it is sent again next run (with the same idempotency
        key). A record of a delivery already begun is finished, grace or not.
        """
        self._stopping = True
        for wake in self._wake.values():
            wake.set()
        if self._tasks:
            _, unfinished = await asyncio.wait(self._tasks, timeout=grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._supervisor is not None:
            for name in self.channels:
                self._supervisor.forget(f"outbox:{name}")

    async def _work(self, name: str) -> None:
        channel, wake = self.channels[name], self._wake[name]
        while not self._stopping:
            wake.clear()
            if not self.acting.leading():  # the leader delivers
                await self._sleep_or_wake(self.standby_poll, wake)
                continue
            message = await self.store.outbox_head(name)
            if message is None:
                self.metrics.outbox_pending.labels(name).set(0)
                await wake.wait()
                continue
            delay = message.next_at - self.clock.time()
            if delay > 0:
                await self._sleep_or_wake(delay, wake)
                continue
            await self._deliver(name, channel, message)
            self.metrics.outbox_pending.labels(name).set(
                (await self.store.outbox_pending()).get(name, 0)
            )

    async def _sleep_or_wake(self, seconds: float, wake: asyncio.Event) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _deliver(self, name: str, channel: Channel, message: OutboxRecord) -> None:
        notification = Notification.from_dict(message.payload)
        try:
            # Right before the send, under the lease's fence: a deposed leader sends nothing.
            await self.store.outbox_claim(message.id, self.clock.time())
        except NotLeader as e:
            self.acting.refused(f"outbox:{name}", e)
            await self.clock.sleep(self.standby_poll)  # asked again once the lease is looked at
            return
        except StoreError as e:  # delivered or given up meanwhile (by another leader)
            log.info("alert not claimed", channel=name, message=message.message_id, why=str(e))
            await self.clock.sleep(self.standby_poll)
            return
        if not self.acting.leading():
            # The claim's answer came after this replica's view ran out (PostgreSQL slow to
            # answer, as it was to the lease): another may lead by now, and sends it itself.
            error = NotLeader(f"outbox message #{message.id}: this replica no longer leads")
            self.acting.refused(f"outbox:{name}", error)
            await self.clock.sleep(self.standby_poll)
            return
        try:
            try:
                await channel.send(notification)
            except ChannelError:
                raise
            except Exception as e:  # a bug in a channel: contained, counted, retried
                log.exception("alert channel crashed", channel=name)
                raise ChannelError(f"{type(e).__name__}: {e}") from e
        except ChannelError as e:
            if e.permanent:
                await self.store.outbox_done(message.id, "failed", self.clock.time(), str(e))
                self.metrics.alerts_failed.labels(name).inc()
                log.error("alert given up", channel=name, message=message.message_id, error=str(e))
                return
            delay = min(self.max_delay, self.base_delay * 2 ** min(message.attempts, 20))
            delay *= 0.5 + self._random.random()  # jitter: outages end for everyone at once
            if e.retry_after is not None:
                delay = max(delay, e.retry_after)
            await self.store.outbox_retry(message.id, self.clock.time() + delay, str(e))
            self.metrics.alerts_retried.labels(name).inc()
            log.warning(
                "alert delivery failed; will retry",
                channel=name,
                message=message.message_id,
                attempt=message.attempts + 1,
                retry_in=round(delay, 1),
                error=str(e),
            )
            return
        # At once, nothing awaited in between: the receiver has the message, and until this
        # commits a kill means sending it again.
        cancelled = await _finish(self.store.outbox_done(message.id, "sent", self.clock.time()))
        self.metrics.alerts_sent.labels(name).inc()
        log.info("alert sent", channel=name, message=message.message_id, title=notification.title)
        if cancelled:
            raise asyncio.CancelledError


async def _finish(write: Coroutine[Any, Any, None]) -> bool:
    """Run ``write`` to its end even if the caller is cancelled meanwhile; True if it was.

    For the record of a delivered message: cancelled half way, the message would stay
    pending and go out again next run. The write's own error propagates (a store that fails
    leaves the message pending, to be sent again: at least once).
    """
    task = asyncio.ensure_future(write)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    if cancelled and task.exception() is not None:
        # The record failed (the message stays pending) and the worker is stopping: the
        # cancel wins, the error is retrieved here so it is not reported as lost.
        raise asyncio.CancelledError
    task.result()
    return cancelled
