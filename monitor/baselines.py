"""The baseline book: each release's recorded behaviour, and the baseline each service is
judged against.

While a release serves quietly (SUCCESS on Railway, every rule of the service inactive and
seeing), each sample of a signal some baseline rule watches is added to that release's
:class:`~monitor.baseline.Summary`: once the polls before and after the sample both saw that
release active (a sample taken while a deploy goes out belongs to no release, and is
dropped). A service's baseline is the summary of the previous
known-good release (:meth:`~monitor.releases.ReleaseTracker.baseline_release`). Summaries
are written to the store at most once a minute per service (a crash loses under a minute of
a release's record, never its verdicts) and read back on start; a service keeps those of its
last :data:`KEEP` releases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from monitor.baseline import Reference, Summary
from monitor.clock import Clock
from monitor.model import Sample, Signal
from monitor.plan import ServicePlan
from monitor.railway.statuses import SUCCESS
from monitor.releases import ReleaseTracker, release_key
from monitor.store import Store

log = structlog.get_logger("railguard.baselines")

KEEP = 5
"""Releases whose summaries a service keeps (the active one, its baseline, a few before)."""
FLUSH_EVERY = 60.0
"""Seconds between two writes of a service's summaries."""
MAX_PENDING = 1000
"""Samples held for the next poll at most (a poll that never comes costs no more)."""


def watched(service: ServicePlan) -> frozenset[Signal]:
    """The signals some baseline rule of the service compares."""
    return frozenset(r.signal for r in service.rules if r.baseline is not None)


