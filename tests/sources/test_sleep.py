"""A sleeping (serverless) service is not probed, and its cold start after a wake is UNKNOWN."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from monitor.model import Sample, Signal
from monitor.sources.sleep import SleepAware

COLD_START, MAX_AGE = 30.0, 70.0


@dataclass(frozen=True)
class Active:
    id: str
    status: str


@dataclass(frozen=True)
class Snapshot:
    at: float
    active: Active | None


@dataclass
class Polls:
    """The poller's latest view of service "web"."""

    snapshot: Snapshot | None = None

    def latest(self, name: str) -> Snapshot | None:
        assert name == "web"
        return self.snapshot

    def poll(self, at: float, status: str, id: str = "d1") -> None:
        self.snapshot = Snapshot(at, Active(id, status))


@dataclass
class Probe:
    """A source whose next answers are set by the test; it counts the requests it made."""

    signals: frozenset[Signal] = frozenset({Signal.HEALTH})
    value: float = 0.0
    asked: list[float] = field(default_factory=list)

    async def collect(self, at: float) -> list[Sample]:
        self.asked.append(at)
        reason = "" if self.value >= 1 else "status 502 (expected 2xx)"
        samples = [Sample(Signal.HEALTH, at, self.value, reason, {"status": 502})]
        if Signal.ERROR_RATE in self.signals:
            samples.append(Sample(Signal.ERROR_RATE, at, 0.5))
        return samples


def wrapped(probe: Probe, polls: Polls) -> SleepAware:
    return SleepAware(probe, polls, "web", cold_start=COLD_START, max_age=MAX_AGE)


async def test_a_sleeping_service_is_not_probed_and_every_signal_is_unknown() -> None:
    probe, polls = Probe(signals=frozenset({Signal.HEALTH, Signal.ERROR_RATE})), Polls()
    polls.poll(100.0, "SLEEPING")
    samples = await wrapped(probe, polls).collect(110.0)
    assert probe.asked == []
    assert [(s.signal, s.value) for s in samples] == [
        (Signal.ERROR_RATE, None),
        (Signal.HEALTH, None),
    ]
    assert all(s.reason.startswith("service is sleeping") for s in samples)
    assert samples[0].detail == {"deployment": "d1", "status": "SLEEPING"}


@pytest.mark.parametrize(
    ("polls", "value", "why"),
    [
        ([], 0.0, "no poll yet: nothing says it sleeps"),
        ([(100.0, "SUCCESS", "d1")], 0.0, "never seen asleep"),
        ([(100.0 - MAX_AGE - 1, "SLEEPING", "d1")], 0.0, "a stale SLEEPING is not trusted"),
        ([(90.0, "SLEEPING", "d1"), (95.0, "SUCCESS", "d2")], 0.0, "replaced: a rollout"),
        ([(90.0, "SLEEPING", "d1"), (95.0, "CRASHED", "d1")], 0.0, "not sleeping any more"),
    ],
)
async def test_a_failing_probe_is_failing_unless_the_service_sleeps_or_wakes(
    polls: list[tuple[float, str, str]], value: float, why: str
) -> None:
    probe, view = Probe(value=value), Polls()
    source = wrapped(probe, view)
    for at, status, id in polls:
        view.poll(at, status, id)
        if status == "SLEEPING":
            await source.collect(at)
    (sample,) = await source.collect(100.0)
    assert probe.asked[-1:] == [100.0], why
    assert sample.value == value, why


async def test_the_cold_start_after_a_wake_is_unknown_then_judged() -> None:
    probe, polls = Probe(), Polls()
    source = wrapped(probe, polls)
    polls.poll(100.0, "SLEEPING")
    await source.collect(101.0)
    polls.poll(110.0, "SUCCESS")  # something woke it
    (first,) = await source.collect(112.0)
    assert (first.value, first.detail["cold_start"]) == (None, True)
    assert first.reason.startswith("service is waking up")
    assert first.reason.endswith("status 502 (expected 2xx)")
    (late,) = await source.collect(110.0 + COLD_START - 0.1)
    assert late.value is None
    (after,) = await source.collect(110.0 + COLD_START)
    assert after.value == 0.0  # the cold start is over: a failing release fails


async def test_the_first_healthy_answer_ends_the_cold_start() -> None:
    probe, polls = Probe(), Polls()
    source = wrapped(probe, polls)
    polls.poll(100.0, "SLEEPING")
    await source.collect(101.0)
    polls.poll(110.0, "SUCCESS")
    probe.value = 1.0
    (healthy,) = await source.collect(112.0)
    assert healthy.value == 1.0
    probe.value = 0.0
    (failing,) = await source.collect(113.0)
    assert failing.value == 0.0


async def test_only_health_is_forgiven_in_the_cold_start() -> None:
    probe, polls = Probe(signals=frozenset({Signal.HEALTH, Signal.ERROR_RATE})), Polls()
    source = wrapped(probe, polls)
    polls.poll(100.0, "SLEEPING")
    await source.collect(101.0)
    polls.poll(110.0, "SUCCESS")
    health, rate = await source.collect(112.0)
    assert (health.signal, health.value) == (Signal.HEALTH, None)
    assert (rate.signal, rate.value) == (Signal.ERROR_RATE, 0.5)


async def test_sleeping_again_starts_afresh() -> None:
    probe, polls = Probe(), Polls()
    source = wrapped(probe, polls)
    for start in (100.0, 300.0):
        polls.poll(start, "SLEEPING")
        (asleep,) = await source.collect(start + 1)
        assert asleep.value is None
        polls.poll(start + 10, "SUCCESS")
        (waking,) = await source.collect(start + 12)
        assert waking.value is None
        (judged,) = await source.collect(start + 10 + COLD_START)
        assert judged.value == 0.0
    assert len(probe.asked) == 4  # never while asleep
