"""Garbage in an app's exposition: never a traceback, never a value out of range, and garbage
in the 2xx series never raises the error rate above what the clean series alone give.

Property-based (hypothesis, derandomized so CI is reproducible): valid lines mixed with NaN,
infinities, huge and negative values, duplicated series, garbled names and random text, fed
to the parser and readers the source uses, and a few through a real HTTP server.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import monitor.sources.exposition as exposition
from monitor.clock import FakeClock
from monitor.model import Sample, Signal
from monitor.sources.exposition import ExpositionSource, _parse
from monitor.sources.exposition_checks import MAX_MEMORY_RATIO
from monitor.sources.exposition_config import ExpositionErrorRate, ExpositionMemory
from monitor.sources.exposition_readers import ErrorRateReader, MemoryReader

CTX = {"environ": {}}
URL = "http://127.0.0.1:9/metrics"
FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

BAD_VALUES = ["NaN", "nan", "+Inf", "-Inf", "Inf", "1e400", "-1e400", "-1", "-0.5", "1e300", "1e17"]
HEADER = "# HELP http_requests Requests.\n# TYPE http_requests counter\n"
OTHER = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n"


def rate_config(**fields: Any) -> ExpositionErrorRate:
    return ExpositionErrorRate.model_validate(
        {"source": "exposition", "url": URL, "min_requests": 1, **fields}, context=CTX
    )


def memory_config(**fields: Any) -> ExpositionMemory:
    return ExpositionMemory.model_validate(
        {"source": "exposition", "url": URL, **fields}, context=CTX
    )


def assert_sane(sample: Sample) -> None:
    """UNKNOWN with a reason, or a finite value within the signal's bounds."""
    if sample.value is None:
        assert sample.reason.strip(), sample
        return
    low, high = sample.signal.bounds
    assert math.isfinite(sample.value), sample
    assert low <= sample.value <= high, sample
    if sample.signal is Signal.MEMORY:
        assert sample.value <= MAX_MEMORY_RATIO, sample


def ok_line(value: float) -> str:
    return f'http_requests_total{{code="200"}} {value:g}'


def err_line(value: float) -> str:
    return f'http_requests_total{{code="500"}} {value:g}'


# Garbage that is not a line break or a comment: random text that closes the series and
# writes a smaller, plausible count ("} 0\n#...") is a wrong number no reader can tell from a
# right one, so the property below cannot hold for it. Everything else must be caught.
NOISE = st.characters(blacklist_characters="\n\r#", blacklist_categories=["Cs"])


@st.composite
def garbled(draw: st.DrawFn, value: float) -> list[str]:
    """The 2xx line made into garbage: the lines that replace it (maybe none, maybe two)."""
    line = ok_line(value)
    kind = draw(
        st.sampled_from(
            ["value", "text", "duplicate", "missing", "mutate", "insert", "label", "spelling"]
        )
    )
    if kind == "value":
        return [f'http_requests_total{{code="200"}} {draw(st.sampled_from(BAD_VALUES))}']
    if kind == "text":
        return [f'http_requests_total{{code="200"}} x{draw(st.text(NOISE, max_size=12))}']
    if kind == "duplicate":
        other = draw(st.floats(min_value=0, max_value=1e6, allow_nan=False))
        twin = f'http_requests_total{{code="200"}} {other:g}'
        spelled = f'http_requests{{code="200"}} {other:g}'
        return [line, draw(st.sampled_from([line, twin, spelled]))]
    if kind == "missing":
        return []
    if kind == "mutate":  # one character of the name or labels replaced
        at = draw(st.integers(0, line.index("}")))
        return [line[:at] + draw(NOISE) + line[at + 1 :]]
    if kind == "insert":  # into the name or the labels
        at = draw(st.integers(0, line.index("}")))
        return [line[:at] + draw(st.text(NOISE, min_size=1, max_size=8)) + line[at:]]
    if kind == "label":
        code = draw(st.text(alphabet="0123456789x5", min_size=1, max_size=4))
        return [f'http_requests_total{{code="{code}"}} {value:g}']
    return [f'http-requests_total{{code="200"}} {value:g}']  # a spelling the parser lets by


@st.composite
def scrapes(draw: st.DrawFn) -> tuple[list[tuple[float, float]], list[str], list[str]]:
    """Monotonic clean counters, and two expositions of them: clean, and with 2xx garbage.

    The first scrape is clean: an exposition whose 2xx series was never readable is one of
    an app that has answered only errors, and 5xx / 5xx is then the truth it tells.
    """
    n = draw(st.integers(2, 5))
    ok, err = draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000))
    counts = []
    for _ in range(n):
        counts.append((float(ok), float(err)))
        ok += draw(st.integers(0, 1000))
        err += draw(st.integers(0, 1000))
    clean, dirty = [], []
    for i, (c2, c5) in enumerate(counts):
        clean.append(HEADER + f"{ok_line(c2)}\n{err_line(c5)}\n" + OTHER)
        two = draw(garbled(c2)) if i > 0 and draw(st.booleans()) else [ok_line(c2)]
        body = [*two, err_line(c5)]
        dirty.append(HEADER + "".join(f"{line}\n" for line in draw(st.permutations(body))) + OTHER)
    return counts, clean, dirty