@dataclass
class _Book:
    """One service's page."""

    loaded: bool = False
    releases: dict[str, dict[Signal, Summary]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # releases, least recently recorded first
    dirty: set[str] = field(default_factory=set)
    flushed_at: float | None = None
    references: dict[Signal, Reference] = field(default_factory=dict)
    reference_of: tuple[str, int] | None = None  # (release, samples) the references are of
    pending: list[Sample] = field(default_factory=list)  # taken since the last poll
    steps: dict[Signal, float] = field(default_factory=dict)  # the last step taken, by signal
    polled: tuple[float, str | None] | None = None  # the last poll: when, and what served


class BaselineBook:
    """Records each release's summaries and answers each service's baseline."""

    def __init__(self, store: Store, tracker: ReleaseTracker, *, clock: Clock) -> None:
        self.store = store
        self.tracker = tracker
        self.clock = clock
        self._books: dict[str, _Book] = {}
        self._watched: dict[str, frozenset[Signal]] = {}  # by service: asked once per sample

    def reference(self, name: str, signal: Signal) -> Reference | None:
        """The baseline ``signal`` of service ``name`` is judged against now, if any."""
        book = self._books.get(name)
        return None if book is None else book.references.get(signal)

    def ready(self, name: str) -> bool:
        """Whether ``name``'s baseline is known: the store read and a poll of Railway taken.
        Until then (a start) no reference is not "no baseline", and a rule must not rest."""
        book = self._books.get(name)
        return book is not None and book.loaded and book.polled is not None

    def record(self, service: ServicePlan, sample: Sample, troubled: bool) -> None:
        """Count one sample into the active release's summary, if it describes a quiet one."""
        signals = self._watched.get(service.name)
        if signals is None:
            signals = self._watched[service.name] = watched(service)
        if sample.signal not in signals or troubled or sample.value is None:
            return
        active = self.tracker.active(service.name)
        if active is None or active.status != SUCCESS or active.failing_instances:
            return
        if sample.window_start < (self.tracker.live_since(service.name) or 0.0):
            return  # measured (partly) before this release served: not its behaviour
        book = self._books.setdefault(service.name, _Book())
        step = sample.detail.get("step_start")
        if isinstance(step, int | float):
            # Railway's newest complete step: each poll until the next step hands it over.
            if book.steps.get(sample.signal) == step:
                return
            book.steps[sample.signal] = step
        if len(book.pending) < MAX_PENDING:
            book.pending.append(sample)

    def _settle(self, name: str, book: _Book) -> None:
        """Give the samples taken between the last two polls to the release both saw serve."""
        at = self.tracker.observed_at(name)
        if at is None or (book.polled is not None and book.polled[0] == at):
            return
        active = self.tracker.active(name)
        serving = None
        if active is not None and active.status == SUCCESS and not active.failing_instances:
            serving = release_key(active)
        before = book.polled
        book.polled = (at, serving)
        settled = [s for s in book.pending if s.at <= at]
        book.pending = [s for s in book.pending if s.at > at]
        if serving is None or before is None or before[1] != serving or not settled:
            return  # a deploy (or a crash) between the polls: whose samples they are is unsure
        summaries = book.releases.get(serving)
        if summaries is None:
            summaries = book.releases[serving] = {}
        if book.order[-1:] != [serving]:  # recorded last (a release rolled back to serves again)
            book.order = [k for k in book.order if k != serving] + [serving]
        for sample in settled:
            summary = summaries.setdefault(sample.signal, Summary(sample.signal))
            if summary.add(sample):
                book.dirty.add(serving)

    async def after_tick(self, service: ServicePlan) -> None:
        """Load what earlier runs recorded, refresh the baseline, write what is due."""
        if not watched(service):
            return
        name = service.name
        book = self._books.setdefault(name, _Book())
        if not book.loaded:
            await self._load(name, book)
        self._settle(name, book)
        self._refresh(name, book)
        now = self.clock.monotonic()
        if book.dirty and (book.flushed_at is None or now - book.flushed_at >= FLUSH_EVERY):
            await self.flush(name)

    async def flush(self, name: str) -> None:
        """Write the service's changed summaries now (and forget all but the last few)."""
        book = self._books.get(name)
        if book is None or not book.dirty:
            return
        at = self.clock.time()
        for key in sorted(book.dirty):
            summaries = book.releases.get(key, {})
            data = {signal.value: s.to_dict() for signal, s in summaries.items()}
            await self.store.save_summaries(name, key, data, at)
        book.dirty.clear()
        book.flushed_at = self.clock.monotonic()
        if len(book.order) > KEEP:
            keep = set(book.order[-KEEP:])
            baseline = self.tracker.baseline_release(name)
            if baseline is not None:
                keep.add(baseline[0])
            book.order = [k for k in book.order if k in keep]
            book.releases = {k: v for k, v in book.releases.items() if k in keep}
            await self.store.forget_summaries(name, keep)

    async def flush_all(self) -> None:
        """Write every service's changed summaries (at shutdown)."""
        for name in list(self._books):
            await self.flush(name)

    async def _load(self, name: str, book: _Book) -> None:
        for key, by_signal in (await self.store.summaries(name)).items():
            summaries = book.releases.setdefault(key, {})
            for signal_name, data in by_signal.items():
                try:
                    summary = Summary.from_dict(data)
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("unreadable release summary", service=name, release=key, error=e)
                    continue
                if signal_name == summary.signal.value and summary.signal not in summaries:
                    summaries[summary.signal] = summary
        book.order = sorted(book.releases, key=lambda k: _last(book.releases[k]))
        book.loaded = True

    def _refresh(self, name: str, book: _Book) -> None:
        baseline = self.tracker.baseline_release(name)
        if baseline is None:
            book.references, book.reference_of = {}, None
            return
        key, label = baseline
        summaries = book.releases.get(key, {})
        seen = (key, sum(s.samples for s in summaries.values()))
        if seen == book.reference_of:
            return
        book.reference_of = seen
        references = {}
        for signal, summary in summaries.items():
            reference = summary.reference(label)
            if reference is not None:
                references[signal] = reference
        book.references = references

    def forget(self, name: str) -> None:
        """Drop what the book holds of a service that is gone (a PR environment closed): its
        pages in memory. What the store keeps of it goes with its other rows, if ever."""
        self._books.pop(name, None)
        self._watched.pop(name, None)

    def summaries(self, name: str) -> Mapping[str, Mapping[Signal, Summary]]:
        """What the book holds of a service, by release key (for /status and tests)."""
        book = self._books.get(name)
        return {} if book is None else book.releases


def _last(summaries: Mapping[Signal, Summary]) -> float:
    return max((s.last_at for s in summaries.values() if s.last_at is not None), default=0.0)
