"""The /status summary, built from parts cached between requests.

At 5,000 services the whole document (every rule with its chart) took a quarter of a
second of the event loop and megabytes per request. The summary keeps per service only
what a person scans (state, firing rules, the active release and its verdict, the flags),
and each service's part is rebuilt only when what it shows changed:

- the live part (rule phases) is keyed by the rules' phases, so a tick that changed
  nothing reuses the JSON it serialised before;
- the release part (active release and its verdict) is read from the store only when the
  poller saw a new active deployment, an event about the service was written (a verdict, a
  rollback), or it is older than :data:`RELEASE_MAX_AGE`;
- freezes and unfinished rollbacks are one query each per request, for every service.

Building yields to the event loop every :data:`CHUNK` services, so a request delays no
probe tick by more than a chunk's work (milliseconds), and nothing is kept per request.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from monitor.engine import RuleState
from monitor.errors import StoreError
from monitor.maintenance import in_force
from monitor.model import Phase, release_label
from monitor.plan import has_railway_ids
from monitor.releases import Verdicts
from monitor.scheduler import ServiceWorker
from monitor.status import Labels, Observed, base, next_digest, timeline

CHUNK = 50  # services built between two yields to the loop
HISTORY_CHUNK = 25  # services with their charts' points encoded between two yields
RELEASE_MAX_AGE = 60.0  # seconds (monotonic) a cached release part is trusted at most
STATES = ("firing", "pending", "blind", "ok")  # worst first: the order of the summary
TIER_ORDER = ("production", "staging", "preview")
EVENTS_READ = 1000  # events read per request to learn which release parts went stale


def state_of(states: Iterator[RuleState]) -> str:
    """The worst of the rules' states: firing, pending, blind (cannot see), else ok."""
    worst = 3
    for s in states:
        rank = 0 if s.phase is Phase.FIRING else 1 if s.phase is Phase.PENDING else 3
        if s.blind:
            rank = min(rank, 2)
        worst = min(worst, rank)
    return STATES[worst]


@dataclass(frozen=True, slots=True)
class Release:
    """A service's active release as the summary shows it."""

    id: str | None
    label: str | None
    verdict: str | None  # good, bad, unverified; None when Railway was not read yet
    read_at: float  # monotonic


@dataclass(slots=True)
class Part:
    """One service's summary entry, its JSON, and what it was built from."""

    key: tuple[Any, ...]
    entry: dict[str, Any]
    encoded: bytes
    rank: tuple[int, int, str]
    html: Markup | None = None  # its row on the summary page, rendered when first asked


class Summary:
    """The summary document's parts, kept between requests (one per server)."""

    def __init__(self, daemon: Observed) -> None:
        self.daemon = daemon
        self._parts: dict[str, Part] = {}
        self._releases: dict[str, Release] = {}
        self._last_event: int | None = None

    def tiers(self) -> set[str]:
        """The tiers a ``?tier=`` may name."""
        return set(self.daemon.plan.config.tiers) | {w.plan.tier for w in self.daemon.workers}

    async def build(self, *, tier: str | None = None) -> tuple[dict[str, Any], list[Part]]:
        """The document without its services, and the services' parts, worst first."""
        daemon = self.daemon
        now = daemon.clock.time()
        workers = daemon.workers
        if len(self._parts) > len(workers):  # services were removed (a closed PR): forget them
            names = {w.plan.name for w in workers}
            for gone in set(self._parts) - names:
                self._parts.pop(gone, None)
                self._releases.pop(gone, None)
        document = base(daemon, now)
        frozen: set[str] = set()
        rolling: set[str] = set()
        problem = None
        events: list[dict[str, Any]] = []
        store = daemon.store
        try:
            if store is not None:
                frozen = {f.service for f in await store.freezes(now)}
                rolling = {r.service for r in await store.rollbacks(unfinished=True, limit=1000)}
                await self._forget_stale_releases()
            events = await timeline(daemon, Labels(store), tier=tier)
        except StoreError as e:
            problem = str(e)
        parts: list[Part] = []
        tally = Tally()
        for i, worker in enumerate(workers):
            if i and i % CHUNK == 0:
                await asyncio.sleep(0)
            if tier is not None and worker.plan.tier != tier:
                continue
            release = None
            if problem is None and has_railway_ids(worker.plan.config):
                try:
                    release = await self._release(worker)
                except StoreError as e:
                    problem = str(e)
            name = worker.plan.name
            part = self._part(worker, release, name in frozen, name in rolling, now)
            parts.append(part)
            tally.add(part.entry)
        await asyncio.sleep(0)  # sorting thousands: a step of its own
        parts.sort(key=lambda p: p.rank)
        document |= {
            "counts": tally.counts(),
            "tiers": {
                t: {"next_digest": next_digest(daemon, t, now)}
                for t in sorted(tally.by_tier, key=tier_rank)
            },
            "timeline": events,
        }
        if problem is not None:
            document["store_error"] = problem
        return document, parts

    def _part(
        self,
        worker: ServiceWorker,
        release: Release | None,
        frozen: bool,
        rolling: bool,
        now: float,
    ) -> Part:
        name = worker.plan.name
        phases = tuple((s.phase, s.blind) for s in worker.states.values())
        maintenance = maintenance_of(worker, now)
        key = (phases, release, frozen, rolling, maintenance)
        held = self._parts.get(name)
        if held is not None and held.key == key:
            return held
        state = state_of(iter(worker.states.values()))
        entry: dict[str, Any] = {
            "name": name,
            "tier": worker.plan.tier,
            "state": state,
            "firing": worker.firing,
            "release": None if release is None else release.label,
            "deployment": None if release is None else release.id,
            "verdict": None if release is None else release.verdict,
            "frozen": frozen,
            "maintenance": maintenance,
            "rollback_in_progress": rolling,
            "on_railway": has_railway_ids(worker.plan.config),
        }
        encoded = json.dumps(entry, separators=(",", ":")).encode()
        rank = (STATES.index(state), tier_rank(worker.plan.tier), name)
        part = self._parts[name] = Part(key, entry, encoded, rank)
        return part

    async def _forget_stale_releases(self) -> None:
        """Drop the release parts of services an event was written about since last time
        (a verdict, a rollback): one query, however many services there are."""
        store = self.daemon.store
        assert store is not None
        if self._last_event is None:
            newest = await store.events(limit=1)
            self._last_event = newest[0].id if newest else 0
            self._releases.clear()
            return
        found = await store.events_after(self._last_event, limit=EVENTS_READ)
        if len(found) >= EVENTS_READ:
            self._releases.clear()
        for event in found:
            self._releases.pop(event.service or "", None)
        if found:
            self._last_event = found[-1].id

    async def _release(self, worker: ServiceWorker) -> Release:
        daemon = self.daemon
        name = worker.plan.name
        snapshot = daemon.poller.latest(name) if daemon.poller is not None else None
        active = snapshot.active if snapshot is not None else None
        now = daemon.clock.monotonic()
        held = self._releases.get(name)
        if (
            held is not None
            and held.id == (None if active is None else active.id)
            and now - held.read_at < RELEASE_MAX_AGE
        ):
            return held
        if active is None:
            release = Release(None, None, None, now)
        else:
            store = daemon.store
            records = [] if store is None else await store.deployments(name, 200)
            verdicts = Verdicts.of(records)
            verdict = verdicts.word(active)
            release = Release(active.id, release_label(active.meta) or active.id, verdict, now)
        self._releases[name] = release
        return release