def run_rate(bodies: Sequence[str]) -> list[Sample]:
    reader = ErrorRateReader(rate_config())
    samples = []
    for i, body in enumerate(bodies):
        found = _parse(body, reader.names)
        samples.append(reader.read(1000.0 + 15 * i, URL, found, 15.0 * i))
    return samples


def step_rates(counts: Sequence[tuple[float, float]]) -> list[float]:
    """The clean error rate of each step (0 for a step without requests)."""
    rates = [0.0]
    for (a2, a5), (b2, b5) in itertools.pairwise(counts):
        total = (b2 - a2) + (b5 - a5)
        rates.append((b5 - a5) / total if total else 0.0)
    return rates


@FAST
@given(scrapes())
def test_garbage_in_the_2xx_series_never_raises_the_error_rate(
    case: tuple[list[tuple[float, float]], list[str], list[str]],
) -> None:
    counts, clean, dirty = case
    for sample in run_rate(clean):
        assert_sane(sample)
    rates = step_rates(counts)
    for i, sample in enumerate(run_rate(dirty)):
        assert_sane(sample)
        if sample.value is not None:
            # A rate over any span of clean steps is at most the highest of their rates.
            assert sample.value <= max(rates[: i + 1]) + 1e-9, (sample, rates)


@FAST
@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda code, value: f'http_requests_total{{code="{code}"}} {value}',
                st.sampled_from(["200", "404", "500", "503", "5xx", ""]),
                st.one_of(
                    st.sampled_from(BAD_VALUES),
                    st.integers(-10, 10**6).map(str),
                    st.floats().map(repr),
                ),
            ),
            st.sampled_from([HEADER.strip(), OTHER.strip(), "# comment", ""]),
            st.text(max_size=30),
        ),
        max_size=8,
    ),
    st.integers(1, 4),
)
def test_any_exposition_gives_a_sane_error_rate(lines: list[str], scrapes_n: int) -> None:
    reader = ErrorRateReader(rate_config())
    for i in range(scrapes_n):
        body = "\n".join(lines[i:] + lines[:i]) + "\n"
        assert_sane(reader.read(1000.0 + i, URL, _parse(body, reader.names), float(i)))


GAUGE_VALUES = st.one_of(
    st.sampled_from([*BAD_VALUES, "0", "1", "5e8", "1e19"]),
    st.floats().map(repr),
    st.integers(-(10**6), 10**12).map(str),
)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["process_resident_memory_bytes", "app_memory_limit_bytes"]),
            st.sampled_from(["", '{pod="a"}', '{pod="b"}']),
            GAUGE_VALUES,
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_any_exposition_gives_a_sane_memory_ratio(
    series: list[tuple[str, str, str]], fixed: bool
) -> None:
    body = "".join(f"{name}{labels} {value}\n" for name, labels, value in series)
    limit = {"limit": "1GiB"} if fixed else {"limit_metric": "app_memory_limit_bytes"}
    reader = MemoryReader(memory_config(**limit))
    assert_sane(reader.read(1000.0, URL, _parse(body, reader.names), 0.0))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('http_requests_total{code="200"} NaN\n', 'http_requests_total{code="200"} is NaN'),
        ('http_requests_total{code="200"} +Inf\n', 'http_requests_total{code="200"} is +Inf'),
        ('http_requests_total{code="200"} -Inf\n', 'http_requests_total{code="200"} is -Inf'),
        ('http_requests_total{code="200"} 1e400\n', 'http_requests_total{code="200"} is +Inf'),
        ('http_requests_total{code="200"} -3\n', 'http_requests_total{code="200"} is negative'),
        ('http_requests_total{code="200"} 1e300\n', 'http_requests_total{code="200"} is 1e+300'),
        (
            'http_requests_total{code="200"} 1\nhttp_requests_total{code="200"} 2\n',
            'duplicate series http_requests_total{code="200"}',
        ),
        (
            'http_requests_total{code="200"} 1\nhttp_requests{code="200"} 2\n',
            "duplicate series http_requests",
        ),
        (
            'http-requests_total{code="200"} 1\n',
            "cannot parse the exposition: invalid metric name 'http-requests_total'",
        ),
        ("http_requests_total{code=200} 1\n", "cannot parse the exposition: "),
    ],
)
def test_each_kind_of_garbage_names_the_series_and_the_problem(body: str, reason: str) -> None:
    reader = ErrorRateReader(rate_config())
    sample = reader.read(1.0, URL, _parse(err_line(5) + "\n" + body, reader.names), 0.0)
    assert sample.value is None
    assert sample.reason.startswith(reason)