def maintenance_of(worker: ServiceWorker, now: float) -> bool:
    """Whether a maintenance window covering the worker's service is in force now."""
    windows = worker.plan.maintenance
    return bool(windows) and in_force(windows, now) is not None


def tier_rank(tier: str) -> int:
    """Known tiers in their order, then the rest."""
    return TIER_ORDER.index(tier) if tier in TIER_ORDER else len(TIER_ORDER)


class Tally:
    """How many services, by state and by tier and state, counted as they are built."""

    def __init__(self) -> None:
        self.by_state = dict.fromkeys(STATES, 0)
        self.by_tier: dict[str, dict[str, int]] = {}
        self.frozen = self.rolling = self.maintenance = 0

    def add(self, entry: dict[str, Any]) -> None:
        """Count one summary entry."""
        state, tier = entry["state"], entry["tier"]
        self.by_state[state] += 1
        tiered = self.by_tier.get(tier)
        if tiered is None:
            tiered = self.by_tier[tier] = dict.fromkeys(STATES, 0)
        tiered[state] += 1
        self.frozen += entry["frozen"]
        self.rolling += entry["rollback_in_progress"]
        self.maintenance += entry["maintenance"]

    def counts(self) -> dict[str, Any]:
        """The document's ``counts``."""
        return {
            "services": sum(self.by_state.values()),
            "by_state": self.by_state,
            "by_tier": {t: self.by_tier[t] for t in sorted(self.by_tier, key=tier_rank)},
            "frozen": self.frozen,
            "rollbacks_in_progress": self.rolling,
            "maintenance": self.maintenance,
        }


def encode_summary(
    document: dict[str, Any], parts: Sequence[Part], charts: Charts | None = None
) -> Iterator[bytes]:
    """The summary as JSON, in pieces (each a few hundred services) to write as they come:
    the services last, their cached JSON joined, not encoded again. With ``charts`` (asked
    by ``?history=1``) each entry also carries its signals' recent values."""
    text = json.dumps(document, allow_nan=False)
    yield (text[:-1] + ', "services": [').encode()
    step = CHUNK if charts is None else HISTORY_CHUNK
    for start in range(0, len(parts), step):
        chunk = parts[start : start + step]
        if charts is None:
            encoded = b",".join(p.encoded for p in chunk)
        else:
            entries = [p.entry | {"history": charts(p.entry["name"])} for p in chunk]
            encoded = ",".join(json.dumps(finite(e), allow_nan=False) for e in entries).encode()
        yield (b"," if start else b"") + encoded
    yield b"]}"


Charts = Callable[[str], dict[str, list[list[float | None]]]]


def charts_of(workers: Sequence[ServiceWorker]) -> Charts:
    """Each service's signals' recent values (the charts' points), by service name."""
    by_name = {w.plan.name: w for w in workers}

    def charts(name: str) -> dict[str, list[list[float | None]]]:
        worker = by_name.get(name)
        if worker is None:
            return {}
        return {s.value: h.chart() for s, h in worker.history.items()}

    return charts


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a probe's odd detail) made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