@pytest.mark.parametrize(
    ("body", "fields", "reason"),
    [
        ("process_resident_memory_bytes 1e300\n", {"limit": "1GiB"}, "is 1e+300, past any"),
        ("process_resident_memory_bytes NaN\n", {"limit": "1GiB"}, "is NaN"),
        ("process_resident_memory_bytes -1\n", {"limit": "1GiB"}, "is negative (-1)"),
        ("process_resident_memory_bytes 1e15\n", {"limit": 1000}, "memory would be 1e+12"),
        (
            "process_resident_memory_bytes 5\napp_memory_limit_bytes NaN\n",
            {"limit_metric": "app_memory_limit_bytes"},
            "app_memory_limit_bytes is NaN",
        ),
        (
            "process_resident_memory_bytes 5\napp_memory_limit_bytes +Inf\n",
            {"limit_metric": "app_memory_limit_bytes"},
            "app_memory_limit_bytes is +Inf",
        ),
        (
            "process_resident_memory_bytes 5\napp_memory_limit_bytes 0\n",
            {"limit_metric": "app_memory_limit_bytes"},
            "memory limit app_memory_limit_bytes is 0",
        ),
        (
            "process_resident_memory_bytes 5\nprocess_resident_memory_bytes 6\n",
            {"limit": "1GiB"},
            "duplicate series process_resident_memory_bytes",
        ),
    ],
)
def test_memory_garbage_is_unknown(body: str, fields: dict[str, Any], reason: str) -> None:
    reader = MemoryReader(memory_config(**fields))
    sample = reader.read(1.0, URL, _parse(body, reader.names), 0.0)
    assert sample.value is None
    assert reason in sample.reason


def test_a_counter_reset_keeps_what_exists() -> None:
    samples = run_rate(
        [
            f"{ok_line(900)}\n{err_line(100)}\n",
            f"{ok_line(9)}\n{err_line(1)}\n",  # a restart
            f"{ok_line(99)}\n{err_line(11)}\n",
        ]
    )
    assert samples[1].reason == 'counter reset: http_requests_total{code="200"} went down'
    assert samples[2].value == pytest.approx(0.1)


def test_garbage_keeps_the_baseline() -> None:
    samples = run_rate(
        [
            f"{ok_line(900)}\n{err_line(100)}\n",
            f'{err_line(150)}\nhttp_requests_total{{code="200"}} NaN\n',
            f"{ok_line(1800)}\n{err_line(200)}\n",
        ]
    )
    assert samples[1].reason == 'http_requests_total{code="200"} is NaN'
    assert samples[2].value == pytest.approx(0.1)
    assert samples[2].detail["span_s"] == 30.0


def test_too_many_series_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exposition, "MAX_SERIES", 50)
    body = "".join(f'filler{{i="{i}"}} {i}\n' for i in range(51)) + ok_line(1) + "\n"
    assert _parse(body, frozenset({"http_requests_total"})) == (
        "exposition has more than 50 series"
    )


# -- through a real HTTP server --------------------------------------------------------------


async def _scrape_all(bodies: Sequence[bytes]) -> list[list[Sample]]:
    """Each body served in turn by a real server on 127.0.0.1, scraped by the real source."""
    served = list(bodies)

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=served.pop(0), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    clock = FakeClock()
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        url = str(server.make_url("/metrics"))
        source = ExpositionSource(
            session,
            clock,
            error_rate=ExpositionErrorRate.model_validate(
                {"source": "exposition", "url": url, "min_requests": 1}, context=CTX
            ),
            memory=ExpositionMemory.model_validate(
                {"source": "exposition", "url": url, "limit": "1GiB"}, context=CTX
            ),
        )
        results = []
        for _ in bodies:
            await clock.advance(15)
            results.append(await source.collect(clock.time()))
        return results


@settings(max_examples=12, deadline=None, derandomize=True)
@given(scrapes(), st.lists(st.binary(max_size=40), min_size=1, max_size=3))
async def test_garbage_through_a_real_server(
    case: tuple[list[tuple[float, float]], list[str], list[str]], noise: list[bytes]
) -> None:
    counts, _, dirty = case
    memory_lines = b"process_resident_memory_bytes 268435456\n"
    bodies = [body.encode() + memory_lines for body in dirty]
    bodies += [noise_body + memory_lines for noise_body in noise]  # random bytes too
    rates = step_rates(counts)
    for i, samples in enumerate(await _scrape_all(bodies)):
        for sample in samples:
            assert_sane(sample)
        rate = samples[0]
        if rate.value is not None and i < len(dirty):
            assert rate.value <= max(rates[: i + 1]) + 1e-9


async def test_a_body_that_is_not_utf8_is_unknown_through_a_real_server() -> None:
    (samples,) = await _scrape_all([b"process_resident_memory_bytes \xff\xfe\n"])
    for sample in samples:
        assert sample.value is None
        assert sample.reason.startswith("cannot parse the exposition: 'utf-8' codec")
